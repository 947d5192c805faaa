"""Ground truth for a tile: load a mask, compare it with the prediction, score it.

A pathologist's next question after "what did the model look at?" is "where is it wrong?". A
truth mask comes in one of two forms, both read here only:

* an **index mask** in the model's classes (pixel value = class index, as CoNSeP's and the
  sample masks are): per-class comparison and Dice;
* a **binary mask** (values {0, 255} or {0, 1}): nucleus vs background, compared with "any
  nucleus" predicted, whatever its class.

Pixel codes of the comparison map, shared by the renderer and the result files.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError

# Comparison codes and their words; colours live in cam_core.render (one place each).
TN, TP, FP, FN = 0, 1, 2, 3
OUTCOMES: dict[int, str] = {TP: "true positive", FP: "false positive", FN: "false negative"}
ANY_NUCLEUS = "any nucleus"
MAX_TRUTH_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, eq=False)
class Truth:
    """A ground-truth mask of one image.

    Attributes:
        labels: H×W uint8; class indices, or 0/1 when ``binary``.
        binary: the mask says nucleus vs background only (compared as "any nucleus").
        name: the file it came from (for result files).
        sha256: of the file's bytes, so a result names exactly which truth it was scored on.
    """

    labels: np.ndarray
    binary: bool
    name: str
    sha256: str

    def key(self) -> str:
        return f"{self.sha256[:16]}:{int(self.binary)}"

    def positive(self, class_index: int | None) -> np.ndarray:
        """Pixels the truth calls this class (any nucleus when binary or ``class_index`` is None)."""
        if self.binary or class_index is None:
            return self.labels > 0
        return self.labels == class_index

    def record(self) -> dict[str, object]:
        return {"file": self.name, "sha256": self.sha256, "kind": "binary" if self.binary else "index"}


def load_truth(
    source: str | Path | bytes, classes: list[str], shape: tuple[int, int], name: str | None = None
) -> Truth:
    """Read a truth mask for an image of ``shape`` (H, W) and a model with ``classes``.

    Raises:
        InputError: not an image, a colour image, another size, or values that are not classes;
            the message says what would work.
    """
    from PIL import Image, UnidentifiedImageError

    data = Path(source).read_bytes() if isinstance(source, (str, Path)) else bytes(source)
    label = name or (Path(source).name if isinstance(source, (str, Path)) else "mask")
    if len(data) > MAX_TRUTH_BYTES:
        raise InputError(f"ground truth '{label}' is {len(data) >> 20} MB; a mask PNG of one tile is far smaller")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(
            f"ground truth '{label}' is not a readable image; give a PNG whose pixel values are class indices "
            f"(0–{len(classes) - 1}) or a binary mask (0 and 255)"
        ) from exc
    if arr.ndim == 3:
        if arr.shape[2] == 4:
            arr = arr[..., :3]
        if not (arr == arr[..., :1]).all():
            raise InputError(
                f"ground truth '{label}' is a colour picture; give class indices (0–{len(classes) - 1}, "
                "a greyscale or palette PNG) or a binary mask (0 and 255), not a coloured mask"
            )
        arr = arr[..., 0]
    h, w = shape
    if arr.shape != (h, w):
        raise InputError(
            f"ground truth '{label}' is {arr.shape[1]}×{arr.shape[0]} but the image is {w}×{h}; "
            "give the mask of this tile, at the same size"
        )
    values = {int(v) for v in np.unique(arr)}
    sha = hashlib.sha256(data).hexdigest()
    if values <= {0, 255} or (values <= {0, 1} and len(classes) > 2):
        return Truth((arr > 0).astype(np.uint8), True, label, sha)
    bad = sorted(v for v in values if v >= len(classes) or v < 0)
    if bad:
        shown = ", ".join(str(v) for v in bad[:8])
        raise InputError(
            f"ground truth '{label}' has values {shown} that are not classes of this model "
            f"({', '.join(f'{i}={c}' for i, c in enumerate(classes))}); give class indices or a binary mask (0 and 255)"
        )
    return Truth(arr.astype(np.uint8), False, label, sha)


def predicted_positive(predicted: np.ndarray, truth: Truth, class_index: int | None) -> np.ndarray:
    """Pixels the prediction calls this class, on the truth's terms (any nucleus when binary)."""
    if truth.binary or class_index is None:
        return predicted > 0
    return predicted == class_index


def compare(predicted: np.ndarray, truth: Truth, class_index: int | None) -> np.ndarray:
    """H×W uint8 of TN/TP/FP/FN codes for one class (None or a binary truth: any nucleus)."""
    p = predicted_positive(predicted, truth, class_index)
    t = truth.positive(class_index)
    out = np.full(predicted.shape, TN, np.uint8)
    out[p & t] = TP
    out[p & ~t] = FP
    out[~p & t] = FN
    return out


def errors(predicted: np.ndarray, truth: Truth, class_index: int | None, outcome: int) -> np.ndarray:
    """Boolean H×W of one outcome (FN: "why did it miss these?", FP: "why did it call these?")."""
    return compare(predicted, truth, class_index) == outcome


def dice(predicted: np.ndarray, truth: Truth, classes: list[str]) -> dict[str, float | None]:
    """Dice per class of this tile, then any nucleus; None where neither truth nor prediction has it.

    A binary truth scores "any nucleus" only.
    """
    scores: dict[str, float | None] = {}
    targets: list[tuple[str, int | None]] = [] if truth.binary else [(c, i) for i, c in enumerate(classes) if i > 0]
    for label, idx in [*targets, (ANY_NUCLEUS, None)]:
        p = predicted_positive(predicted, truth, idx)
        t = truth.positive(idx)
        total = int(p.sum() + t.sum())
        scores[label] = None if total == 0 else round(2.0 * float((p & t).sum()) / total, 4)
    return scores


def counts(codes: np.ndarray) -> dict[str, int]:
    """Pixel count of each outcome in a comparison map."""
    return {word: int((codes == code).sum()) for code, word in OUTCOMES.items()}


def summary(predicted: np.ndarray, truth: Truth, classes: list[str], class_index: int | None) -> dict[str, object]:
    """What result files record about the truth: the file, Dice per class, and the explained
    class's TP/FP/FN pixel counts."""
    scope = ANY_NUCLEUS if truth.binary or class_index is None else classes[class_index]
    return {
        **truth.record(),
        "dice": dice(predicted, truth, classes),
        "compared_as": scope,
        "pixels": counts(compare(predicted, truth, class_index)),
    }
