"""Large images: tiled inference and CAMs with overlap, blending and one global normalisation.

A whole 4096² region does not fit one pass on a laptop (the backward alone holds gigabytes of
activations). Here the image is cut into overlapping tiles; each tile's probabilities and *raw*
CAMs (before ReLU and min-max) are blended with weights that fall linearly to zero across the
overlap, so no tile edge shows; ReLU and min-max normalisation then run once over the whole
map. Normalising each tile on its own would make every tile reach 1 and hide which region
matters most.

Two phases: forward-only passes build the global mask (so "predicted region" means the same
pixels everywhere), then one forward + backward per tile that touches the target region.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from . import engine
from . import targets as tg
from .errors import EmptyTargetError, InputError
from .methods import MethodInfo
from .models import LoadedModel

# Above this many pixels the CLI and the app switch to tiles.
TILE_ABOVE_PIXELS = 1024 * 1024  # an untiled 2048² pass peaked at 6.3 GB RSS here; tiled, 2.3 GB
DEFAULT_TILE = 512
DEFAULT_OVERLAP = 64


def tile_boxes(h: int, w: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """(y0, x0, y1, x1) boxes covering the image; neighbours share ``overlap`` pixels."""
    if tile <= overlap:
        raise InputError(f"tile size {tile} must be larger than the overlap {overlap}")

    def starts(n: int) -> list[int]:
        if n <= tile:
            return [0]
        step = tile - overlap
        s = list(range(0, n - tile, step))
        return [*s, n - tile]

    return [(y, x, min(y + tile, h), min(x + tile, w)) for y in starts(h) for x in starts(w)]


def blend_weights(th: int, tw: int, box: tuple[int, int, int, int], shape: tuple[int, int], overlap: int) -> np.ndarray:
    """Weights rising linearly over ``overlap`` pixels from each tile edge that is inside the image."""
    y0, x0, y1, x1 = box
    h, w = shape

    def ramp(n: int, lo_inside: bool, hi_inside: bool) -> np.ndarray:
        r = np.ones(n, np.float32)
        if overlap > 0:
            up = (np.arange(n, dtype=np.float32) + 0.5) / overlap
            if lo_inside:
                r = np.minimum(r, up)
            if hi_inside:
                r = np.minimum(r, up[::-1])
        return r

    wy = ramp(th, y0 > 0, y1 < h)
    wx = ramp(tw, x0 > 0, x1 < w)
    return np.outer(wy, wx)


def explain_tiled(
    loaded: LoadedModel,
    image: np.ndarray,
    target: tg.TargetSpec,
    layer: str,
    methods: list[MethodInfo],
    *,
    tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    eigen_smooth: bool = False,
    progress: Callable[[float, str], None] | None = None,
) -> tuple[engine.Prediction, list[engine.CamResult]]:
    """One-pass methods on a large image, tile by tile, normalised once over the whole map.

    Raises:
        InputError: a method needs passes of its own (run it on a smaller region).
        EmptyTargetError: the target region is empty in the whole image.
    """
    eigen = [m.name for m in methods if m.family == "eigen"]
    if eigen:
        raise InputError(
            f"{', '.join(eigen)} project each tile on its own principal component, whose sign and basis "
            "differ between tiles, so tiled maps would not join; use a gradient method on large images"
        )
    slow = [m.name for m in methods if not m.from_cache]
    if slow:
        raise InputError(
            f"{', '.join(slow)} cannot run tiled (one model pass per channel per tile); "
            f"crop a region of at most {int(TILE_ABOVE_PIXELS**0.5)}² or use a one-pass method"
        )
    t0 = time.perf_counter()
    h, w = image.shape[:2]
    boxes = tile_boxes(h, w, tile, overlap)
    n_steps = 2 * len(boxes)
    probs_acc: np.ndarray | None = None
    weight_acc = np.zeros((h, w), np.float32)
    for i, (y0, x0, y1, x1) in enumerate(boxes):
        p = engine.predict(loaded, np.ascontiguousarray(image[y0:y1, x0:x1])).probs
        wgt = blend_weights(y1 - y0, x1 - x0, (y0, x0, y1, x1), (h, w), overlap)
        if probs_acc is None:
            probs_acc = np.zeros((p.shape[0], h, w), np.float32)
        probs_acc[:, y0:y1, x0:x1] += p * wgt
        weight_acc[y0:y1, x0:x1] += wgt
        if progress:
            progress((i + 1) / n_steps, f"mask: tile {i + 1} of {len(boxes)}")
    probs = probs_acc / np.maximum(weight_acc, 1e-12)
    prediction = engine.Prediction(probs, engine.decide(probs, loaded.spec.decision_rule))
    target = tg.resolve_auto(target, prediction.mask, loaded.num_classes)
    region = tg.region(target, prediction.mask, loaded.spec.classes) > 0

    raw_acc = {m.name: np.zeros((h, w), np.float32) for m in methods}
    for i, (y0, x0, y1, x1) in enumerate(boxes):
        sub = region[y0:y1, x0:x1]
        wgt = blend_weights(y1 - y0, x1 - x0, (y0, x0, y1, x1), (h, w), overlap)
        if sub.any():  # a tile with no target pixel has zero gradients: nothing to add
            try:
                cap = engine.capture(
                    loaded,
                    np.ascontiguousarray(image[y0:y1, x0:x1]),
                    tg.TargetSpec("mask", target.class_index, sub),
                    [layer],
                )
            except EmptyTargetError:
                cap = None
            if cap is not None:
                for m in methods:
                    raw = engine.cam_from_capture(cap, m, layer, eigen_smooth).cam_raw
                    raw_acc[m.name][y0:y1, x0:x1] += raw * wgt
        if progress:
            progress((len(boxes) + i + 1) / n_steps, f"CAM: tile {i + 1} of {len(boxes)}")
    seconds = time.perf_counter() - t0
    results = []
    for m in methods:
        raw = raw_acc[m.name] / np.maximum(weight_acc, 1e-12)
        cam = np.maximum(raw, 0)
        lo, hi = float(cam.min()), float(cam.max())
        cam = (cam - lo) / (hi - lo + 1e-7)
        res = engine.CamResult(
            cam=cam.astype(np.float32),
            cam_raw=raw.astype(np.float32),
            method=m.name,
            layer=layer,
            target=target.kind,
            model=loaded.name,
            device=str(loaded.device),
            seconds=seconds,
            from_cache=True,
            class_index=target.class_index,
            eigen_smooth=eigen_smooth and m.eigen_smooth,
            notes=[f"tiled: {len(boxes)} tiles of {tile}² with {overlap} px overlap, normalised once over the image"],
        )
        results.append(res)
    return prediction, results
