#!/usr/bin/env bash
# Set up (first time) and start the explorer at http://localhost:8501 on the built-in model.
# ui/serve.py loads the model and explains the first tile while the server starts.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh requirements.txt
exec .venv/bin/python -m ui.serve --server.port "${PORT:-8501}" "$@"
