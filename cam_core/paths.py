"""Where the project's own files are (the repository or the installed tree), defined once."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLES_DIR = REPO_ROOT / "samples" / "images"
# Tiles with a planted artefact for the teaching model (listed after the real samples).
TEACHING_SAMPLES_DIR = REPO_ROOT / "samples" / "teaching" / "images"
