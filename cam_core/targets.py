"""What the CAM explains: a class's logit summed over a region of the image.

Three regions, as a pathologist asks the question:

* ``predicted`` – where the model predicts the class ("why did you call these nuclei
  epithelial?"), grad-cam's ``SemanticSegmentationTarget`` with the predicted mask;
* ``class`` – every pixel ("what drives the epithelial score anywhere?");
* ``mask`` – a region the user gives (a drawn rectangle or a binary mask file).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from .errors import EmptyTargetError, InputError, NothingPredictedError, unknown

# Target kinds and the words the app, the CLI and every message use for them. Defined here only.
TARGET_KINDS: dict[str, str] = {
    "predicted": "predicted region",
    "class": "whole class",
    "mask": "rectangle / mask",
}


@dataclass(frozen=True, eq=False)
class TargetSpec:
    """A class and a region kind; ``mask`` (H×W bool, image size) only for kind ``mask``.

    ``class_index`` None means "the most predicted non-background class", decided from the
    same forward pass that the CAM uses (no extra pass).
    """

    kind: str
    class_index: int | None
    mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.kind not in TARGET_KINDS:
            raise unknown("target", self.kind, list(TARGET_KINDS))
        if self.kind == "mask" and self.mask is None:
            raise InputError("target 'mask' needs a mask: draw a rectangle or give mask:PATH / rect:x0,y0,x1,y1")

    def key(self) -> str:
        """A stable cache key (the mask is hashed, not compared)."""
        digest = (
            hashlib.sha256(np.ascontiguousarray(self.mask, dtype=bool).tobytes()).hexdigest()[:16]
            if self.mask is not None
            else "-"
        )
        return f"{self.kind}:{self.class_index}:{digest}"

    def describe(self, classes: list[str]) -> str:
        return describe(self.kind, classes[self.class_index] if self.class_index is not None else "auto")

    def box(self) -> list[int] | None:
        """The region's bounding box [x0, y0, x1, y1) in image pixels (kind ``mask`` only)."""
        if self.mask is None or not np.any(self.mask):
            return None
        ys, xs = np.nonzero(self.mask)
        return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def describe(kind: str, class_name: str) -> str:
    """The target in words, for captions and result files."""
    return {
        "predicted": f"'{class_name}' logit over pixels predicted '{class_name}'",
        "class": f"'{class_name}' logit over the whole image",
        "mask": f"'{class_name}' logit over the user region",
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
    cls = auto_class(predicted, len(classes))
    if cls is None:
        raise NothingPredictedError(
            f"the model predicts only '{classes[0]}' in this image, so there is no predicted class to explain; "
            f"choose a class with target '{TARGET_KINDS['class']}' to see what drives its score anyway"
        )
    return TargetSpec(spec.kind, cls, spec.mask)


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
