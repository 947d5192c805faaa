"""The Slide page's geometry: a level-0 view drawn as a picture, the region box on it, a click
back to level 0, and the part of a whole-slide map (thumbnail tissue, batch heat) under the view.

Kept out of the page so it is tested at every size (``tests/test_geometry_properties.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def region_at(center: tuple[int, int], side0: int, size_wh: tuple[int, int]) -> tuple[int, int]:
    """Top-left (x, y) of a ``side0``² level-0 region centred on ``center``, moved inside the slide."""
    w0, h0 = size_wh
    x = int(min(max(center[0] - side0 // 2, 0), max(w0 - side0, 0)))
    y = int(min(max(center[1] - side0 // 2, 0), max(h0 - side0, 0)))
    return x, y


@dataclass(frozen=True)
class Viewport:
    """A level-0 box (x, y, w, h) shown as a picture ``width`` pixels wide."""

    box: tuple[int, int, int, int]
    width: int

    @property
    def k(self) -> float:
        """Picture pixels per level-0 pixel."""
        return self.width / self.box[2]

    def to_picture(self, x: int, y: int, w: int, h: int, min_side: int = 3) -> tuple[int, int, int, int]:
        """A level-0 box as picture pixels (x0, y0, x1, y1), at least ``min_side`` wide to stay visible."""
        vx, vy = self.box[:2]
        x0, y0 = int((x - vx) * self.k), int((y - vy) * self.k)
        return x0, y0, max(int((x + w - vx) * self.k), x0 + min_side), max(int((y + h - vy) * self.k), y0 + min_side)

    def to_level0(self, px: float, py: float) -> tuple[int, int]:
        """A picture pixel (a click) as a level-0 point."""
        return int(self.box[0] + px / self.k), int(self.box[1] + py / self.k)

    def crop(self, whole: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
        """The part of a map covering the whole slide (any resolution) that lies under the view
        (at least one pixel)."""
        w0, h0 = size_wh
        vx, vy, vw, vh = self.box
        sy, sx = whole.shape[0] / h0, whole.shape[1] / w0
        y0, x0 = int(vy * sy), int(vx * sx)
        y1, x1 = int(np.ceil((vy + vh) * sy)), int(np.ceil((vx + vw) * sx))
        return whole[y0 : max(y1, y0 + 1), x0 : max(x1, x0 + 1)]
