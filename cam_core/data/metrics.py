"""Overlap scores, defined once: Dice and IoU from pixel counts that pool over tiles and classes.

Every score in the project (the app's truth line, ``evaluate``, ``batch``'s export check, the
training log, the shortcut measurement) is an :class:`Overlap`: pooled sums of intersections
over sums of sizes, the usual pixel-level convention, and NaN where neither side has a pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Overlap:
    """Pixels in both masks, in the prediction and in the truth; ``+`` pools them."""

    both: int = 0
    predicted: int = 0
    truth: int = 0

    def __add__(self, other: Overlap) -> Overlap:
        return Overlap(self.both + other.both, self.predicted + other.predicted, self.truth + other.truth)

    @property
    def empty(self) -> bool:
        return self.predicted + self.truth == 0

    @property
    def dice(self) -> float:
        total = self.predicted + self.truth
        return 2.0 * self.both / total if total else float("nan")

    @property
    def iou(self) -> float:
        union = self.predicted + self.truth - self.both
        return self.both / union if union else float("nan")


def overlap(predicted: np.ndarray, truth: np.ndarray) -> Overlap:
    """The counts of two boolean masks of one shape."""
    p, t = np.asarray(predicted, bool), np.asarray(truth, bool)
    return Overlap(int((p & t).sum()), int(p.sum()), int(t.sum()))


def from_confusion(conf: np.ndarray, classes: list[int]) -> Overlap:
    """The counts of a set of classes from a confusion matrix (rows truth, columns prediction)."""
    idx = np.asarray(classes)
    return Overlap(int(conf[np.ix_(idx, idx)].sum()), int(conf[:, idx].sum()), int(conf[idx, :].sum()))
