#!/usr/bin/env bash
# Create .venv (Python 3.11) and install the pinned requirements, with what they pull in held to
# constraints.txt (the tested versions: scripts/lock.py); idempotent.
# Usage: scripts/setup.sh [requirements file]   (default: requirements.txt)
set -euo pipefail
cd "$(dirname "$0")/.."
req="${1:-requirements.txt}"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null || python=python3
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
stamp=".venv/.installed-$(basename "$req")-$(cat requirements*.txt constraints.txt | sha256sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r "$req" -c constraints.txt
  if [ "$(basename "$req")" = requirements-dev.txt ]; then
    .venv/bin/python -m pip install --quiet --no-deps -r requirements-nodeps.txt -c constraints.txt  # why: see the file
  fi
  touch "$stamp"
fi
