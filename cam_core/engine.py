"""The one-pass engine: one forward and one backward serve every gradient CAM and layer.

Plain grad-cam runs a forward and a backward for every (method, layer) call. Here a
:func:`capture` hooks all requested layers at once, runs one forward (whose logits also give
the mask and class probabilities) and one ``torch.autograd.grad`` to the hooked outputs, and
keeps the activations and gradients as numpy arrays. :func:`cam_from_capture` then applies
grad-cam's own per-method code (``get_cam_weights`` / ``get_cam_image``) and grad-cam's own
normalisation (``scale_cam_image`` per layer, then ``aggregate_multi_layers``), so the numbers
equal ``Method(model, [layer])(x, targets)``. Methods that need passes of their own run
through grad-cam under :func:`preserved_state`, which puts the model back exactly as found.

Eigen-family projections use a thin SVD: grad-cam's ``np.linalg.svd(full_matrices=True)``
allocates an (H·W)² matrix it never uses (512 GiB at 512²); the first right singular vector
is the same either way, so the result is too.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from pytorch_grad_cam import AblationLayer
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.image import scale_cam_image

from . import targets as tg
from .errors import Cancelled, InputError
from .layers import resolve_layers, spatial_layers
from .methods import MethodInfo
from .models import LoadedModel, pad_to_multiple, preprocess
from .state import preserved_state

Progress = Callable[[float, str], None]
_CAPTURE_IDS = itertools.count(1)
log = logging.getLogger(__name__)


@contextlib.contextmanager
def _capture_outputs(model: torch.nn.Module, names: list[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Forward hooks that keep each named layer's output tensor; always removed."""
    modules = dict(model.named_modules())
    outputs: dict[str, torch.Tensor] = {}
    handles = []
    try:
        for name in names:

            def hook(module, inputs, output, name=name):
                outputs[name] = output

            handles.append(modules[name].register_forward_hook(hook))
        yield outputs
    finally:
        for h in handles:
            h.remove()


@dataclass
class Prediction:
    """Per-class probabilities and the mask, at the image's size."""

    probs: np.ndarray  # C×H×W float32
    mask: np.ndarray  # H×W uint8 class indices, by the model's decision rule

    def area_percent(self) -> np.ndarray:
        return np.bincount(self.mask.ravel(), minlength=self.probs.shape[0]) / self.mask.size * 100


@dataclass
class Capture:
    """Everything one forward + backward gives: the cache every fast method reads."""

    model_name: str
    target: tg.TargetSpec
    layers: list[str]
    padded_shape: tuple[int, int]
    image_shape: tuple[int, int]
    activations: dict[str, np.ndarray]
    gradients: dict[str, np.ndarray]
    prediction: Prediction
    device: str
    seconds: dict[str, float]
    input_tensor: torch.Tensor = field(repr=False)
    uid: int = field(default_factory=lambda: next(_CAPTURE_IDS))


@dataclass
class CamResult:
    """One CAM with what produced it."""

    cam: np.ndarray  # H×W float32, normalised exactly as grad-cam returns it
    cam_raw: np.ndarray  # H×W float32, before ReLU and normalisation (bilinear-resized)
    method: str
    layer: str
    target: str
    model: str
    device: str
    seconds: float
    from_cache: bool
    class_index: int = -1
    eigen_smooth: bool = False
    aug_smooth: bool = False
    notes: list[str] = field(default_factory=list)

    def provenance(self) -> dict:
        return {
            "model": self.model,
            "layer": self.layer,
            "method": self.method,
            "target": self.target,
            "class_index": self.class_index,
            "device": self.device,
            "seconds": round(self.seconds, 4),
            "from_one_pass_cache": self.from_cache,
            "eigen_smooth": self.eigen_smooth,
            "aug_smooth": self.aug_smooth,
            "notes": self.notes,
            "versions": versions(),
        }


