"""Size and memory bounds, each defined once and imported wherever it applies."""

from __future__ import annotations

from cam_core import settings

# Uploads: 64 megapixels (an 8000×8000 region) and 200 MB. The pixel count is checked from the
# header before any pixel is decoded, so a decompression bomb costs nothing.
MAX_PIXELS = 64_000_000
MAX_BYTES = 200 * 1024 * 1024
# Above LARGE_SIDE² pixels the CLI and the app explain in tiles (an untiled 2048² pass peaked at
# 6.3 GB RSS here); at or below it one pass captures every curated layer and keeps its graph.
# The trust checks, which run the model dozens of times on the whole image, take the same bound.
LARGE_SIDE = 1024
TILE_ABOVE_PIXELS = LARGE_SIDE * LARGE_SIDE
# Microns per pixel believed anywhere (an image's tags, a slide's properties, a model's segcam.json,
# a value typed by a user): the range of microscope images, 100× (0.05) to a 0.5× overview (20).
# Many programs stamp 72 or 96 dpi (353 or 265 µm/px) on any picture; those are not believed.
MPP_RANGE = (0.05, 20.0)


def plausible_mpp(value: float | None) -> bool:
    return value is not None and MPP_RANGE[0] <= value <= MPP_RANGE[1]


def mpp_range_text() -> str:
    return f"{MPP_RANGE[0]:g}–{MPP_RANGE[1]:g}"


# A stitched (tiled) capture in one CLI job: image-sized activation + gradient maps, probabilities.
STITCHED_MAX_BYTES = 2 << 30
# A shared server (the app): captures of all sessions with the kept autograd graph are cached in
# SERVER_CAPTURE_BYTES; one request (one image × its layers) may use REQUEST_CAPTURE_BYTES, checked
# before any pass (cam_core.capture.check_fits). A request is thus always small enough to be cached
# (a slider move never re-runs the model), and two sessions' captures fit side by side.
# A lab with a larger server raises both with $SEGCAM_CAPTURE_CACHE_MB (cam_core.settings).
SERVER_CAPTURE_BYTES = settings.current().capture_cache_mb << 20
REQUEST_CAPTURE_BYTES = SERVER_CAPTURE_BYTES // 2


def is_large(shape: tuple[int, ...]) -> bool:
    """Whether an image of this (H, W, ...) shape is explained in tiles."""
    return int(shape[0]) * int(shape[1]) > TILE_ABOVE_PIXELS


# Uploaded slides: each session's in its own private folder, the newest SLIDE_UPLOADS_KEPT kept;
# folders of sessions idle for SLIDE_UPLOAD_MAX_AGE_S are deleted when another session starts one.
SLIDE_UPLOADS_KEPT = 8
SLIDE_UPLOAD_MAX_AGE_S = 6 * 3600
# …and all sessions' uploads together take at most this much disk (the oldest go first).
SLIDE_UPLOADS_MAX_BYTES = 4 << 30


# Slides: one OpenSlide read is at most SLIDE_READ_BLOCK_PIXELS (a 2048² block, 16 MB RGBA); a larger
# view is read block by block, each block shrunk as it arrives, so memory follows what is shown, not
# the level read. A view that would read more than SLIDE_SCAN_MAX_PIXELS of one level (a slide with
# no pyramid, seen whole) is refused with a message: it would take minutes for every viewer.
SLIDE_READ_BLOCK_PIXELS = 2048 * 2048
SLIDE_SCAN_MAX_PIXELS = 1 << 29  # 23170², about 15 s of decoding here

# Heavy jobs (methods with passes of their own, trust checks, tiled captures) a server runs at once;
# more wait in a first-come queue and see their place (cam_core.gate). Each is bounded in memory by
# REQUEST_CAPTURE_BYTES and its method's own steps, so the server's worst case is this many of them.
# A lab with a larger server raises it with $SEGCAM_HEAVY_JOBS (cam_core.settings).
HEAVY_JOBS_AT_ONCE = settings.current().heavy_jobs
