"""Localisation against the truth: does the map's mass lie on the objects the pathologist marked?

Where a truth mask exists (the sample tiles, an upload with a mask) a map can be scored without
any model pass. Three Quantus metrics (Arras et al. 2022 for relevance mass and rank accuracy;
Zhang et al. 2018 for the pointing game), restated for a segmentation target of one class:

* **relevance mass**: the share of the map's (non-negative) mass on the truth's pixels of the
  class — and, split by the comparison with the prediction, on its true positive, missed (FN) and
  wrongly called (FP) pixels, so "the map looks at what the model got wrong" is a number;
* **relevance rank accuracy**: of the K highest pixels of the map (K = the truth's pixel count),
  the share inside the truth (a pixel with no mass is not ranked: after ReLU most of a map ties
  at 0, and their order would be the array's, not the map's);
* **pointing game over objects**: Quantus scores one hit per image (is the map's maximum inside
  the truth?); a tile holds dozens of nuclei, so here every true object (a connected component of
  the class in the truth) scores a hit when the map's maximum over the object and a ring of
  :data:`POINTING_RING_PX` around it lies on the object. The hit rate is over objects.

Pixels the truth ignores are left out of every count.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from cam_core.data import truth as gt

# The ring around a true object inside which the map's maximum must fall on the object (px):
# about a nucleus radius at 40×, so a neighbour's peak does not count for this one.
POINTING_RING_PX = 8


@dataclass(frozen=True)
class Localisation:
    """One map against the truth of one class (shares are 0..1; None where undefined)."""

    class_index: int | None  # None: any nucleus (a binary truth)
    mass_on_truth: float | None  # relevance mass
    mass_on_tp: float | None
    mass_on_fn: float | None
    mass_on_fp: float | None
    rank_accuracy: float | None
    pointing_hits: int
    pointing_objects: int

    @property
    def pointing_rate(self) -> float | None:
        return self.pointing_hits / self.pointing_objects if self.pointing_objects else None

    def record(self) -> dict[str, float | int | None]:
        return {**asdict(self), "pointing_rate": self.pointing_rate}

    def describe(self) -> str:
        """One line (Markdown), as the app shows it."""

        def pct(x: float | None) -> str:
            return "—" if x is None else f"{x * 100:.0f} %"

        hits = (
            f"{self.pointing_hits} of {self.pointing_objects} true objects ({pct(self.pointing_rate)})"
            if self.pointing_objects
            else "no true object"
        )
        return (
            f"**Against the truth** — {pct(self.mass_on_truth)} of the map's mass lies on the true objects "
            f"(on correctly found pixels {pct(self.mass_on_tp)}, missed {pct(self.mass_on_fn)}, wrongly called "
            f"{pct(self.mass_on_fp)}); {pct(self.rank_accuracy)} of its top pixels are true; its peak lands on {hits}."
        )


def localisation(cam: np.ndarray, predicted: np.ndarray, truth: gt.Truth, class_index: int | None) -> Localisation:
    """Score a map (H×W, any sign: negative evidence counts as none) against the truth of a class."""
    from scipy import ndimage

    cls = None if truth.binary else class_index
    m = np.maximum(np.asarray(cam, dtype=np.float64), 0)
    scored = truth.scored if truth.scored is not None else np.ones(m.shape, bool)
    m = np.where(scored, m, 0.0)
    total = float(m.sum())
    codes = gt.compare(predicted, truth, cls)
    positive = truth.positive(cls)

    def share(region: np.ndarray) -> float | None:
        return float(m[region].sum()) / total if total > 0 else None

    k = int(positive.sum())
    rank = None
    if k and total > 0:
        values = m[scored]
        top = np.argsort(values, kind="stable")[::-1][:k]
        # a pixel with no mass is not ranked by the map: zeros never count, whatever their tie order
        rank = float((positive[scored][top] & (values[top] > 0)).sum()) / k
    labels, n = ndimage.label(positive, structure=np.ones((3, 3), bool))
    hits = 0
    for i, sl in enumerate(ndimage.find_objects(labels), start=1):
        y0, x0 = max(0, sl[0].start - POINTING_RING_PX), max(0, sl[1].start - POINTING_RING_PX)
        y1, x1 = sl[0].stop + POINTING_RING_PX, sl[1].stop + POINTING_RING_PX
        window, obj = m[y0:y1, x0:x1], labels[y0:y1, x0:x1] == i
        near = ndimage.binary_dilation(obj, iterations=POINTING_RING_PX)
        if window[near].max() > 0 and window[obj].max() >= window[near].max():
            hits += 1
    return Localisation(
        class_index=cls,
        mass_on_truth=share(positive),
        mass_on_tp=share(codes == gt.TP),
        mass_on_fn=share(codes == gt.FN),
        mass_on_fp=share(codes == gt.FP),
        rank_accuracy=rank,
        pointing_hits=hits,
        pointing_objects=int(n),
    )
