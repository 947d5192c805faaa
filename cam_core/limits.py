"""Size and memory bounds, each defined once and imported wherever it applies."""

from __future__ import annotations

# Uploads: 64 megapixels (an 8000×8000 region) and 200 MB. The pixel count is checked from the
# header before any pixel is decoded, so a decompression bomb costs nothing.
MAX_PIXELS = 64_000_000
MAX_BYTES = 200 * 1024 * 1024
# Above this many pixels the CLI and the app explain in tiles (an untiled 2048² pass peaked at
# 6.3 GB RSS here); at or below it one pass captures every curated layer and keeps its graph.
TILE_ABOVE_PIXELS = 1024 * 1024
# Image-sized activation + gradient maps of a stitched (tiled) capture.
STITCHED_MAX_BYTES = 2 << 30


def is_large(shape: tuple[int, ...]) -> bool:
    """Whether an image of this (H, W, ...) shape is explained in tiles."""
    return int(shape[0]) * int(shape[1]) > TILE_ABOVE_PIXELS
