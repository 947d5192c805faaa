"""One forward and one backward with hooks on many layers: the cache every fast method reads.

Plain grad-cam runs a forward and a backward for every (method, layer) call. :func:`capture`
hooks all requested layers at once, runs one forward (whose logits also give the mask and the
class probabilities) and one ``torch.autograd.grad`` to the hooked outputs (parameters' ``.grad``
is never touched), and keeps activations and gradients as numpy arrays. The autograd graph can
be kept (one per model, its size measured) so another class or region costs one backward and no
forward (:func:`recapture`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from cam_core.cost import COSTS
from cam_core.engine import targets as tg
from cam_core.engine.graph import RetainedGraph, keep, kept, measure_saved, passes
from cam_core.errors import EmptyTargetError, InputError
from cam_core.model.layers import from_grid, resolve_layers, to_grid, token_layer
from cam_core.model.models import LoadedModel, pad_to_multiple, preprocess, segmentation_output
from cam_core.model.rules import DecisionRule
from cam_core.model.state import preserved_state

Progress = Callable[[float, str], None]
ScoreFn = Callable[[torch.Tensor], torch.Tensor]
_CAPTURE_IDS = itertools.count(1)
# Below this side some smp architectures cannot build their feature pyramid.
SMALL_SIDE = 64
log = logging.getLogger("cam_core.engine")


@contextlib.contextmanager
def capture_outputs(
    model: torch.nn.Module, names: list[str], graph_from_layer: bool = False
) -> Iterator[dict[str, torch.Tensor]]:
    """Forward hooks that keep each named layer's output tensor; always removed.

    Args:
        graph_from_layer: one layer only, for a forward run under ``torch.no_grad()``: its hook
            turns gradients on and hands the rest of the model a detached copy that requires
            grad, so autograd records only what lies between the layer and the output. Its
            gradient is bit-equal to a forward recorded from the input (tested), a 512² capture
            at decoder.blocks.2 costs ~20 % less and keeps 118 MB instead of 297 MB for a
            backward through the kept graph.
    """
    if graph_from_layer and len(names) != 1:
        raise ValueError("graph_from_layer needs exactly one layer: a second may not lie after the first")
    modules = dict(model.named_modules())
    outputs: dict[str, torch.Tensor] = {}
    handles = []
    size: list[int] = []  # the input's H, W: a token layer's grid (layers.to_grid)

    def input_size(module: torch.nn.Module, inputs: tuple[Any, ...]) -> None:
        if inputs and isinstance(inputs[0], torch.Tensor):
            size[:] = [int(inputs[0].shape[-2]), int(inputs[0].shape[-1])]

    try:
        handles.append(model.register_forward_pre_hook(input_size))
        for name in names:
            grid_of = token_layer(modules[name])

            def hook(
                module: torch.nn.Module,
                inputs: tuple[torch.Tensor, ...],
                output: torch.Tensor,
                name: str = name,
                grid_of: tuple[int, int] | None = grid_of,
            ) -> torch.Tensor | None:
                tokens = grid_of is not None and isinstance(output, torch.Tensor) and output.dim() == 3
                if graph_from_layer and isinstance(output, torch.Tensor):
                    torch.set_grad_enabled(True)  # until the caller's no_grad block ends
                    if tokens:
                        assert grid_of is not None
                        grid = to_grid(output.detach(), size[0], size[1], *grid_of).clone().requires_grad_(True)
                        outputs[name] = grid
                        return from_grid(grid, output[:, : grid_of[1]].detach())
                    output = output.detach().requires_grad_(True).clone()  # a clone: in-place ops stay legal
                    outputs[name] = output
                    return output
                if tokens:  # the model goes on from the grid, so a gradient to the grid is recorded
                    assert grid_of is not None
                    grid = to_grid(output, size[0], size[1], *grid_of)
                    outputs[name] = grid
                    return from_grid(grid, output[:, : grid_of[1]])
                outputs[name] = output
                return None

            handles.append(modules[name].register_forward_hook(hook))
        yield outputs
    finally:
        for h in handles:
            h.remove()


@dataclass
class Prediction:
    """Per-class probabilities and the mask, at the image's size."""

    probs: np.ndarray  # C×H×W float32
    mask: np.ndarray  # H×W uint8 class indices, by the decision rule below
    rule: DecisionRule = field(default_factory=DecisionRule)

    _area: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    def area_percent(self) -> np.ndarray:
        """Each class's share of the mask in %; counted once (a 2000² mask: ~20 ms a count, asked
        for by the legend, the alt text and the record of every run)."""
        if self._area is None:
            self._area = np.bincount(self.mask.ravel(), minlength=self.probs.shape[0]) / self.mask.size * 100
        return self._area.copy()


