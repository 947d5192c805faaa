"""The sample tiles shipped with the project (CoNSeP test tiles and the teaching tiles), by name.

The app's sample list, the figure rebuild (``python -m cam_core figure``) and the tests find a
sample, its ground truth and its resolution here, so a record naming a sample opens the same file.
"""

from __future__ import annotations

from pathlib import Path

from cam_core.data import consep
from cam_core.data.truth import Truth, load_truth
from cam_core.data.truth import for_model as truth_for_model
from cam_core.paths import SAMPLES_DIR, TEACHING_SAMPLES_DIR

MPP = consep.MPP  # the samples are CoNSeP tiles
# A teaching tile is a real sample with a marker planted on it, named by this prefix.
MARKER_PREFIX = "ink_dot_"


def names() -> list[str]:
    """The real sample tiles, then the teaching samples."""
    return sorted(p.stem for p in SAMPLES_DIR.glob("*.png")) + sorted(
        p.stem for p in TEACHING_SAMPLES_DIR.glob("*.png")
    )


def file(name: str) -> Path:
    """Where a sample tile's PNG is (a real sample or a teaching sample)."""
    path = SAMPLES_DIR / f"{name}.png"
    return path if path.is_file() else TEACHING_SAMPLES_DIR / f"{name}.png"


def truth_file(name: str) -> Path | None:
    """The ground-truth mask shipped with a sample (``masks/`` beside ``images/``), if any."""
    path = file(name).parent.parent / "masks" / f"{name}.png"
    return path if path.is_file() else None


def truth(name: str, classes: list[str], shape: tuple[int, int]) -> Truth | None:
    """The sample's shipped mask (None when it has none): CoNSeP class indices, scored as
    :func:`cam_core.data.truth.for_model` decides for this model's classes."""
    path = truth_file(name)
    if path is None:
        return None
    shipped = load_truth(path, consep.CLASSES, shape, name=path.name, kind="index")
    return truth_for_model(shipped, consep.CLASSES, classes, "the sample's CoNSeP")


def clean_twin(name: str) -> str | None:
    """The real sample a teaching tile was made from (the same tissue without its marker)."""
    if name.startswith(MARKER_PREFIX) and (SAMPLES_DIR / f"{name[len(MARKER_PREFIX) :]}.png").is_file():
        return name[len(MARKER_PREFIX) :]
    return None