def versions() -> dict[str, str]:
    import pytorch_grad_cam
    import segmentation_models_pytorch as smp

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "grad-cam": getattr(pytorch_grad_cam, "__version__", _dist_version("grad-cam")),
        "segmentation-models-pytorch": smp.__version__,
        "numpy": np.__version__,
    }


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def _probabilities(logits: torch.Tensor, binary: bool) -> torch.Tensor:
    if binary:
        p = torch.sigmoid(logits[:, :1])
        return torch.cat([1 - p, p], dim=1)
    return torch.softmax(logits, dim=1)


def decide(probs: np.ndarray, rule: dict) -> np.ndarray:
    """Class mask from C×H×W probabilities by a decision rule.

    ``argmax``; or ``background_below``: a pixel is foreground when P(background) is below
    ``threshold``, and then gets its most probable foreground class.
    """
    if rule.get("type", "argmax") == "argmax" or probs.shape[0] < 2:
        return probs.argmax(0).astype(np.uint8)
    threshold = float(rule["threshold"])
    fg = probs[1:].argmax(0).astype(np.uint8) + 1
    return np.where(probs[0] < threshold, fg, 0).astype(np.uint8)


def _segmentation_output(out) -> torch.Tensor:
    """smp models built with ``aux_params`` return (mask logits, class logits)."""
    return out[0] if isinstance(out, (tuple, list)) else out