class WindowedMaps(Mapping[str, np.ndarray]):
    """Image-sized layer maps that differ from ``outside`` (or from zeros of its shapes, ``zeros``)
    only in one window's cells: a window's pass over a large image (a click). Each map is built
    on its first read —
    a copy of ``outside`` with the window written in, 64 MB and 0.1 s a layer at 2000² — and a
    method that needs only the window (``MethodInfo.local``) reads ``inside`` without it."""

    def __init__(
        self,
        outside: Mapping[str, np.ndarray],
        inside: dict[str, np.ndarray],
        cells: dict[str, tuple[slice, ...]],
        zeros: bool = False,
    ) -> None:
        self.outside, self.inside, self.cells, self.zeros = outside, inside, cells, zeros
        self._built: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def __getitem__(self, name: str) -> np.ndarray:
        with self._lock:
            if name not in self._built:
                like = self.outside[name]
                full = np.zeros(like.shape, like.dtype) if self.zeros else like.copy()
                full[self.cells[name]] = self.inside[name]
                self._built[name] = full
            return self._built[name]

    def __contains__(self, name: object) -> bool:
        return name in self.inside  # Mapping's own would build the map to answer

    def __iter__(self) -> Iterator[str]:
        return iter(self.inside)

    def __len__(self) -> int:
        return len(self.inside)


@dataclass
class Capture:
    """Everything one forward + backward gives (or a stitched set of tiles, see ``tiling``)."""

    model_name: str
    target: tg.TargetSpec
    layers: list[str]
    padded_shape: tuple[int, int]
    image_shape: tuple[int, int]
    activations: Mapping[str, np.ndarray]
    gradients: Mapping[str, np.ndarray]
    prediction: Prediction
    device: str
    seconds: dict[str, float]
    tiles: int = 1  # > 1: stitched from overlapping tiles
    tiling: str = ""  # how, in words, when tiled
    uid: int = field(default_factory=lambda: next(_CAPTURE_IDS))

    @property
    def rule(self) -> DecisionRule:
        return self.prediction.rule

    def window_part(self, layer: str) -> tuple[np.ndarray, np.ndarray, tuple[slice, ...], tuple[int, int]] | None:
        """``layer``'s activations and gradients in the window, its cells on the image-sized map
        and that map's (h, w), when a window's pass made them (the gradients are 0 everywhere
        else); else None."""
        acts, grads = self.activations, self.gradients
        if isinstance(acts, WindowedMaps) and isinstance(grads, WindowedMaps) and layer in grads.inside:
            lh, lw = grads.outside[layer].shape[-2:]
            return acts.inside[layer], grads.inside[layer], grads.cells[layer], (int(lh), int(lw))
        return None

    def for_target(self, target: tg.TargetSpec, gradients: Mapping[str, np.ndarray], seconds: float) -> Capture:
        """The same forward (mask, activations) with another target's gradients: a new capture
        (its own uid) that cost ``seconds`` of backward."""
        return dataclasses.replace(
            self,
            target=target,
            gradients=gradients,
            seconds={"forward": 0.0, "backward": seconds, "total": seconds},
            uid=next(_CAPTURE_IDS),
        )


