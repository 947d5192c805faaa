"""What the CAM explains: a class's logit summed over a region of the image.

Regions, as a pathologist asks the question:

* ``predicted`` – where the model predicts the class ("why did you call these nuclei
  epithelial?"), grad-cam's ``SemanticSegmentationTarget`` with the predicted mask;
* ``class`` – every pixel ("what drives the epithelial score anywhere?");
* ``mask`` – a region the user gives (a drawn rectangle or a binary mask file);
* ``fn`` / ``fp`` – with a ground truth: the pixels the truth calls the class and the model
  does not ("why did it miss these?"), or the reverse;
* ``point`` – the predicted object under a point ("why *this* nucleus?").
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cam_core.data import truth as gt
from cam_core.errors import EmptyTargetError, InputError, NothingPredictedError, unknown

# Target kinds and the words the app, the CLI and every message use for them. Defined here only.
TARGET_KINDS: dict[str, str] = {
    "predicted": "predicted region",
    "class": "whole class",
    "mask": "rectangle / mask",
    "fn": "missed (false negatives)",
    "fp": "false positives",
    "point": "clicked object",
}
# The question each kind asks, in a figure's plain caption ("{cls}": the class's name).
QUESTIONS: dict[str, str] = {
    "predicted": "Where the model looked to call these nuclei {cls}",
    "class": "What drives the {cls} score anywhere in the tile",
    "mask": "Where the model looked to call the outlined region {cls}",
    "fn": "What the model saw where it missed {cls} nuclei",
    "fp": "Where the model looked when it wrongly called nuclei {cls}",
    "point": "Where the model looked to call this nucleus {cls}",
}
# Kinds that ask about a local region (outlined on every panel; best explained by a method whose
# map depends on the region, see ``MethodInfo.local``).
LOCAL_KINDS = ("mask", "point", "fn", "fp")
# Kinds whose region is a comparison with the ground truth.
TRUTH_KINDS: dict[str, int] = {"fn": gt.FN, "fp": gt.FP}
# Kinds that need more than their name, and how the CLI writes them; the others are their name.
WRITTEN_AS: dict[str, str] = {"mask": "mask:PATH | rect:x0,y0,x1,y1", "point": "point:X,Y"}
NAMED_KINDS = [k for k in TARGET_KINDS if k not in WRITTEN_AS]


@dataclass(frozen=True, eq=False)
class TargetSpec:
    """A class and a region kind, with what the kind needs.

    ``mask`` (H×W bool, image size) for kind ``mask``; ``truth`` for ``fn``/``fp``; ``point``
    (x, y in image pixels) for ``point``. ``class_index`` None means "the most predicted
    non-background class" (for ``point``: the class under the point), decided from the same
    forward pass that the CAM uses (no extra pass).
    """

    kind: str
    class_index: int | None
    mask: np.ndarray | None = None
    truth: gt.Truth | None = None
    point: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.kind not in TARGET_KINDS:
            raise unknown("target", self.kind, list(TARGET_KINDS))
        if self.kind == "mask" and self.mask is None:
            raise InputError("target 'mask' needs a mask: draw a rectangle or give mask:PATH / rect:x0,y0,x1,y1")
        if self.kind in TRUTH_KINDS and self.truth is None:
            raise InputError(
                f"target '{self.kind}' compares with the ground truth: give --gt MASK (CLI), or use a sample tile "
                "or add a mask to the upload (app)"
            )
        if self.kind == "point" and self.point is None:
            raise InputError("target 'point' needs a point: click the picture, or give point:X,Y")

    def with_class(self, class_index: int | None) -> TargetSpec:
        """The same region kind (and its mask, truth or point) for another class."""
        return dataclasses.replace(self, class_index=class_index)

    def key(self) -> str:
        """A stable cache key (the mask is hashed, not compared)."""
        digest = (
            hashlib.sha256(np.ascontiguousarray(self.mask, dtype=bool).tobytes()).hexdigest()[:16]
            if self.mask is not None
            else "-"
        )
        extra = (f":{self.truth.key()}" if self.truth is not None else "") + (
            f":{self.point[0]},{self.point[1]}" if self.point is not None else ""
        )
        return f"{self.kind}:{self.class_index}:{digest}{extra}"

    def describe(self, classes: list[str]) -> str:
        return describe(self.kind, classes[self.class_index] if self.class_index is not None else "auto")

    def written(self) -> str | None:
        """The target as :func:`parse_target` reads it (a record rebuilds it); None for a mask
        that is not a rectangle (its pixels are not in the record)."""
        if self.kind == "point" and self.point is not None:
            return f"point:{self.point[0]},{self.point[1]}"
        if self.kind == "mask" and self.mask is not None:
            box = self.box()
            if box is None or int(np.count_nonzero(self.mask)) != (box[2] - box[0]) * (box[3] - box[1]):
                return None
            return "rect:{},{},{},{}".format(*box)
        return self.kind

    def box(self) -> list[int] | None:
        """The region's bounding box [x0, y0, x1, y1) in image pixels (kind ``mask`` only)."""
        return None if self.mask is None else box_of(np.asarray(self.mask, dtype=bool))


