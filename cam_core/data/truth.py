"""Ground truth for a tile: load a mask, compare it with the prediction, score it.

A pathologist's next question after "what did the model look at?" is "where is it wrong?". A
truth mask comes in one of two forms, both read here only:

* an **index mask** in the model's classes (pixel value = class index, as CoNSeP's and the
  sample masks are): per-class comparison and Dice;
* a **binary mask** (non-zero = nucleus): compared with "any nucleus" predicted, whatever its class.

Which one a file is, and every other pixel rule, is decided in :mod:`cam_core.masks` (the same
rule as ``evaluate``); pixels an index mask marks "ignore" (255) are left out of every count.

Pixel codes of the comparison map, shared by the renderer and the result files.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cam_core.data.metrics import overlap

# Comparison codes and their words; colours live in cam_core.render (one place each).
TN, TP, FP, FN = 0, 1, 2, 3
OUTCOMES: dict[int, str] = {TP: "true positive", FP: "false positive", FN: "false negative"}
ANY_NUCLEUS = "any nucleus"


@dataclass(frozen=True, eq=False)
class Truth:
    """A ground-truth mask of one image.

    Attributes:
        labels: H×W uint8; class indices, or 0/1 when ``binary``.
        binary: the mask says nucleus vs background only (compared as "any nucleus").
        name: the file it came from (for result files).
        sha256: of the file's bytes, so a result names exactly which truth it was scored on.
        scored: False where the mask says "ignore"; None when every pixel counts.
        note: how an ambiguous mask was read (shown beside the truth).
    """

    labels: np.ndarray
    binary: bool
    name: str
    sha256: str
    scored: np.ndarray | None = None
    note: str | None = None

    def key(self) -> str:
        return f"{self.sha256[:16]}:{int(self.binary)}"

    def positive(self, class_index: int | None) -> np.ndarray:
        """Pixels the truth calls this class (any nucleus when binary or ``class_index`` is None)."""
        out = self.labels > 0 if self.binary or class_index is None else self.labels == class_index
        return out if self.scored is None else out & self.scored

    def record(self) -> dict[str, object]:
        rec: dict[str, object] = {
            "file": self.name,
            "sha256": self.sha256,
            "kind": "binary" if self.binary else "index",
        }
        if self.scored is not None:
            rec["ignored_pixels"] = int((~self.scored).sum())
        if self.note:
            rec["note"] = self.note
        return rec


def load_truth(
    source: str | Path | bytes,
    classes: list[str],
    shape: tuple[int, int],
    name: str | None = None,
    kind: str = "auto",
) -> Truth:
    """Read a truth mask for an image of ``shape`` (H, W) and a model with ``classes``.

    Args:
        kind: one of :data:`cam_core.masks.MASK_KINDS` (``auto``: decided from the values, with
            a note when that was a choice).

    Raises:
        InputError: not an image, a colour image, another size, or values that are not classes;
            the message says what would work.
    """
    from cam_core.data import masks

    data = Path(source).read_bytes() if isinstance(source, (str, Path)) else bytes(source)
    label = name or (Path(source).name if isinstance(source, (str, Path)) else "mask")
    arr = masks.decode(data, label, "ground truth")
    masks.check_shape(arr, shape, label, "ground truth")
    read = masks.interpret(arr, classes, kind, label)
    return Truth(read.labels, read.binary, label, hashlib.sha256(data).hexdigest(), read.scored, read.note)


def predicted_positive(predicted: np.ndarray, truth: Truth, class_index: int | None) -> np.ndarray:
    """Pixels the prediction calls this class, on the truth's terms (any nucleus when binary;
    never a pixel the truth ignores)."""
    out = predicted > 0 if truth.binary or class_index is None else predicted == class_index
    return out if truth.scored is None else out & truth.scored


def compare(predicted: np.ndarray, truth: Truth, class_index: int | None) -> np.ndarray:
    """H×W uint8 of TN/TP/FP/FN codes for one class (None or a binary truth: any nucleus)."""
    p = predicted_positive(predicted, truth, class_index)
    t = truth.positive(class_index)
    out = np.full(predicted.shape, TN, np.uint8)
    out[p & t] = TP
    out[p & ~t] = FP
    out[~p & t] = FN
    return out


def for_model(truth: Truth, truth_classes: list[str], model_classes: list[str], whose: str = "the truth's") -> Truth:
    """A truth of ``truth_classes`` as the model at hand can be scored on it: per class only
    when the classes are the same; any other model (whatever the number of its classes: indices
    of other classes would mean other things) as any nucleus, with a note saying so."""
    if truth.binary or list(model_classes) == list(truth_classes):
        return truth
    return dataclasses.replace(
        truth,
        labels=(truth.labels > 0).astype(np.uint8),
        binary=True,
        note=f"{whose} classes are not this model's: compared as any nucleus",
    )


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
        o = overlap(predicted_positive(predicted, truth, idx), truth.positive(idx))
        scores[label] = None if o.empty else round(o.dice, 4)
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