def _forward(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    try:
        return _segmentation_output(model(x))
    except RuntimeError as exc:
        raise InputError(
            f"the model failed on a {x.shape[-1]}×{x.shape[-2]} (padded) input: {str(exc)[:160]}; "
            "try a larger image (≥256×256 works for every smp architecture)"
        ) from exc


def _check_finite(t: torch.Tensor, what: str) -> None:
    if not torch.isfinite(t).all():
        raise InputError(
            f"the model produced NaN/Inf {what} for this image; check the model's weights and preprocessing"
        )


def _prepare(loaded: LoadedModel, image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(
            f"expected an H×W×3 uint8 RGB image, got shape {image.shape} {image.dtype}; load it with cam_core.images.load_image"
        )
    x, size = pad_to_multiple(preprocess(image, loaded.spec), loaded.multiple)
    return x.to(loaded.device), size


def predict(loaded: LoadedModel, image: np.ndarray, rule: dict | None = None) -> Prediction:
    """Forward only (no hooks, no gradients): probabilities and mask for the image."""
    x, (h, w) = _prepare(loaded, image)
    with loaded.lock, preserved_state(loaded.model), torch.no_grad():
        loaded.model.eval()
        logits = _forward(loaded.model, x)
        loaded.passes["forward"] += 1
        log.info("model pass: forward (predict) %s %s", loaded.name, tuple(x.shape))
    _check_finite(logits, "logits")
    probs = _probabilities(logits, loaded.spec.binary)[0, :, :h, :w].float().cpu().numpy()
    return Prediction(probs, decide(probs, rule or loaded.spec.decision_rule))


@dataclass
class _RetainedGraph:
    """The autograd graph of a model's latest capture, kept so another class costs one backward."""

    capture_id: int
    logits: torch.Tensor
    outputs: dict[str, torch.Tensor]


def _score_function(
    loaded: LoadedModel, target: tg.TargetSpec, mask: np.ndarray, padded_shape: tuple[int, ...], finer: bool = False
) -> tuple[tg.TargetSpec, object]:
    """Resolve an automatic class, build the region (zero over the padding) and its score callable."""
    target = tg.resolve_auto(target, mask, loaded.num_classes)
    padded = np.zeros(tuple(padded_shape[-2:]), dtype=np.float32)
    h, w = mask.shape
    padded[:h, :w] = tg.region(target, mask, loaded.spec.classes)
    return target, tg.build(target, padded, loaded.spec.binary, loaded.num_classes, finer=finer)


def capture(
    loaded: LoadedModel,
    image: np.ndarray,
    target: tg.TargetSpec,
    layers: list[str] | str | None = None,
    rule: dict | None = None,
    keep_graph: bool = False,
) -> Capture:
    """One forward and one backward with hooks on every requested layer.

    Args:
        keep_graph: keep the autograd graph (one per model, replacing the previous one) so
            :func:`recapture` can explain another class or region with one backward and no
            forward. Costs the graph's memory (the saved activations) until replaced.

    Raises:
        EmptyTargetError: the target region is empty (e.g. the class is predicted nowhere).
        UnknownNameError / InputError: a layer does not exist or is not spatial.
    """
    names = resolve_layers(loaded, layers)
    x, (h, w) = _prepare(loaded, image)
    model = loaded.model
    t0 = time.perf_counter()
    with loaded.lock, preserved_state(model), _capture_outputs(model, names) as outs, torch.enable_grad():
        model.eval()
        # The input requires grad so every hooked output is in the graph, even when a
        # user's model has frozen parameters; autograd.grad leaves parameters' .grad alone.
        x = x.detach().requires_grad_(True)
        logits = _forward(model, x)
        loaded.passes["forward"] += 1
        _check_finite(logits, "logits")
        t_forward = time.perf_counter() - t0
        probs = _probabilities(logits.detach(), loaded.spec.binary)[0].float().cpu().numpy()
        pred_full = decide(probs, rule or loaded.spec.decision_rule)
        prediction = Prediction(probs[:, :h, :w], pred_full[:h, :w])
        target, score_fn = _score_function(loaded, target, prediction.mask, x.shape)
        score = score_fn(logits[0])
        t1 = time.perf_counter()
        loaded.retained = None  # free the previous graph before building up another
        grads = torch.autograd.grad(score, [outs[n] for n in names], allow_unused=True, retain_graph=keep_graph)
        loaded.passes["backward"] += 1
        log.info("model pass: forward+backward (capture) %s %s layers=%d", loaded.name, tuple(x.shape), len(names))
        t_backward = time.perf_counter() - t1
        activations, gradients = {}, {}
        for n, g in zip(names, grads):
            act = outs[n].detach().float().cpu().numpy()
            activations[n] = act
            gradients[n] = np.zeros_like(act) if g is None else g.detach().float().cpu().numpy()
    cap = Capture(
        model_name=loaded.name,
        target=target,
        layers=names,
        padded_shape=tuple(x.shape[-2:]),
        image_shape=(h, w),
        activations=activations,
        gradients=gradients,
        prediction=prediction,
        device=str(loaded.device),
        seconds={"forward": t_forward, "backward": t_backward, "total": time.perf_counter() - t0},
        input_tensor=x.detach().cpu(),
    )
    if keep_graph:
        loaded.retained = _RetainedGraph(cap.uid, logits, {n: outs[n] for n in names})
    return cap


def recapture(loaded: LoadedModel, cap: Capture, target: tg.TargetSpec, image: np.ndarray | None = None) -> Capture:
    """Gradients for another target on the same image: one backward through the kept graph.

    Falls back to a full :func:`capture` (needs ``image``) when the model's kept graph belongs
    to another capture (another user or image came in between).
    """
    with loaded.lock:
        graph = loaded.retained
        if graph is None or graph.capture_id != cap.uid:
            graph = None
        else:
            t0 = time.perf_counter()
            target, score_fn = _score_function(loaded, target, cap.prediction.mask, cap.padded_shape)
            score = score_fn(graph.logits[0])
            with torch.enable_grad():
                grads = torch.autograd.grad(
                    score, [graph.outputs[n] for n in cap.layers], allow_unused=True, retain_graph=True
                )
            loaded.passes["backward"] += 1
            log.info("model pass: backward only (recapture) %s", loaded.name)
            gradients = {
                n: np.zeros_like(cap.activations[n]) if g is None else g.detach().float().cpu().numpy()
                for n, g in zip(cap.layers, grads)
            }
            new = Capture(
                model_name=cap.model_name,
                target=target,
                layers=cap.layers,
                padded_shape=cap.padded_shape,
                image_shape=cap.image_shape,
                activations=cap.activations,
                gradients=gradients,
                prediction=cap.prediction,
                device=cap.device,
                seconds={"forward": 0.0, "backward": time.perf_counter() - t0, "total": time.perf_counter() - t0},
                input_tensor=cap.input_tensor,
            )
            graph.capture_id = new.uid  # the graph now serves the newest capture of this image
            return new
    if image is None:
        raise InputError("the kept graph was replaced by another capture; pass the image to capture again")
    return capture(loaded, image, target, cap.layers, keep_graph=True)


def first_component(batch: np.ndarray, sign_correction: bool = False) -> np.ndarray:
    """grad-cam's ``get_2d_projection`` (and its sign-corrected variant) with a thin SVD.

    Same centring, same first right singular vector (LAPACK returns identical V rows for the
    thin and full decompositions), memory O(H·W·C) instead of O((H·W)²).
    """
    batch = batch.copy()
    batch[np.isnan(batch)] = 0
    out = []
    for act in batch:
        flat = act.reshape(act.shape[0], -1).transpose()
        flat = flat - flat.mean(axis=0)
        _, _, vt = np.linalg.svd(flat, full_matrices=False)
        proj = (flat @ vt[0, :]).reshape(act.shape[1:])
        if sign_correction and abs(proj.min()) > abs(proj.max()):
            proj = -proj
        out.append(proj)
    return np.float32(out)


class _NoHooks:
    """Stands in for grad-cam's ActivationsAndGradients: the engine owns the hooks."""

    def release(self) -> None:
        pass


def _instance(info: MethodInfo, device: torch.device):
    """A grad-cam method object without its constructor (which would hook and eval() the model)."""
    obj = info.cls.__new__(info.cls)
    obj.device = device
    obj.activations_and_grads = _NoHooks()
    obj.reshape_transform = None
    if info.name == "FEM":
        obj.k = 2
    if info.name == "KPCA_CAM":
        obj.kernel, obj.gamma = "sigmoid", None
    return obj


def _layer_cam(
    info: MethodInfo, obj, x: torch.Tensor, acts: np.ndarray, grads: np.ndarray, targets, eigen_smooth: bool
) -> np.ndarray:
    """The un-normalised CAM at layer resolution, by grad-cam's per-method code."""
    name = info.name
    if name == "EigenCAM":
        return first_component(acts)
    if name == "EigenGradCAM":
        return first_component(grads * acts)
    if name == "SegEigenCAM":
        return first_component(np.abs(grads) * acts, sign_correction=True)
    if not eigen_smooth:
        return info.cls.get_cam_image(obj, x, None, targets, acts, grads, False)
    # eigen_smooth: same element-wise products as grad-cam, projected with the thin SVD.
    if name == "HiResCAM":
        return first_component(grads * acts)
    if name == "GradCAMElementWise":
        return first_component(np.maximum(grads * acts, 0))
    if name == "LayerCAM":
        return first_component(np.maximum(grads, 0) * acts)
    weights = info.cls.get_cam_weights(obj, x, None, targets, acts, grads)
    return first_component(weights[:, :, None, None] * acts)


def _normalise(obj, raw: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """grad-cam's normalisation: ReLU, min-max + resize per layer, then aggregate (min-max again)."""
    scaled = scale_cam_image(np.maximum(raw, 0), size_wh)
    return BaseCAM.aggregate_multi_layers(obj, [scaled[:, None, :]])


def _raw_full(raw: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    return cv2.resize(np.float32(raw[0]), size_wh, interpolation=cv2.INTER_LINEAR)


def _check_layer_size(info: MethodInfo, layer: str, shape: tuple[int, ...]) -> None:
    pixels = int(np.prod(shape[2:]))
    if info.max_layer_pixels and pixels > info.max_layer_pixels:
        side = math.isqrt(info.max_layer_pixels)
        raise InputError(
            f"{info.name} builds an (H·W)² kernel matrix; layer {layer!r} is {shape[-1]}×{shape[-2]} "
            f"({pixels} pixels, limit {side}×{side}); pick a deeper layer or EigenCAM, which gives a similar map"
        )


def cam_from_capture(cap: Capture, info: MethodInfo, layer: str, eigen_smooth: bool = False) -> CamResult:
    """Compute one method on one captured layer: pure numpy, milliseconds."""
    if not info.from_cache:
        raise InputError(f"{info.name} needs passes of its own; use run_method()")
    if layer not in cap.activations:
        raise InputError(f"layer {layer!r} was not captured; captured: {', '.join(cap.layers)}")
    t0 = time.perf_counter()
    acts, grads = cap.activations[layer], cap.gradients[layer]
    _check_layer_size(info, layer, acts.shape)
    obj = _instance(info, torch.device("cpu"))
    raw = _layer_cam(info, obj, cap.input_tensor, acts, grads, None, eigen_smooth and info.eigen_smooth)
    size_wh = (cap.padded_shape[1], cap.padded_shape[0])
    cam = _normalise(obj, raw, size_wh)[0]
    h, w = cap.image_shape
    result = CamResult(
        cam=np.ascontiguousarray(cam[:h, :w], dtype=np.float32),
        cam_raw=np.ascontiguousarray(_raw_full(raw, size_wh)[:h, :w], dtype=np.float32),
        method=info.name,
        layer=layer,
        target=cap.target.kind,
        model=cap.model_name,
        device=cap.device,
        seconds=time.perf_counter() - t0,
        from_cache=True,
        class_index=cap.target.class_index,
        eigen_smooth=eigen_smooth and info.eigen_smooth,
    )
    _finalise(result, raw)
    return result


def _finalise(result: CamResult, raw: np.ndarray) -> None:
    if not np.isfinite(raw).all() or not np.isfinite(result.cam).all():
        raise InputError(f"{result.method} on {result.layer} produced NaN/Inf values; try another layer or method")
    if float(result.cam.max()) <= 0.0:
        result.notes.append(
            "the CAM is zero everywhere (no positive evidence at this layer for this target); "
            "try another layer or method, or look at cam_raw"
        )


class _AblationLayer(AblationLayer):
    """grad-cam's AblationLayer, callable the way smp calls decoder blocks.

    smp's Unet calls ``block(x, skip_connection=...)``; grad-cam's layer takes only ``x`` and
    raises. The ablated output comes from the stored activations, so the extra arguments are
    not needed. A fresh one per call also avoids grad-cam's shared mutable default instance.
    """

    def __call__(self, x, *args, **kwargs):
        return super().__call__(x)


def default_batch_size(device: torch.device, image_pixels: int) -> int:
    """Images per forward for ScoreCAM/AblationCAM: fits ~1 GiB of inputs on a CPU, more on a GPU."""
    budget = (8 if device.type == "cuda" else 1) * 2**30
    return int(max(1, min(64, budget // max(1, image_pixels * 3 * 4 * 8))))


@contextlib.contextmanager
def _progress_hook(model: torch.nn.Module, expected: int, progress: Progress | None, label: str) -> Iterator[None]:
    """Report each model forward as progress; the callback may raise ``Cancelled``."""
    calls = [0]

    def hook(module, inputs):
        calls[0] += 1
        if progress is not None:
            progress(min(calls[0] / max(expected, 1), 1.0), f"{label}: forward {calls[0]} of ~{expected}")

    handle = model.register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


FAST_SCORECAM_K = 32


def _scorecam_topk(
    loaded: LoadedModel, x: torch.Tensor, layer: str, target_fn, k: int, batch_size: int, progress: Progress | None
) -> np.ndarray:
    """ScoreCAM restricted to the k channels with the most activation energy (sum of squares).

    Same masking and scoring as grad-cam's ScoreCAM (bilinear upsampling with aligned corners,
    per-channel min-max, softmax of the target scores); the channels left out get weight 0.
    Returns the raw CAM (1×h×w) at layer resolution.
    """
    model = loaded.model
    with _capture_outputs(model, [layer]) as outs, torch.no_grad():
        model.eval()
        _forward(model, x)
        acts = outs[layer].detach()
    loaded.passes["forward"] += 1
    energy = acts[0].float().pow(2).sum(dim=(1, 2))
    top = torch.argsort(energy, descending=True)[: min(k, acts.shape[1])]
    sel = acts[:, top]
    with torch.no_grad():
        up = torch.nn.UpsamplingBilinear2d(size=x.shape[-2:])(sel)[0]
        flat = up.view(up.shape[0], -1)
        lo, hi = flat.min(1)[0][:, None, None], flat.max(1)[0][:, None, None]
        up = (up - lo) / (hi - lo + 1e-8)
        scores = []
        for i in range(0, up.shape[0], batch_size):
            batch = x * up[i : i + batch_size, None]
            out = _segmentation_output(model(batch))
            loaded.passes["forward"] += 1
            scores += [float(target_fn(o)) for o in out]
            if progress:
                progress(
                    min((i + batch_size) / up.shape[0], 1.0),
                    f"ScoreCAM-TopK: {min(i + batch_size, len(top))} of {len(top)} channels",
                )
        weights = torch.softmax(torch.tensor(scores), dim=0).numpy()
    return (weights[:, None, None] * sel[0].float().cpu().numpy()).sum(axis=0)[None]


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
) -> CamResult:
    """Run a method through grad-cam itself, leaving the model exactly as found (also on error).

    Raises:
        Cancelled: the progress callback cancelled it.
        InputError: the method failed; the message names it and the layer.
    """
    (layer_name,) = resolve_layers(loaded, layer)
    prediction = prediction or predict(loaded, image)
    x, (h, w) = _prepare(loaded, image)
    target, target_fn = _score_function(loaded, target, prediction.mask, x.shape, finer=info.name == "FinerCAM")
    modules = dict(loaded.model.named_modules())
    layer_info = spatial_layers(loaded)[layer_name]
    lh, lw = x.shape[-2] // layer_info.stride, x.shape[-1] // layer_info.stride
    _check_layer_size(info, layer_name, (1, layer_info.channels, lh, lw))
    if eigen_smooth and info.eigen_smooth and lh * lw > 96 * 96:
        raise InputError(
            f"eigen_smooth with {info.name} runs grad-cam's full SVD, (H·W)² floats for {lh}×{lw}; "
            "turn eigen_smooth off or pick a deeper layer"
        )
    bs = batch_size or default_batch_size(loaded.device, int(x.shape[-1] * x.shape[-2]))
    expected = 1
    if info.extra_passes:
        channels = min(layer_info.channels, FAST_SCORECAM_K) if info.approximate else layer_info.channels
        expected = 1 + math.ceil(channels / bs)
    if aug_smooth and info.aug_smooth:
        expected *= 6
    t0 = time.perf_counter()
    notes: list[str] = []
    model = loaded.model
    if info.approximate:
        with loaded.lock, preserved_state(model):
            loaded.passes["method_runs"] += 1
            log.info("model pass: %s (~%d forwards) %s", info.name, expected, loaded.name)
            raw = _scorecam_topk(loaded, x, layer_name, target_fn, FAST_SCORECAM_K, bs, progress)
        size_wh = (x.shape[-1], x.shape[-2])
        cam = _normalise(_instance(info, torch.device("cpu")), raw, size_wh)
        cam_raw = _raw_full(raw, size_wh)[None]
        notes.append(
            f"approximation: ScoreCAM on the top {FAST_SCORECAM_K} of {layer_info.channels} channels by activation energy"
        )
        return _method_result(
            info, loaded, target, layer_name, cam, cam_raw, (h, w), t0, notes, eigen_smooth, aug_smooth
        )
    with loaded.lock, preserved_state(model), _progress_hook(model, expected, progress, info.name):
        loaded.passes["method_runs"] += 1
        log.info("model pass: %s through grad-cam (~%d forwards) %s", info.name, expected, loaded.name)
        try:
            if info.name == "AblationCAM":
                cam_obj = info.cls(model, [modules[layer_name]], batch_size=bs, ablation_layer=_AblationLayer())
            else:
                cam_obj = info.cls(model, [modules[layer_name]])
            if info.name == "ScoreCAM":
                cam_obj.batch_size = bs
            try:
                kwargs = {"eigen_smooth": eigen_smooth and info.eigen_smooth}
                if info.aug_smooth:
                    kwargs["aug_smooth"] = aug_smooth
                with contextlib.redirect_stdout(None):
                    cam = cam_obj(x, [target_fn], **kwargs)
            finally:
                inner = getattr(cam_obj, "base_cam", cam_obj)
                inner.activations_and_grads.release()
        except Cancelled:
            raise
        except (RuntimeError, ValueError, IndexError, TypeError, AssertionError) as exc:
            raise InputError(
                f"{info.name} failed on layer {layer_name!r} ({type(exc).__name__}: {str(exc)[:200]}); "
                "the model was restored — try another layer or a gradient method such as GradCAM"
            ) from exc
    if info.name == "FullGrad":
        notes.append("FullGrad uses every layer's bias gradients; the chosen layer is ignored")
    notes.append("cam_raw equals cam: grad-cam does not expose the un-normalised map for this method")
    return _method_result(info, loaded, target, layer_name, cam, cam, (h, w), t0, notes, eigen_smooth, aug_smooth)


def _method_result(
    info: MethodInfo,
    loaded: LoadedModel,
    target: tg.TargetSpec,
    layer: str,
    cam: np.ndarray,
    cam_raw: np.ndarray,
    size: tuple[int, int],
    t0: float,
    notes: list[str],
    eigen_smooth: bool,
    aug_smooth: bool,
) -> CamResult:
    """A run_method result: 1×H×W maps cropped to the image, checked for NaN/Inf."""
    h, w = size
    result = CamResult(
        cam=np.ascontiguousarray(cam[0, :h, :w], dtype=np.float32),
        cam_raw=np.ascontiguousarray(cam_raw[0, :h, :w], dtype=np.float32),
        method=info.name,
        layer=layer,
        target=target.kind,
        model=loaded.name,
        device=str(loaded.device),
        seconds=time.perf_counter() - t0,
        from_cache=False,
        class_index=target.class_index,
        eigen_smooth=eigen_smooth and info.eigen_smooth,
        aug_smooth=aug_smooth and info.aug_smooth,
        notes=notes,
    )
    _finalise(result, result.cam_raw)
    return result


def explain(
    loaded: LoadedModel,
    image: np.ndarray,
    target: tg.TargetSpec,
    layers: list[str],
    methods: list[MethodInfo],
    *,
    eigen_smooth: bool = False,
    aug_smooth: bool = False,
    progress: Progress | None = None,
    on_error: Callable[[MethodInfo, str, Exception], None] | None = None,
) -> tuple[Capture | None, list[CamResult]]:
    """Every (layer, method) combination: one capture for the cache methods, grad-cam for the rest.

    Args:
        on_error: called for a combination that fails (e.g. KPCA-CAM on a full-resolution
            layer) so the others still run; without it the error propagates.
    """
    cache_methods = [m for m in methods if m.from_cache and not aug_smooth]
    other = [m for m in methods if m not in cache_methods]
    results: list[CamResult] = []
    cap = capture(loaded, image, target, layers) if cache_methods else None
    total = len(layers) * len(methods)
    done = 0
    for layer in layers:
        for info in cache_methods:
            try:
                results.append(cam_from_capture(cap, info, layer, eigen_smooth))
            except InputError as exc:
                if on_error is None:
                    raise
                on_error(info, layer, exc)
            done += 1
            if progress:
                progress(done / total, f"{info.name} @ {layer}")
    for layer in layers:
        for info in other:
            try:
                results.append(
                    run_method(
                        loaded,
                        image,
                        target,
                        info,
                        layer,
                        eigen_smooth=eigen_smooth,
                        aug_smooth=aug_smooth,
                        prediction=cap.prediction if cap else None,
                    )
                )
            except InputError as exc:
                if on_error is None:
                    raise
                on_error(info, layer, exc)
            done += 1
            if progress:
                progress(done / total, f"{info.name} @ {layer}")
    return cap, results