def capture_bytes(loaded: LoadedModel, shape: tuple[int, int], names: list[str]) -> int:
    """An upper bound of a capture's memory, known before any pass: the layer maps, the class
    probabilities (float32), the mask and the target's region."""
    from cam_core.model.layers import map_bytes

    h, w = shape
    return map_bytes(loaded, shape, names) + (4 * loaded.num_classes + 3) * h * w


def check_fits(loaded: LoadedModel, shape: tuple[int, int], names: list[str], limit: int, who: str) -> None:
    """Refuse, before any work, a capture larger than ``limit`` bytes, naming what would fit.

    Raises:
        InputError: with the layers that fit and the largest square region that fits.
    """
    need = capture_bytes(loaded, shape, names)
    if need <= limit:
        return
    h, w = shape
    side = int((limit / (need / (h * w))) ** 0.5) // loaded.multiple * loaded.multiple
    fit = _fitting(loaded, shape, names, limit)
    if len(names) > 1 and fit:
        choice = f"at most {len(fit)} of these {len(names)} layers (e.g. {', '.join(fit[:3])}), or "
    elif capture_bytes(loaded, shape, []) < limit:  # the probabilities alone fit: a smaller map may
        choice = "a deeper (lower-resolution) layer, or "
    else:
        choice = ""
    shown = ", ".join(names[:3]) + (", …" if len(names) > 3 else "")
    raise InputError(
        f"explaining {len(names)} layer(s) ({shown}) on a {w}×{h} image needs {need / 2**20:,.0f} MB "
        f"(layer maps and class probabilities); {who} may use {limit / 2**20:,.0f} MB. "
        f"Choose {choice}a region of at most {side}×{side} px"
    )


