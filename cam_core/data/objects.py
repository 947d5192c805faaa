"""Predicted objects: the connected components of each class, as a pathologist points at them.

"Why *this* nucleus?" needs the nucleus as a target: the component of its predicted class under
a clicked point, and a table of every component so it can be chosen from the keyboard too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cam_core.errors import EmptyTargetError

# 8-connectivity: a nucleus touching itself diagonally is one nucleus.
EIGHT = np.ones((3, 3), dtype=bool)
# Half side of the first window component_at labels (a nucleus is 10–40 px across at 0.25 µm/px).
_WINDOW = 64


@dataclass(frozen=True)
class PredictedObject:
    """One connected component of a predicted class."""

    id: int
    class_index: int
    area_px: int
    centroid_xy: tuple[int, int]  # a pixel inside the object (for point targets and links)
    box_xyxy: tuple[int, int, int, int]
    mean_probability: float
    cam_share: float | None  # share of the CAM's mass inside the object, when a CAM is given

    def area_um2(self, mpp: float | None) -> float | None:
        return area_um2(self.area_px, mpp)


def area_um2(pixels: int, mpp: float | None) -> float | None:
    """Area of ``pixels`` square pixels in µm² (None when the resolution is unknown)."""
    return None if mpp is None else pixels * mpp * mpp


def mass_share(cam: np.ndarray, region: np.ndarray) -> float:
    """Share of a non-negative map's mass inside a boolean region (0 for an all-zero map)."""
    total = float(cam.sum())
    return float(cam[region].sum()) / total if total > 0 else 0.0


def _label(binary: np.ndarray) -> tuple[np.ndarray, int]:
    from scipy import ndimage

    labels, n = ndimage.label(binary, structure=EIGHT)
    return labels, int(n)


def check_point(x: int, y: int, shape: tuple[int, ...]) -> None:
    """Raise EmptyTargetError naming the valid ranges when (x, y) is outside an image of ``shape``."""
    h, w = shape[:2]
    if not (0 <= x < w and 0 <= y < h):
        raise EmptyTargetError(f"point ({x},{y}) is outside the {w}×{h} image; give x in 0–{w - 1} and y in 0–{h - 1}")


def component_at(predicted: np.ndarray, x: int, y: int) -> tuple[int, np.ndarray]:
    """The class under (x, y) and the boolean mask of its connected component.

    Labels a window around the point that doubles until the component stays clear of the
    window's inner edge: a nucleus costs its own neighbourhood, not the whole image (a click on a
    2000² mask labelled all 4 MP twice per run). Equal to labelling the whole mask (tested).

    Raises:
        EmptyTargetError: the point is outside the image or on background; the message says
            where a nucleus is to be clicked.
    """
    check_point(x, y, predicted.shape)
    cls = int(predicted[y, x])
    if cls == 0:
        raise EmptyTargetError(
            f"point ({x},{y}) is predicted background, not a nucleus; click (or give) a point on a coloured object"
        )
    h, w = predicted.shape[:2]
    half = _WINDOW
    while True:
        y0, y1, x0, x1 = max(0, y - half), min(h, y + half + 1), max(0, x - half), min(w, x + half + 1)
        labels, _ = _label(predicted[y0:y1, x0:x1] == cls)
        part = labels == labels[y - y0, x - x0]
        # An edge of the window that is not the image's edge: the component may go on beyond it.
        open_edges = [(y0 > 0, part[0]), (y1 < h, part[-1]), (x0 > 0, part[:, 0]), (x1 < w, part[:, -1])]
        if not any(inside and edge.any() for inside, edge in open_edges):
            whole = np.zeros(predicted.shape[:2], dtype=bool)
            whole[y0:y1, x0:x1] = part
            return cls, whole
        half *= 2


def find_objects(
    predicted: np.ndarray,
    probs: np.ndarray | None = None,
    cam: np.ndarray | None = None,
    min_area: int = 1,
) -> list[PredictedObject]:
    """Every predicted object (class > 0), largest first.

    Args:
        probs: C×H×W class probabilities, for each object's mean probability of its class.
        cam: H×W non-negative CAM, for each object's share of its mass.
    """
    from scipy import ndimage

    out: list[PredictedObject] = []
    cam_total = float(cam.sum()) if cam is not None else 0.0
    for cls in (int(c) for c in np.unique(predicted) if c > 0):
        labels, n = _label(predicted == cls)
        if n == 0:
            continue
        index = np.arange(1, n + 1)
        areas = ndimage.sum_labels(np.ones_like(labels), labels, index)
        slices = ndimage.find_objects(labels)
        mean_p = ndimage.mean(probs[cls], labels, index) if probs is not None else np.full(n, np.nan)
        cam_sum = ndimage.sum_labels(cam, labels, index) if cam is not None else None
        for i in range(n):
            if areas[i] < min_area:
                continue
            sl = slices[i]
            ys, xs = np.nonzero(labels[sl] == i + 1)
            # The member pixel nearest the centroid: a centroid can fall outside a curved nucleus.
            cy, cx = ys.mean(), xs.mean()
            k = int(np.argmin((ys - cy) ** 2 + (xs - cx) ** 2))
            out.append(
                PredictedObject(
                    id=0,
                    class_index=cls,
                    area_px=int(areas[i]),
                    centroid_xy=(int(xs[k] + sl[1].start), int(ys[k] + sl[0].start)),
                    box_xyxy=(sl[1].start, sl[0].start, sl[1].stop, sl[0].stop),
                    mean_probability=float(mean_p[i]),
                    cam_share=None if cam_sum is None or cam_total <= 0 else float(cam_sum[i] / cam_total),
                )
            )
    out.sort(key=lambda o: (-o.area_px, o.centroid_xy[1], o.centroid_xy[0]))
    return [PredictedObject(**{**o.__dict__, "id": i + 1}) for i, o in enumerate(out)]