def box_of(region: np.ndarray) -> list[int] | None:
    """The bounding box [x0, y0, x1, y1) of a boolean region, None when it is empty."""
    r = np.asarray(region, dtype=bool)
    rows, cols = np.asarray(r.any(axis=1)), np.asarray(r.any(axis=0))  # not nonzero(): 20× faster at 2000²
    if not rows.any():
        return None
    y0, x0 = int(rows.argmax()), int(cols.argmax())
    return [x0, y0, len(cols) - int(cols[::-1].argmax()), len(rows) - int(rows[::-1].argmax())]


def describe(kind: str, class_name: str) -> str:
    """The target in words, for captions and result files."""
    return {
        "predicted": f"'{class_name}' logit over pixels predicted '{class_name}'",
        "class": f"'{class_name}' logit over the whole image",
        "mask": f"'{class_name}' logit over the user region",
        "fn": f"'{class_name}' logit over pixels the truth calls '{class_name}' and the model does not (missed)",
        "fp": f"'{class_name}' logit over pixels predicted '{class_name}' that the truth does not call so",
        "point": f"'{class_name}' logit over the clicked predicted object",
    }[kind]


def auto_class(predicted: np.ndarray, num_classes: int) -> int | None:
    """The most predicted non-background class, or None when only background is predicted."""
    area = np.bincount(predicted.ravel(), minlength=num_classes)
    return int(np.argmax(area[1:]) + 1) if num_classes > 1 and area[1:].any() else None


def resolve_auto(spec: TargetSpec, predicted: np.ndarray, classes: list[str]) -> TargetSpec:
    """Fill in an automatic class: the most predicted non-background class.

    Raises:
        NothingPredictedError: the user chose no class and the model predicts only background:
            there is a mask to show but nothing for an automatic choice to explain.
    """
    if spec.class_index is not None:
        return spec
    if spec.kind == "point" and spec.point is not None:
        from cam_core.data.objects import component_at

        return spec.with_class(component_at(predicted, *spec.point)[0])
    cls = auto_class(predicted, len(classes))
    if cls is None:
        raise NothingPredictedError(
            f"the model predicts only '{classes[0]}' in this image, so there is no predicted class to explain; "
            f"choose a class with target '{TARGET_KINDS['class']}' to see what drives its score anyway"
        )
    return spec.with_class(cls)


