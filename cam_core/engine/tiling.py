"""Large images: a stitched capture of overlapping tiles, then any one-pass method on it.

A whole 4096² region does not fit one pass on a laptop (the backward alone holds gigabytes of
activations). The image is cut into overlapping tiles whose corners sit on the encoder's stride,
so every tile's layer map lands on whole cells of one image-sized layer map. Two phases:

1. a forward per tile (no gradients) gives probabilities and layer activations, blended with
   weights that fall linearly to zero across the overlap (no seams); the decision rule then
   makes one mask for the whole image, so "predicted region" means the same pixels everywhere;
2. the target's gradients. A local target (a clicked nucleus, a drawn rectangle) whose region
   and :data:`LOCAL_CONTEXT` pixels around it fit one window of at most ``LARGE_SIDE`` a side
   gets one forward + backward of that window, centred on it (:func:`local_window`): its
   gradients, and its activations in place of the stitched ones there, so the map in the window
   is grad-cam's own on the window. Centred context is closer to the untiled image's map than
   the grid tile that holds the object (``scripts/measure_click_window.py``: a nucleus's
   HiResCAM against the untiled image's) and costs one window, never the 2–4 tiles of an
   object on a seam. Any other target gets a forward + backward per tile that touches its
   region, whose score is the region weighted by the tile's share of each pixel: the shares sum
   to one, so the tiles' scores add up to the whole image's score, and their gradients are
   *summed* into the image-sized gradient map.

The result is a :class:`~cam_core.capture.Capture` like an untiled one: every one-pass method
(Grad-CAM's global channel weights, Eigen projections over the whole map) is computed on the
whole map at once and normalised once, exactly as on a small image.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Mapping

import numpy as np
import torch

from cam_core import engine, limits
from cam_core.cost import PRIORS, Work, units
from cam_core.engine import targets as tg
from cam_core.engine.capturing import (
    Capture,
    Prediction,
    Progress,
    WindowedMaps,
    capture,
    capture_outputs,
    check_finite,
    check_fits,
    forward,
    prepare,
    target_region,
)
from cam_core.engine.capturing import probabilities as to_probabilities
from cam_core.engine.graph import passes as passes_of
from cam_core.engine.methods import MethodInfo
from cam_core.errors import InputError
from cam_core.grid import grid
from cam_core.limits import STITCHED_MAX_BYTES, TILE_ABOVE_PIXELS
from cam_core.model.layers import resolve_layers
from cam_core.model.models import LoadedModel
from cam_core.model.rules import DecisionRule
from cam_core.model.state import preserved_state

__all__ = [
    "DEFAULT_OVERLAP",
    "DEFAULT_TILE",
    "LOCAL_CONTEXT",
    "TILE_ABOVE_PIXELS",
    "capture_tiled",
    "explain_tiled",
    "local_window",
    "recapture_tiled",
]
DEFAULT_TILE = 512
log = logging.getLogger("cam_core.engine")
DEFAULT_OVERLAP = 64
# Pixels of tissue a local target's window holds on every side of its region (where the image
# has them). scripts/measure_click_window.py, 30 nuclei of a 2000² upload against the untiled
# image's map (2026-12-02): 176 px (a ~416² window) is L1 0.021 median / 0.041 p90 (r ≥ 0.994)
# against the grid tile's 0.056 / 0.333 (r ≥ 0.867), in 0.30 s instead of 0.48 s.
LOCAL_CONTEXT = 176


def blend_weights(th: int, tw: int, box: tuple[int, int, int, int], shape: tuple[int, int], overlap: int) -> np.ndarray:
    """Weights rising linearly over ``overlap`` pixels from each tile edge that is inside the image
    (positive everywhere in the tile; :func:`partition` makes them sum to one over the tiles)."""
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

    return np.outer(ramp(th, y0 > 0, y1 < h), ramp(tw, x0 > 0, x1 < w))


def partition(boxes: list[tuple[int, int, int, int]], shape: tuple[int, int], overlap: int) -> list[np.ndarray]:
    """Each tile's blend weights divided by their sum over all tiles: a partition of unity.

    Probabilities blended with them need no later division, and a target pixel's shares of the
    score add up to exactly one over the tiles that see it.

    Raises:
        InputError: some pixel is in no tile (a bug in the grid, never silently a 0 probability).
    """
    raw = [blend_weights(y1 - y0, x1 - x0, (y0, x0, y1, x1), shape, overlap) for y0, x0, y1, x1 in boxes]
    total = np.zeros(shape, np.float32)
    for (y0, x0, y1, x1), wgt in zip(boxes, raw):
        total[y0:y1, x0:x1] += wgt
    if not (total > 0).all():
        ys, xs = np.nonzero(total <= 0)
        raise InputError(
            f"tile grid leaves pixel ({int(xs[0])}, {int(ys[0])}) of a {shape[1]}×{shape[0]} image uncovered"
        )
    return [wgt / total[y0:y1, x0:x1] for (y0, x0, y1, x1), wgt in zip(boxes, raw)]


@functools.lru_cache(maxsize=2)  # the image being clicked on: its weights are computed once
def _partition_of(
    boxes: tuple[tuple[int, int, int, int], ...], shape: tuple[int, int], overlap: int
) -> list[np.ndarray]:
    return partition(list(boxes), shape, overlap)


def local_window(region: np.ndarray, multiple: int, context: int = LOCAL_CONTEXT) -> tuple[int, int, int, int] | None:
    """The one window (y0, x0, y1, x1) that explains a local target: its region's bounding box
    with ``context`` pixels on every side where the image has them, centred, its start on the
    encoder's stride (its layer map lands on whole cells of the image's), its sides multiples of
    the stride unless it reaches the image's edge. None: no region, or the window would be larger
    than an image explained untiled (``LARGE_SIDE`` a side): the target is explained in tiles."""
    rows, cols = np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))
    if rows.size == 0:
        return None
    spans = []
    for lo, hi, n in (
        (int(rows[0]), int(rows[-1]) + 1, region.shape[0]),
        (int(cols[0]), int(cols[-1]) + 1, region.shape[1]),
    ):
        side = -(-(hi - lo + 2 * context) // multiple) * multiple
        if side >= n:
            spans.append((0, n))
            continue
        start = max(0, min((lo + hi - side) // 2, n - side)) // multiple * multiple  # centred, then on the stride
        end = start + side
        if end < min(n, hi + context):  # rounding the start down cost context on the far side
            end += multiple
        spans.append((start, n if end + multiple > n else end))  # no sliver of the edge left out
    (y0, y1), (x0, x1) = spans
    if max(y1 - y0, x1 - x0) > limits.LARGE_SIDE:
        return None
    return y0, x0, y1, x1


def _pool(weights: np.ndarray, shape: tuple[int, int], padded: tuple[int, int]) -> np.ndarray:
    """Pixel weights (tile size) → layer cells: edge-pad to the padded tile, block-average."""
    ph, pw = padded
    lh, lw = shape
    wp = np.pad(weights, ((0, ph - weights.shape[0]), (0, pw - weights.shape[1])), mode="edge")
    return wp.reshape(lh, ph // lh, lw, pw // lw).mean(axis=(1, 3))


def capture_tiled(
    loaded: LoadedModel,
    image: np.ndarray,
    target: tg.TargetSpec,
    layers: list[str] | str | None = None,
    *,
    rule: DecisionRule | None = None,
    tile: int | None = None,
    overlap: int | None = None,
    progress: Progress | None = None,
) -> Capture:
    """A capture of a large image, stitched from overlapping tiles (see the module docstring).

    Raises:
        InputError: the image-sized layer maps would not fit :data:`STITCHED_MAX_BYTES`.
        EmptyTargetError: the target region is empty in the whole image.
    """
    names = resolve_layers(loaded, layers)
    tile, overlap = tile or DEFAULT_TILE, DEFAULT_OVERLAP if overlap is None else overlap
    t0 = time.perf_counter()
    h, w = image.shape[:2]
    m = loaded.multiple
    check_fits(loaded, (h, w), names, STITCHED_MAX_BYTES, "a stitched capture")
    ph, pw = -(-h // m) * m, -(-w // m) * m
    boxes = [cell.box for cell in grid(w, h, tile, overlap, align=m)]
    tile_weights = _partition_of(tuple(boxes), (h, w), overlap)  # kept for a click's recapture
    steps = _Steps(progress, 2 * len(boxes))
    probs, acts, t_forward = _forward_tiles(loaded, image, names, boxes, tile_weights, (ph, pw), steps)
    rule = rule or loaded.spec.decision_rule
    prediction = Prediction(probs, rule.decide(probs), rule)
    target, region = target_region(loaded, target, prediction)
    grads, activations, t_backward, how = _target_gradients(
        _Phase2(loaded, image, target, region, names, boxes, tile_weights, acts, rule, steps)
    )
    return Capture(
        model_name=loaded.name,
        target=target,
        layers=names,
        padded_shape=(ph, pw),
        image_shape=(h, w),
        activations=activations,
        gradients=grads,
        prediction=prediction,
        device=str(loaded.device),
        seconds={"forward": t_forward, "backward": t_backward, "total": time.perf_counter() - t0},
        tiles=len(boxes),
        tiling=_words(len(boxes), tile, overlap, how),
    )


def recapture_tiled(
    loaded: LoadedModel,
    base: Capture,
    image: np.ndarray,
    target: tg.TargetSpec,
    *,
    tile: int | None = None,
    overlap: int | None = None,
    progress: Progress | None = None,
) -> Capture:
    """Another target on the same large image: phase 1 (mask, activations) is ``base``'s, which
    does not depend on the target; only phase 2 runs: a clicked nucleus of a 2000² image costs
    one window's pass around it (a region too large for one window: the tiles it touches), not
    the whole image.

    ``base`` must come from :func:`capture_tiled` of this image with the same tile and overlap.
    The result equals :func:`capture_tiled` with the new target (tested).
    """
    tile, overlap = tile or DEFAULT_TILE, DEFAULT_OVERLAP if overlap is None else overlap
    t0 = time.perf_counter()
    h, w = image.shape[:2]
    if base.image_shape != (h, w) or base.tiles <= 1:
        raise InputError("recapture_tiled needs the stitched capture of this image (capture_tiled)")
    boxes = [cell.box for cell in grid(w, h, tile, overlap, align=loaded.multiple)]
    tile_weights = _partition_of(tuple(boxes), (h, w), overlap)
    target, region = target_region(loaded, target, base.prediction)
    grads, acts, t_passes, how = _target_gradients(
        _Phase2(
            loaded,
            image,
            target,
            region,
            base.layers,
            boxes,
            tile_weights,
            base.activations,
            base.prediction.rule,
            _Steps(progress, len(boxes)),
        )
    )
    log.info(
        "model pass: tiled recapture (%s target) %s: %s, %.3f s (%.3f s in its passes, %d thread(s))",
        target.kind,
        loaded.name,
        how or f"{sum(bool((region[y0:y1, x0:x1] > 0).any()) for y0, x0, y1, x1 in boxes)} of {len(boxes)} tiles",
        time.perf_counter() - t0,
        t_passes,
        torch.get_num_threads(),
    )
    again = base.for_target(target, grads, time.perf_counter() - t0)
    again.activations, again.tiling = acts, _words(len(boxes), tile, overlap, how)
    return again


def _words(tiles: int, tile: int, overlap: int, how: str) -> str:
    """How a stitched capture was made, in words (the result's notes)."""
    words = f"tiled: {tiles} tiles of {tile}² with {overlap} px overlap, one normalisation over the whole map"
    return f"{words}; {how}" if how else words


def work(shape: tuple[int, int], multiple: int, tile: int | None = None, overlap: int | None = None) -> Work:
    """The work of :func:`capture_tiled` on an image of ``shape``, for the one estimate
    (:mod:`cam_core.cost`): a forward per tile, then a capture per tile (a whole-image target
    touches every tile; a click only its object's, see :func:`recapture_tiled`)."""
    tile, overlap = tile or DEFAULT_TILE, DEFAULT_OVERLAP if overlap is None else overlap
    h, w = shape
    pixels = sum((y1 - y0) * (x1 - x0) for y0, x0, y1, x1 in (c.box for c in grid(w, h, tile, overlap, align=multiple)))
    return Work("tiled capture", units(PRIORS["no-grad forward"][0] + PRIORS["capture"][0], pixels))


class _Steps:
    """Progress over both phases: step ``i`` of ``n`` with a line of text."""

    def __init__(self, progress: Progress | None, n: int) -> None:
        self.progress, self.n, self.done = progress, n, 0

    def step(self, text: str) -> None:
        self.done += 1
        if self.progress:
            self.progress(self.done / self.n, text)

    def finish(self, text: str) -> None:
        """The remaining steps done at once (a window's one pass replaces the tiles')."""
        self.done = self.n - 1
        self.step(text)


def _forward_tiles(
    loaded: LoadedModel,
    image: np.ndarray,
    names: list[str],
    boxes: list[tuple[int, int, int, int]],
    tile_weights: list[np.ndarray],
    padded_hw: tuple[int, int],
    steps: _Steps,
) -> tuple[np.ndarray, dict[str, np.ndarray], float]:
    """Phase 1: a forward per tile (no gradients); probabilities blended with the tiles' weights,
    each layer's activations blended on the image-sized layer map. Returns them and the forward time."""
    ph, pw = padded_hw
    h, w = image.shape[:2]
    probs = np.zeros((loaded.num_classes, h, w), np.float32)
    acts: dict[str, np.ndarray] = {}
    act_w: dict[str, np.ndarray] = {}
    model = loaded.model
    t_forward = 0.0
    for i, ((y0, x0, y1, x1), wgt) in enumerate(zip(boxes, tile_weights)):
        x, _ = prepare(loaded, np.ascontiguousarray(image[y0:y1, x0:x1]))
        tf = time.perf_counter()
        with loaded.lock, preserved_state(model), capture_outputs(model, names) as outs, torch.no_grad():
            model.eval()
            logits = forward(model, x)
            passes_of(loaded)["forward"] += 1
            tile_acts = {n: outs[n].float().cpu().numpy() for n in names}
        t_forward += time.perf_counter() - tf
        check_finite(logits, "logits")
        p = to_probabilities(logits, loaded.spec.binary)[0, :, : y1 - y0, : x1 - x0].float().cpu().numpy()
        probs[:, y0:y1, x0:x1] += p * wgt
        padded = (int(x.shape[-2]), int(x.shape[-1]))
        for n, a in tile_acts.items():
            lh, lw = a.shape[-2:]
            sy, sx = padded[0] // lh, padded[1] // lw
            if n not in acts:
                acts[n] = np.zeros((1, a.shape[1], ph // sy, pw // sx), np.float32)
                act_w[n] = np.zeros((ph // sy, pw // sx), np.float32)
            cw = _pool(wgt, (lh, lw), padded)
            ys, xs = y0 // sy, x0 // sx
            acts[n][:, :, ys : ys + lh, xs : xs + lw] += a * cw
            act_w[n][ys : ys + lh, xs : xs + lw] += cw
        steps.step(f"mask and activations: tile {i + 1} of {len(boxes)}")
    for n in names:
        acts[n] /= np.maximum(act_w[n], 1e-12)
    return probs, acts, t_forward


@dataclasses.dataclass(frozen=True)
class _Phase2:
    """What phase 2 needs, the same for a window's pass and the tiles': the image, the target
    and its weighted region, the layers, the grid and each tile's pixel shares, the stitched
    activations (never written: the base may be cached), the rule and the progress."""

    loaded: LoadedModel
    image: np.ndarray
    target: tg.TargetSpec
    region: np.ndarray
    names: list[str]
    boxes: list[tuple[int, int, int, int]]
    tile_weights: list[np.ndarray]
    acts: Mapping[str, np.ndarray]
    rule: DecisionRule
    steps: _Steps

    def pass_on(self, box: tuple[int, int, int, int], shares: np.ndarray | None = None) -> Capture:
        """One forward + backward of the image in ``box``, scored by the region there (× a tile's
        ``shares`` of each pixel)."""
        y0, x0, y1, x1 = box
        weights = self.region[y0:y1, x0:x1]
        return capture(
            self.loaded,
            np.ascontiguousarray(self.image[y0:y1, x0:x1]),
            tg.TargetSpec("mask", self.target.class_index, weights > 0),
            self.names,
            rule=self.rule,
            region_weights=weights if shares is None else weights * shares,
        )


def _target_gradients(
    job: _Phase2,
) -> tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray], float, str]:
    """Phase 2: the target's image-sized gradient maps, from one window centred on a region that
    fits one (the activations there become that pass's), else from the tiles (the activations
    stay ``job.acts``). Returns the gradients, the activations, the passes' time and, for a
    window, what it was in words."""
    box = local_window(job.region, job.loaded.multiple)
    if box is None:
        grads, seconds = _backward_tiles(job)
        return grads, job.acts, seconds, ""
    y0, x0, y1, x1 = box
    tb = time.perf_counter()
    cap = job.pass_on(box)
    seconds = time.perf_counter() - tb
    cells = {n: _cells(cap, n, y0, x0) for n in job.names}
    job.steps.finish(f"gradients: one {x1 - x0}×{y1 - y0} window around the target")
    how = (
        f"the target explained in one {x1 - x0}×{y1 - y0} px window centred on it "
        f"(up to {LOCAL_CONTEXT} px of tissue around it; the activations there from that pass)"
    )
    return (
        WindowedMaps(job.acts, dict(cap.gradients), cells, zeros=True),
        WindowedMaps(job.acts, dict(cap.activations), cells),
        seconds,
        how,
    )


def _cells(cap: Capture, name: str, y0: int, x0: int) -> tuple[slice, ...]:
    """Where a tile's or window's layer map at (y0, x0) of the image lies on the image-sized map."""
    lh, lw = cap.gradients[name].shape[-2:]
    sy, sx = cap.padded_shape[0] // lh, cap.padded_shape[1] // lw
    return slice(None), slice(None), slice(y0 // sy, y0 // sy + lh), slice(x0 // sx, x0 // sx + lw)


def _backward_tiles(job: _Phase2) -> tuple[dict[str, np.ndarray], float]:
    """A forward + backward per tile that touches the target region, scored by the region
    weighted by the tile's share of each pixel; the gradients are summed on the image-sized maps."""
    grads = {n: np.zeros(a.shape, a.dtype) for n, a in job.acts.items()}  # calloc: pages a tile adds to are written
    t_backward = 0.0
    for i, box in enumerate(job.boxes):
        y0, x0, y1, x1 = box
        if (job.region[y0:y1, x0:x1] > 0).any():  # a tile without target pixels scores 0: its gradients are 0
            tb = time.perf_counter()
            cap = job.pass_on(box, job.tile_weights[i])  # shares sum to 1
            t_backward += time.perf_counter() - tb
            for n in job.names:
                grads[n][_cells(cap, n, y0, x0)] += cap.gradients[n]
        job.steps.step(f"gradients: tile {i + 1} of {len(job.boxes)}")
    return grads, t_backward


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
    rule: DecisionRule | None = None,
    progress: Progress | None = None,
) -> tuple[Prediction, list[engine.CamResult]]:
    """One-pass methods on a large image from one stitched capture.

    Raises:
        InputError: a method needs passes of its own (run it on a smaller region).
    """
    slow = [m.name for m in methods if not m.tileable]
    if slow:
        raise InputError(
            f"{', '.join(slow)} cannot run tiled (one model pass per channel per tile); "
            f"crop a region of at most {int(TILE_ABOVE_PIXELS**0.5)}² or use a one-pass method"
        )
    cap = capture_tiled(loaded, image, target, [layer], rule=rule, tile=tile, overlap=overlap, progress=progress)
    results = []
    for m in methods:
        res = engine.cam_from_capture(cap, m, layer, eigen_smooth)
        res.seconds = cap.seconds["total"] + res.seconds
        results.append(res)
    return cap.prediction, results
