"""The one tile grid: where tiles start and end, and which part of the image each one owns.

Used by the engine's tiled capture (a large upload, stitched into one capture) and by ``batch``
(a whole slide, each tile exported on its own). Both need the same two facts: tiles cover every
pixel with at least ``overlap`` pixels shared between neighbours, and the owned parts (each tile
up to the middle of every overlap it shares) partition the image, so every pixel is described by
exactly one tile.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from cam_core.errors import InputError


def spans(n: int, tile: int, overlap: int, align: int = 1) -> list[tuple[int, int]]:
    """(start, end) of the tiles along one axis of ``n`` pixels.

    Every start is a multiple of ``align`` (the encoder's stride, so a tile's layer map lands on
    whole cells of the image's layer map). The last tile starts at the aligned position at or
    before ``n - tile`` and runs to the edge: it may be up to ``align - 1`` pixels longer than
    ``tile`` (rounding its start *up* instead would shrink the overlap below ``overlap``; ending it
    at ``start + tile`` left a strip of up to ``align - 1`` pixels in no tile at all), and no tile
    is a sliver of the image's edge (a model sees at least ``tile`` pixels of context).
    """
    if tile <= overlap or overlap < 0:
        raise InputError(f"tile size {tile} must be larger than the overlap {overlap} (and the overlap ≥ 0)")
    if tile % align or overlap % align:
        raise InputError(f"tile {tile} and overlap {overlap} must be multiples of the encoder stride {align}")
    if n <= tile:
        return [(0, n)]
    starts = sorted({*range(0, n - tile, tile - overlap), (n - tile) // align * align})
    return [(s, s + tile) for s in starts[:-1]] + [(starts[-1], n)]


def owned(axis: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Each span's owned part, in image pixels: up to the middle of the overlap with each
    neighbour. The owned parts are disjoint and cover the axis."""
    cuts = [0, *((b0 + a1) // 2 for (_a0, a1), (b0, _b1) in itertools.pairwise(axis)), axis[-1][1]]
    return list(itertools.pairwise(cuts))


@dataclass(frozen=True)
class Cell:
    """One tile of a grid.

    Attributes:
        row, col: its place in the grid.
        x, y, w, h: the tile in image pixels.
        own: its owned cell (x0, y0, x1, y1) in the tile's own pixels.
        neighbours: left, top, right, bottom: another tile's owned cell lies beyond that side.
    """

    row: int
    col: int
    x: int
    y: int
    w: int
    h: int
    own: tuple[int, int, int, int]
    neighbours: tuple[bool, bool, bool, bool]

    @property
    def box(self) -> tuple[int, int, int, int]:
        """(y0, x0, y1, x1) in image pixels."""
        return self.y, self.x, self.y + self.h, self.x + self.w


def grid(w: int, h: int, tile: int, overlap: int, align: int = 1) -> list[Cell]:
    """The tiles over a ``w`` × ``h`` image, row by row (see :func:`spans` and :func:`owned`)."""
    cols, rows = spans(w, tile, overlap, align), spans(h, tile, overlap, align)
    own_x, own_y = owned(cols), owned(rows)
    return [
        Cell(
            r,
            c,
            x0,
            y0,
            x1 - x0,
            y1 - y0,
            (ox0 - x0, oy0 - y0, ox1 - x0, oy1 - y0),
            (c > 0, r > 0, c < len(cols) - 1, r < len(rows) - 1),
        )
        for r, ((y0, y1), (oy0, oy1)) in enumerate(zip(rows, own_y))
        for c, ((x0, x1), (ox0, ox1)) in enumerate(zip(cols, own_x))
    ]
