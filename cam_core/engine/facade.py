"""The façade: explain an image with any methods and layers, from as few model passes as possible.

The parts, one concern each:

* :mod:`cam_core.capture` — one forward + one backward with hooks on many layers (and the kept
  graph that makes another class cost one backward);
* :mod:`cam_core.cammath` — grad-cam's per-method formulas and normalisation on captured arrays;
* :mod:`cam_core.passes` — methods with passes of their own, on a private copy of the model;
* :mod:`cam_core.provenance` — the result type and the ``result.json`` schema;
* :mod:`cam_core.tiling` — large images as a stitched capture of overlapping tiles.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial

import numpy as np
import torch

from cam_core.cost import Work
from cam_core.engine import cammath
from cam_core.engine import targets as tg
from cam_core.engine.capturing import (
    Capture,
    Prediction,
    Progress,
    capture,
    predict,
    prepare,
    score_function,
)
from cam_core.engine.graph import passes as passes_of
from cam_core.engine.methods import AUG_SMOOTH_COPIES, MethodInfo
from cam_core.engine.passes import PassRun, default_batch_size, expected_batches, private_copy
from cam_core.engine.result import CamResult
from cam_core.errors import InputError
from cam_core.model.layers import resolve_layers, spatial_layers
from cam_core.model.models import LoadedModel, padded_pixels
from cam_core.model.rules import DecisionRule

log = logging.getLogger(__name__)
# eigen_smooth through grad-cam itself runs its full SVD: (h·w)² floats; refuse above this layer size.
GRAD_CAM_SVD_MAX_PIXELS = 96 * 96


def _check_layer_size(info: MethodInfo, layer: str, shape: tuple[int, ...]) -> None:
    pixels = int(np.prod(shape[2:]))
    if info.max_layer_pixels and pixels > info.max_layer_pixels:
        side = int(info.max_layer_pixels**0.5)
        raise InputError(
            f"{info.name} builds an (H·W)² kernel matrix; layer {layer!r} is {shape[-1]}×{shape[-2]} "
            f"({pixels} pixels, limit {side}×{side}); pick a deeper layer or EigenCAM, which gives a similar map"
        )


def _finalise(result: CamResult, raw: np.ndarray) -> CamResult:
    if not np.isfinite(raw).all() or not np.isfinite(result.cam).all():
        raise InputError(f"{result.method} on {result.layer} produced NaN/Inf values; try another layer or method")
    if float(result.cam.max()) <= 0.0:
        result.notes.append(
            "the CAM is zero everywhere (no positive evidence at this layer for this target); "
            "try another layer or method, or look at cam_raw"
        )
    return result


def cam_from_capture(cap: Capture, info: MethodInfo, layer: str, eigen_smooth: bool = False) -> CamResult:
    """Compute one method on one captured layer: pure numpy, milliseconds."""
    if info.layer_cam is None:
        raise InputError(f"{info.name} needs passes of its own; use run_method()")
    if layer not in cap.activations:
        raise InputError(f"layer {layer!r} was not captured; captured: {', '.join(cap.layers)}")
    t0 = time.perf_counter()
    smooth = eigen_smooth and info.eigen_smooth
    part = cap.window_part(layer) if info.local and not smooth else None
    if part is None:
        acts, grads = cap.activations[layer], cap.gradients[layer]
        _check_layer_size(info, layer, acts.shape)
        raw = info.layer_cam(acts, grads, smooth)
    else:  # 0 outside the window, where the gradients are: the same numbers, no image-sized product
        acts_w, grads_w, cells, (lh, lw) = part
        raw = np.zeros((acts_w.shape[0], lh, lw), np.float32)
        raw[:, cells[2], cells[3]] = info.layer_cam(acts_w, grads_w, smooth)
    size_wh = (cap.padded_shape[1], cap.padded_shape[0])
    h, w = cap.image_shape
    cam = cammath.visible(cammath.normalise(raw, size_wh)[0], (h, w))
    result = CamResult(
        cam=np.ascontiguousarray(cam, dtype=np.float32),
        cam_raw=np.ascontiguousarray(cammath.raw_full(raw, size_wh)[:h, :w], dtype=np.float32),
        method=info.name,
        layer=layer,
        target=cap.target.kind,
        model=cap.model_name,
        device=cap.device,
        seconds=time.perf_counter() - t0,
        source="tiled" if cap.tiles > 1 else "cache",
        class_index=cap.target.class_index if cap.target.class_index is not None else -1,
        eigen_smooth=smooth,
    )
    if cap.tiling:
        result.notes.append(cap.tiling)
    return _finalise(result, raw)


def method_work(loaded: LoadedModel, shape: tuple[int, ...], info: MethodInfo, layer: str) -> Work:
    """The work of a method's own passes at ``layer`` on an image of ``shape``, for the one
    estimate (:mod:`cam_core.cost`): the app's labels and progress, the trust check's progress
    split and the estimates bench read it here."""
    return info.work(spatial_layers(loaded)[layer].channels, padded_pixels(shape, loaded.multiple))


def run_method(
    loaded: LoadedModel,
    image: np.ndarray,
    target: tg.TargetSpec,
    info: MethodInfo,
    layer: str | None = None,
    *,
    eigen_smooth: bool = False,
    aug_smooth: bool = False,
    batch_size: int | None = None,
    progress: Progress | None = None,
    prediction: Prediction | None = None,
    rule: DecisionRule | None = None,
) -> CamResult:
    """Run a method with passes of its own (or any method with ``aug_smooth``) through grad-cam.

    Works on a private copy of the model: the shared model's lock is held only to copy it, so
    other sessions keep computing; the shared model is never modified, also on error or cancel.

    Raises:
        Cancelled: the progress callback cancelled it.
        InputError: the method failed; the message names it and the layer.
    """
    from cam_core.engine import passes

    (layer_name,) = resolve_layers(loaded, layer)
    prediction = prediction or predict(loaded, image, rule)
    x, (h, w) = prepare(loaded, image)
    target, target_fn = score_function(loaded, target, prediction, x.shape, finer=info.finer_target)
    channels = spatial_layers(loaded)[layer_name].channels
    smooth, augment, bs, expected = _plan(loaded, info, layer_name, x.shape, eigen_smooth, aug_smooth, batch_size)
    runner = info.runner or passes.run_grad_cam
    t0 = time.perf_counter()
    run = PassRun(
        model=private_copy(loaded.model, loaded.lock),
        x=x,
        layer=layer_name,
        channels=channels,
        grad_cam_class=info.grad_cam_cls() if runner is passes.run_grad_cam else None,
        build=info.build,
        target_fn=target_fn,
        batch_size=bs,
        expected_forwards=expected,
        progress=progress,
        eigen_smooth=smooth,
        aug_smooth=augment,
        label=info.name,
    )
    passes_of(loaded)["method_runs"] += 1
    log.info("model pass: %s on a private copy (~%d forwards) %s", info.name, expected, loaded.name)
    cam, cam_raw = _run(runner, run, info.name, layer_name, loaded.device)
    if info.ignores_layer:
        run.notes.append(f"{info.name} uses every layer's bias gradients; the chosen layer is ignored")
    result = CamResult(
        cam=np.ascontiguousarray(cammath.visible(cam[0], (h, w)), dtype=np.float32),
        cam_raw=np.ascontiguousarray(cam_raw[0, :h, :w], dtype=np.float32),
        method=info.name,
        layer=layer_name,
        target=target.kind,
        model=loaded.name,
        device=str(loaded.device),
        seconds=time.perf_counter() - t0,
        source="own passes",
        class_index=target.class_index if target.class_index is not None else -1,
        eigen_smooth=smooth,
        aug_smooth=augment,
        notes=run.notes,
    )
    return _finalise(result, result.cam_raw)


def _plan(
    loaded: LoadedModel,
    info: MethodInfo,
    layer_name: str,
    shape: tuple[int, ...],
    eigen_smooth: bool,
    aug_smooth: bool,
    batch_size: int | None,
) -> tuple[bool, bool, int, int]:
    """What a method's passes will be, checked before any: (eigen_smooth, aug_smooth as they
    apply to the method, batch size, expected forwards for the progress bar).

    Raises:
        InputError: the layer's map is too large for the method (or for grad-cam's full SVD).
    """
    layer_info = spatial_layers(loaded)[layer_name]
    lh, lw = shape[-2] // layer_info.stride, shape[-1] // layer_info.stride
    _check_layer_size(info, layer_name, (1, layer_info.channels, lh, lw))
    smooth = eigen_smooth and info.eigen_smooth
    if smooth and lh * lw > GRAD_CAM_SVD_MAX_PIXELS:
        raise InputError(
            f"eigen_smooth with {info.name} runs grad-cam's full SVD, (H·W)² floats for {lw}×{lh}; "
            "turn eigen_smooth off or pick a deeper layer"
        )
    bs = batch_size or default_batch_size(loaded.device, int(shape[-1] * shape[-2]))
    channels = min(layer_info.channels, info.channel_cap or layer_info.channels)
    expected = expected_batches(channels, bs) if info.per_channel else 1
    augment = aug_smooth and info.aug_smooth
    return smooth, augment, bs, expected * (AUG_SMOOTH_COPIES if augment else 1)


def _run(
    runner: Callable[[PassRun], tuple[np.ndarray, np.ndarray]],
    run: PassRun,
    name: str,
    layer_name: str,
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray]:
    """The passes on the private copy; any failure inside grad-cam becomes one message that names
    the method and the layer (the shared model was never touched), and the copy is freed."""
    from cam_core.errors import Cancelled

    try:
        return runner(run)
    except (Cancelled, InputError):
        raise
    except (RuntimeError, ValueError, IndexError, TypeError, AssertionError) as exc:
        raise InputError(
            f"{name} failed on layer {layer_name!r} ({type(exc).__name__}: {str(exc)[:200]}); "
            "the shared model was not touched — try another layer or a gradient method such as GradCAM"
        ) from exc
    finally:
        del run.model
        if device.type == "cuda":
            torch.cuda.empty_cache()


def explain(
    loaded: LoadedModel,
    image: np.ndarray,
    target: tg.TargetSpec,
    layers: list[str],
    methods: list[MethodInfo],
    *,
    eigen_smooth: bool = False,
    aug_smooth: bool = False,
    rule: DecisionRule | None = None,
    progress: Progress | None = None,
    on_error: Callable[[MethodInfo, str, Exception], None] | None = None,
) -> tuple[Capture | None, list[CamResult]]:
    """Every (layer, method) combination: one capture for the cache methods, own passes for the rest.

    Args:
        on_error: called for a combination that fails (e.g. KPCA-CAM on a full-resolution
            layer) so the others still run; without it the error propagates.
    """
    cache_methods = [m for m in methods if m.from_cache and not (aug_smooth and m.aug_smooth)]
    other = [m for m in methods if m not in cache_methods]
    results: list[CamResult] = []
    cap = capture(loaded, image, target, layers, rule=rule) if cache_methods else None
    total, done = len(layers) * len(methods), 0

    def attempt(info: MethodInfo, layer: str, make: Callable[[], CamResult]) -> None:
        """One cell: its result, or (several asked for) its error to ``on_error``; then progress."""
        nonlocal done
        try:
            results.append(make())
        except InputError as exc:
            if on_error is None:
                raise
            on_error(info, layer, exc)
        done += 1
        if progress:
            progress(done / total, f"{info.name} @ {layer}")

    for layer in layers:
        for info in cache_methods:
            assert cap is not None
            attempt(info, layer, partial(cam_from_capture, cap, info, layer, eigen_smooth))
    prediction = cap.prediction if cap else None
    for layer in layers:
        for info in other:
            run = partial(
                run_method,
                loaded,
                image,
                target,
                info,
                layer,
                eigen_smooth=eigen_smooth,
                aug_smooth=aug_smooth,
                prediction=prediction,
                rule=rule,
            )
            attempt(info, layer, run)
    return cap, results