def rectangle_mask(shape: tuple[int, int], x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """A boolean H×W mask that is True inside the rectangle (corners in either order, clipped)."""
    h, w = shape
    xa, xb = sorted((int(x0), int(x1)))
    ya, yb = sorted((int(y0), int(y1)))
    xa, xb, ya, yb = max(xa, 0), min(xb, w), max(ya, 0), min(yb, h)
    mask = np.zeros(shape, dtype=bool)
    if xb <= xa or yb <= ya:
        raise EmptyTargetError(
            f"rectangle ({x0},{y0})–({x1},{y1}) lies outside the {w}×{h} image; draw it on the tissue"
        )
    mask[ya:yb, xa:xb] = True
    return mask


class SemanticSegmentationTarget:
    """grad-cam's ``SemanticSegmentationTarget``: the class logit summed over a (weighted) region.

    Restated here so the fast path does not import grad-cam; the equivalence tests score
    grad-cam's own target class against ours.
    """

    def __init__(self, category: int, mask: np.ndarray):
        self.category = category
        self.mask = torch.from_numpy(mask)

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:
        return (model_output[self.category, :, :] * self.mask.to(model_output.device)).sum()


class BinarySegmentationTarget:
    """Class logit of a 1-channel sigmoid model: +z for foreground, −z for background."""

    def __init__(self, class_index: int, mask: np.ndarray):
        self.sign = 1.0 if class_index == 1 else -1.0
        self.mask = torch.from_numpy(mask)

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:
        return (self.sign * model_output[0] * self.mask.to(model_output.device)).sum()


class SegmentationFinerTarget:
    """FinerCAM for segmentation: the class logit minus similar classes', per pixel, over the region.

    grad-cam's ``FinerWeightedTarget`` indexes the last axis (classifier logits); here the class
    axis is the first, so the same formula is applied per pixel and summed over the mask.
    """

    def __init__(self, class_index: int, comparisons: list[int], mask: np.ndarray, alpha: float = 1.0):
        self.category, self.comparisons, self.alpha = class_index, comparisons, alpha
        self.mask = torch.from_numpy(mask)

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:
        prob = torch.softmax(model_output, dim=0)
        main = model_output[self.category]
        num = sum(prob[j] * (main - self.alpha * model_output[j]) for j in self.comparisons)
        den = sum(prob[j] for j in self.comparisons)
        return (num / (den + 1e-9) * self.mask.to(model_output.device)).sum()


def region(spec: TargetSpec, predicted: np.ndarray, classes: list[str]) -> np.ndarray:
    """The float32 H×W region the target sums over (image size, before padding).

    Raises:
        EmptyTargetError: the class is predicted nowhere (kind ``predicted``) or the mask is empty.
    """
    if spec.class_index is None or not 0 <= spec.class_index < len(classes):
        raise unknown("class", spec.class_index, classes)
    name = classes[spec.class_index]
    if spec.kind == "predicted":
        reg = predicted == spec.class_index
        if not reg.any():
            present = [classes[c] for c in np.unique(predicted)]
            raise EmptyTargetError(
                f"class '{name}' is predicted nowhere in this image, so 'predicted region' has no pixels; "
                f"choose target '{TARGET_KINDS['class']}' or a class that is present: {', '.join(present)}"
            )
    elif spec.kind == "class":
        reg = np.ones(predicted.shape, dtype=bool)
    elif spec.kind in TRUTH_KINDS and spec.truth is not None:
        if spec.truth.labels.shape != predicted.shape:
            raise InputError(
                f"ground truth is {spec.truth.labels.shape[1]}×{spec.truth.labels.shape[0]} but the image is "
                f"{predicted.shape[1]}×{predicted.shape[0]}; give the mask of this image"
            )
        reg = gt.errors(predicted, spec.truth, spec.class_index, TRUTH_KINDS[spec.kind])
        if not reg.any():
            scope = gt.ANY_NUCLEUS if spec.truth.binary else f"'{name}'"
            raise EmptyTargetError(
                f"no {gt.OUTCOMES[TRUTH_KINDS[spec.kind]]} pixels for {scope} on this tile, so there is nothing to "
                f"explain with target '{TARGET_KINDS[spec.kind]}'; choose another class or target "
                f"'{TARGET_KINDS['predicted']}'"
            )
    elif spec.kind == "point" and spec.point is not None:
        from cam_core.data.objects import component_at

        cls, reg = component_at(predicted, *spec.point)
        if cls != spec.class_index:
            raise EmptyTargetError(
                f"point ({spec.point[0]},{spec.point[1]}) is on a '{classes[cls]}' object, not '{name}'; "
                "leave the class on auto to explain the object under the point"
            )
    else:
        mask = np.asarray(spec.mask, dtype=bool)
        if mask.shape != predicted.shape:
            raise InputError(
                f"target mask is {mask.shape[1]}×{mask.shape[0]} but the image is {predicted.shape[1]}×{predicted.shape[0]}; give a mask of the image's size"
            )
        if not mask.any():
            raise EmptyTargetError(
                "the target mask is empty; draw a rectangle or give a mask with some non-zero pixels"
            )
        reg = mask
    return reg.astype(np.float32)


Target = SemanticSegmentationTarget | BinarySegmentationTarget | SegmentationFinerTarget


def build(spec: TargetSpec, region_padded: np.ndarray, binary: bool, num_classes: int, finer: bool = False) -> Target:
    """The grad-cam target callable for one image (the class must be resolved already)."""
    if spec.class_index is None:
        raise InputError("the target's class is not resolved; call resolve_auto first")
    if binary:
        return BinarySegmentationTarget(spec.class_index, region_padded)
    if finer:
        others = [c for c in range(num_classes) if c != spec.class_index]
        return SegmentationFinerTarget(spec.class_index, others, region_padded)
    return SemanticSegmentationTarget(spec.class_index, region_padded)


def class_index(name_or_index: str | int, classes: list[str]) -> int:
    """A class given by name (case-insensitive) or index."""
    if isinstance(name_or_index, int) or str(name_or_index).lstrip("-").isdigit():
        idx = int(name_or_index)
        if 0 <= idx < len(classes):
            return idx
    else:
        lowered = [c.lower() for c in classes]
        if str(name_or_index).lower() in lowered:
            return lowered.index(str(name_or_index).lower())
    raise unknown("class", name_or_index, [f"{i}={c}" for i, c in enumerate(classes)])


def parse_target(
    text: str, class_index: int | None, shape: tuple[int, int], truth: gt.Truth | None = None
) -> TargetSpec:
    """``predicted`` | ``class`` | ``fn`` | ``fp`` | ``mask:PATH`` | ``rect:x0,y0,x1,y1`` | ``point:X,Y``."""
    if text in TRUTH_KINDS:
        if truth is None:
            raise InputError(f"--target {text} compares with the ground truth; add --gt MASK (the tile's truth mask)")
        return TargetSpec(text, class_index, truth=truth)
    if text in NAMED_KINDS:
        return TargetSpec(text, class_index)
    if text.startswith("point:"):
        try:
            x, y = (int(v) for v in text[6:].split(","))
        except ValueError:
            raise InputError(f"bad point {text!r}; write point:X,Y in image pixels, e.g. point:120,64") from None
        from cam_core.data.objects import check_point

        check_point(x, y, shape)  # before the model runs
        return TargetSpec("point", class_index, point=(x, y))
    if text.startswith("rect:"):
        try:
            x0, y0, x1, y1 = (int(v) for v in text[5:].split(","))
        except ValueError:
            raise InputError(f"bad rectangle {text!r}; write rect:x0,y0,x1,y1 in pixels") from None
        return TargetSpec("mask", class_index, rectangle_mask(shape, x0, y0, x1, y1))
    if text.startswith("mask:"):
        from cam_core.data import masks

        path = Path(text[5:])
        if not path.is_file():
            raise InputError(f"target mask {path} not found; give mask:PATH of a PNG the size of the image")
        return TargetSpec("mask", class_index, masks.region(path.read_bytes(), shape, str(path)))
    forms = [f"{k} (with --gt)" if k in TRUTH_KINDS else k for k in NAMED_KINDS] + list(WRITTEN_AS.values())
    raise InputError(f"unknown target {text!r}; valid: {' | '.join(forms)}")
