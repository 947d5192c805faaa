#!/usr/bin/env bash
# Set up (first time) and run every check: ruff lint, ruff format check, and the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh requirements-dev.txt
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest "$@"
