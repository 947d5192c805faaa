#!/usr/bin/env bash
# Set up (first time) and run every check: ruff lint + format check, mypy on cam_core, hadolint,
# the test suite (unit, AppTest and real-browser tests; extra arguments go to pytest), then the
# image: built and tried in a container (scripts/test_docker.sh; docker, else podman).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1 && [ -z "${SEGCAM_CHROMIUM:-}" ]; then
  # The browser tests drive Debian's Chromium (Playwright cannot download browsers offline).
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi
scripts/setup.sh requirements-dev.txt
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy  # static types of cam_core ([tool.mypy] in pyproject.toml)
if [ -f Dockerfile ]; then .venv/bin/hadolint Dockerfile; fi
.venv/bin/python -m pytest "$@"
scripts/test_docker.sh -q