def _fitting(loaded: LoadedModel, shape: tuple[int, int], names: list[str], limit: int) -> list[str]:
    """The most layers of ``names`` (smallest maps first) whose capture fits ``limit``."""
    from cam_core.model.layers import map_bytes

    chosen: list[str] = []
    for n in sorted(names, key=lambda n: map_bytes(loaded, shape, [n])):
        if capture_bytes(loaded, shape, [*chosen, n]) > limit:
            break
        chosen.append(n)
    return chosen


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def forward(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's segmentation logits, with a message that names the actual failure."""
    w, h = x.shape[-1], x.shape[-2]
    try:
        return segmentation_output(model(x))
    except RuntimeError as exc:
        if _is_oom(exc):
            raise InputError(
                f"out of memory on {x.device} for a {w}×{h} input ({x.shape[0]} at once); "
                "explain a smaller region, use a deeper layer, or free memory (other sessions, a smaller batch)"
            ) from exc
        hint = (
            f"; inputs under {SMALL_SIDE}×{SMALL_SIDE} are too small for some architectures — try a larger image"
            if min(w, h) < SMALL_SIDE
            else "; check that the model takes 3-channel RGB input (its config.json and segcam.json)"
        )
        raise InputError(f"the model failed on a {w}×{h} (padded) input: {str(exc)[:160]}{hint}") from exc


def check_finite(t: torch.Tensor, what: str) -> None:
    if not torch.isfinite(t).all():
        raise InputError(
            f"the model produced NaN/Inf {what} for this image; check the model's weights and preprocessing"
        )


def prepare(loaded: LoadedModel, image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
    """RGB uint8 → normalised, padded tensor on the model's device, plus the original size."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(
            f"expected an H×W×3 uint8 RGB image, got shape {image.shape} {image.dtype}; load it with cam_core.images.load_image"
        )
    x, size = pad_to_multiple(preprocess(image, loaded.spec), loaded.multiple)
    return x.to(loaded.device), size


def probabilities(logits: torch.Tensor, binary: bool) -> torch.Tensor:
    if binary:
        p = torch.sigmoid(logits[:, :1])
        return torch.cat([1 - p, p], dim=1)
    return torch.softmax(logits, dim=1)


def prediction_from_logits(
    loaded: LoadedModel, logits: torch.Tensor, size: tuple[int, int], rule: DecisionRule | None
) -> Prediction:
    h, w = size
    rule = rule or loaded.spec.decision_rule
    probs = probabilities(logits.detach(), loaded.spec.binary)[0, :, :h, :w].float().cpu().numpy()
    return Prediction(probs, rule.decide(probs), rule)


def predict(loaded: LoadedModel, image: np.ndarray, rule: DecisionRule | None = None) -> Prediction:
    """Forward only (no hooks, no gradients): probabilities and mask for the image."""
    x, size = prepare(loaded, image)
    with loaded.lock, preserved_state(loaded.model), torch.no_grad():
        loaded.model.eval()
        logits = forward(loaded.model, x)
        passes(loaded)["forward"] += 1
        log.info("model pass: forward (predict) %s %s", loaded.name, tuple(x.shape))
    check_finite(logits, "logits")
    return prediction_from_logits(loaded, logits, size, rule)


def target_region(
    loaded: LoadedModel, target: tg.TargetSpec, prediction: Prediction
) -> tuple[tg.TargetSpec, np.ndarray]:
    """Resolve an automatic class and build the target's region on the prediction's mask.

    Raises:
        EmptyTargetError: the region has no pixels; carries ``prediction`` so callers can still
            show the mask.
    """
    try:
        target = tg.resolve_auto(target, prediction.mask, loaded.spec.classes)
        return target, tg.region(target, prediction.mask, loaded.spec.classes)
    except EmptyTargetError as exc:
        exc.prediction = prediction
        raise


def score_function(
    loaded: LoadedModel,
    target: tg.TargetSpec,
    prediction: Prediction,
    padded_shape: tuple[int, ...],
    finer: bool = False,
    weights: np.ndarray | None = None,
) -> tuple[tg.TargetSpec, ScoreFn]:
    """Resolve an automatic class, build the region (zero over the padding) and its score callable.

    Args:
        weights: optional per-pixel weights of the region (image size): tiles use their share of
            each pixel, so the tiles' scores add up to the whole image's score.

    Raises:
        EmptyTargetError: the region has no pixels; carries ``prediction`` so callers can still
            show the mask.
    """
    target, reg = target_region(loaded, target, prediction)
    if weights is not None:
        reg = reg * weights
    padded = np.zeros(tuple(padded_shape[-2:]), dtype=np.float32)
    h, w = prediction.mask.shape
    padded[:h, :w] = reg
    assert target.class_index is not None
    return target, tg.build(target, padded, loaded.spec.binary, loaded.num_classes, finer=finer)


class _ForwardClock:
    """A capture's forward timed for the cost model: started with the model's lock held (a wait
    for another session's pass is not the model's speed), with its CPU time when torch runs on the
    calling thread alone (see :meth:`CostModel.observe_forward`)."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.thread_time()

    def observe(self, loaded: LoadedModel, x: torch.Tensor) -> None:
        cpu = time.thread_time() - self.cpu if torch.get_num_threads() == 1 else None
        megapixels = int(x.shape[-2]) * int(x.shape[-1]) / 1e6
        COSTS.observe_forward(loaded.name, megapixels, time.perf_counter() - self.wall, cpu)


def capture(
    loaded: LoadedModel,
    image: np.ndarray,
    target: tg.TargetSpec,
    layers: list[str] | str | None = None,
    rule: DecisionRule | None = None,
    keep_graph: bool = False,
    region_weights: np.ndarray | None = None,
) -> Capture:
    """One forward and one backward with hooks on every requested layer.

    Args:
        rule: the decision rule of the mask (default: the model's); kept on the capture, so a
            later :func:`recapture` or fallback uses the same rule.
        keep_graph: keep the autograd graph (one per model, replacing the previous one) so
            :func:`recapture` can explain another class or region with one backward and no
            forward. Its size is measured (``graph.kept(loaded).nbytes``) for memory budgets.
        region_weights: per-pixel weights of the target region (tiling).

    Raises:
        EmptyTargetError: the target region is empty (e.g. the class is predicted nowhere).
        UnknownNameError / InputError: a layer does not exist or is not spatial.
    """
    names = resolve_layers(loaded, layers)
    x, size = prepare(loaded, image)
    model = loaded.model
    t0 = time.perf_counter()
    from_layer = len(names) == 1  # autograd records from the layer on (see capture_outputs)
    with (
        loaded.lock,
        preserved_state(model),
        capture_outputs(model, names, graph_from_layer=from_layer) as outs,
        torch.enable_grad(),
        measure_saved(keep_graph) as saved,
    ):
        model.eval()
        keep(loaded, None)  # free the previous graph before building up another
        clock = _ForwardClock()
        # Several layers: the input requires grad so every hooked output is in the graph, even
        # when a user's model has frozen parameters; autograd.grad leaves parameters' .grad alone.
        x = x.detach().requires_grad_(not from_layer)
        with torch.set_grad_enabled(not from_layer):
            logits = forward(model, x)
        if not logits.requires_grad:  # the layer gave no tensor to record from: from the input
            logits = forward(model, x.requires_grad_(True))
        passes(loaded)["forward"] += 1
        check_finite(logits, "logits")
        t_forward = time.perf_counter() - t0
        clock.observe(loaded, x)
        prediction = prediction_from_logits(loaded, logits, size, rule)
        target, score_fn = score_function(loaded, target, prediction, x.shape, weights=region_weights)
        score = score_fn(logits[0])
        t1 = time.perf_counter()
        grads = torch.autograd.grad(score, [outs[n] for n in names], allow_unused=True, retain_graph=keep_graph)
        passes(loaded)["backward"] += 1
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
            padded_shape=(int(x.shape[-2]), int(x.shape[-1])),
            image_shape=size,
            activations=activations,
            gradients=gradients,
            prediction=prediction,
            device=str(loaded.device),
            seconds={"forward": t_forward, "backward": t_backward, "total": time.perf_counter() - t0},
        )
        if keep_graph:
            keep(loaded, RetainedGraph(cap.uid, logits, {n: outs[n] for n in names}, saved[0]))
    return cap


def recapture(loaded: LoadedModel, cap: Capture, target: tg.TargetSpec, image: np.ndarray | None = None) -> Capture:
    """Gradients for another target on the same image: one backward through the kept graph.

    Falls back to a full :func:`capture` with the same layers and decision rule (needs
    ``image``) when the model's kept graph belongs to another capture.
    """
    with loaded.lock:
        graph = kept(loaded)
        if graph is not None and graph.capture_id == cap.uid:
            t0 = time.perf_counter()
            target, score_fn = score_function(loaded, target, cap.prediction, cap.padded_shape)
            score = score_fn(graph.logits[0])
            with torch.enable_grad():
                grads = torch.autograd.grad(
                    score, [graph.outputs[n] for n in cap.layers], allow_unused=True, retain_graph=True
                )
            passes(loaded)["backward"] += 1
            log.info("model pass: backward only (recapture) %s", loaded.name)
            gradients = {
                n: np.zeros_like(cap.activations[n]) if g is None else g.detach().float().cpu().numpy()
                for n, g in zip(cap.layers, grads)
            }
            new = cap.for_target(target, gradients, time.perf_counter() - t0)
            graph.capture_id = new.uid  # the graph now serves the newest capture of this image
            return new
    if image is None:
        raise InputError("the kept graph was replaced by another capture; pass the image to capture again")
    passes(loaded)["fallback"] += 1
    log.info("model pass: recapture fell back to a full pass (another capture's graph is kept) %s", loaded.name)
    return capture(loaded, image, target, cap.layers, rule=cap.rule, keep_graph=True)
