#!/usr/bin/env bash
# Set up (first time) and start the explorer at http://localhost:8501 on the built-in model.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh requirements.txt
exec .venv/bin/python -m streamlit run app.py --server.port "${PORT:-8501}" "$@"
