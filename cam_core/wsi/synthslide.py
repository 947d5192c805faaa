"""Pyramidal test slides made of real H&E tiles (tifffile): for tests, demos and benchmarks.

A white slide of any size with a rectangle of tissue tiled from CoNSeP sample tiles, written as
a tiled pyramidal TIFF that OpenSlide reads: the reduced levels are in the main IFD chain
(``subfiletype=1``), not in SubIFDs (which OpenSlide does not read). ``kind``:

* ``tiff`` – a generic tiled TIFF with its resolution in the TIFF tags;
* ``svs`` – Aperio-style: the ImageDescription says ``Aperio ... |MPP = …|AppMag = …``;
* ``nores`` – a generic tiled TIFF with no resolution at all (the explorer must ask).

Nothing is held in memory but the tissue rectangle and one tile at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

KINDS = ("tiff", "svs", "nores")
TILE = 256
BACKGROUND = (242, 240, 243)  # the off-white of glass on a scanner


def tissue_mosaic(tiles: list[np.ndarray], width: int, height: int) -> np.ndarray:
    """A width × height H&E rectangle tiled from ``tiles`` (each 256² RGB), flipped for variety."""
    out = np.empty((height, width, 3), np.uint8)
    k = 0
    for y in range(0, height, TILE):
        for x in range(0, width, TILE):
            t = tiles[k % len(tiles)]
            if (k // len(tiles)) % 2:
                t = t[:, ::-1]
            h, w = min(TILE, height - y), min(TILE, width - x)
            out[y : y + h, x : x + w] = t[:h, :w]
            k += 1
    return out


def _levels(size: int, min_side: int = 512) -> list[int]:
    downs = [1]
    while size // (downs[-1] * 4) >= min_side:
        downs.append(downs[-1] * 4)
    return downs


def write_slide(
    path: str | Path,
    tiles: list[np.ndarray],
    size: int = 20_000,
    tissue_xywh: tuple[int, int, int, int] | None = None,
    mpp: float = 0.25,
    kind: str = "tiff",
    pyramid: bool = True,
) -> Path:
    """Write a size × size pyramidal slide with a tissue rectangle (level-0 x, y, w, h).

    Returns:
        The path written. The tissue rectangle defaults to 1536² near the centre. ``pyramid=False``
        writes level 0 only (what a scanner export without reduced levels looks like).
    """
    import cv2
    import tifffile

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    path = Path(path)
    tx, ty, tw, th = tissue_xywh or (size // 2 - 768, size // 2 - 768, 1536, 1536)
    tissue0 = tissue_mosaic(tiles, tw, th)
    downs = _levels(size) if pyramid else [1]
    description = (
        f"Aperio Image Library v12.0.0 \n{size}x{size} [0,0 {size}x{size}] ({TILE}x{TILE}) "
        f"|AppMag = {round(10 / mpp)}|MPP = {mpp}|Filename = {path.stem}"
        if kind == "svs"
        else "SegCAM Explorer synthetic slide"
    )
    with tifffile.TiffWriter(path, bigtiff=size * size * 3 > 2**31) as tif:
        for i, d in enumerate(downs):
            lw = lh = -(-size // d)
            tissue = (
                tissue0
                if d == 1
                else cv2.resize(tissue0, (max(1, tw // d), max(1, th // d)), interpolation=cv2.INTER_AREA)
            )
            box = (tx // d, ty // d, tissue.shape[1], tissue.shape[0])
            extra: dict[str, object] = {}
            if kind != "nores":
                extra = {"resolution": (1e4 / (mpp * d), 1e4 / (mpp * d)), "resolutionunit": "CENTIMETER"}
            tif.write(
                _tiles(lw, lh, tissue, box),
                shape=(lh, lw, 3),
                dtype=np.uint8,
                tile=(TILE, TILE),
                photometric="rgb",
                compression="zlib",
                subfiletype=0 if i == 0 else 1,
                description=description if i == 0 else None,
                metadata=None,
                **extra,  # type: ignore[arg-type]
            )
    return path


def _tiles(width: int, height: int, tissue: np.ndarray, box: tuple[int, int, int, int]) -> Iterator[np.ndarray]:
    """Row-major 256² tiles of a white level with the tissue pasted at ``box`` (x, y, w, h)."""
    bx, by, bw, bh = box
    for y in range(0, height, TILE):
        for x in range(0, width, TILE):
            t = np.empty((TILE, TILE, 3), np.uint8)
            t[:] = BACKGROUND
            x0, y0, x1, y1 = max(x, bx), max(y, by), min(x + TILE, bx + bw), min(y + TILE, by + bh)
            if x0 < x1 and y0 < y1:
                t[y0 - y : y1 - y, x0 - x : x1 - x] = tissue[y0 - by : y1 - by, x0 - bx : x1 - bx]
            yield t


def sample_tiles(folder: str | Path | None = None) -> list[np.ndarray]:
    """The CoNSeP sample tiles shipped in ``samples/images`` (the one without nuclei left out)."""
    from PIL import Image

    from cam_core.paths import SAMPLES_DIR

    root = Path(folder) if folder else SAMPLES_DIR
    return [np.asarray(Image.open(p).convert("RGB")) for p in sorted(root.glob("test_*.png")) if "7_005" not in p.name]
