"""Methods with passes of their own, run on a private copy of the model.

ScoreCAM and AblationCAM run a forward per channel (minutes on a CPU at deep layers); holding
the shared model's lock for that long would make every other session wait. Each run therefore
takes the lock only to copy the model, then works on the copy: the shared model is never
touched, whatever the method does to its copy (grad-cam's ``eval()``, ``.grad`` accumulation,
an ``AblationLayer`` left behind by an error), and other sessions keep computing meanwhile.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from cam_core.engine import cammath
from cam_core.engine.capturing import Progress, ScoreFn, capture_outputs, forward
from cam_core.errors import InputError
from cam_core.model.layers import copy_token_layers, reshape_transform

FAST_SCORECAM_K = 32


@dataclass
class PassRun:
    """What a runner needs: a private model copy, the padded input, the layer and the target."""

    model: torch.nn.Module
    x: torch.Tensor
    layer: str
    channels: int
    grad_cam_class: type | None
    build: Builder
    target_fn: ScoreFn
    batch_size: int
    expected_forwards: int
    progress: Progress | None
    eigen_smooth: bool
    aug_smooth: bool
    label: str
    forwards: int = 0
    notes: list[str] = field(default_factory=list)


# (grad-cam class, model, target layers, batch size, reshape_transform) -> a grad-cam method object
Builder = Callable[[type, torch.nn.Module, list[torch.nn.Module], int, Any], Any]
# A run -> (cam 1×H×W normalised as grad-cam returns it, cam_raw 1×H×W)
Runner = Callable[[PassRun], tuple[np.ndarray, np.ndarray]]


def private_copy(model: torch.nn.Module, lock: Any) -> torch.nn.Module:
    """A deep copy made under the model's lock, in eval mode; the caller may do anything to it."""
    with lock:
        twin = copy.deepcopy(model)
    copy_token_layers(model, twin)
    return twin.eval()


def default_batch_size(device: torch.device, image_pixels: int) -> int:
    """Images per forward for ScoreCAM/AblationCAM: fits ~1 GiB of inputs on a CPU, more on a GPU."""
    budget = (8 if device.type == "cuda" else 1) * 2**30
    return int(max(1, min(64, budget // max(1, image_pixels * 3 * 4 * 8))))


@contextlib.contextmanager
def _progress_hook(run: PassRun) -> Iterator[None]:
    """Report each model forward as progress; the callback may raise ``Cancelled``."""

    def hook(module: torch.nn.Module, inputs: Any) -> None:
        run.forwards += 1
        if run.progress is not None:
            run.progress(
                min(run.forwards / max(run.expected_forwards, 1), 1.0),
                f"{run.label}: forward {run.forwards} of ~{run.expected_forwards}",
            )

    handle = run.model.register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


class _AblationLayer:
    """grad-cam's AblationLayer, callable the way smp calls decoder blocks (built lazily).

    smp's Unet calls ``block(x, skip_connection=...)``; grad-cam's layer takes only ``x`` and
    raises. The ablated output comes from the stored activations, so the extra arguments are
    not needed. A fresh one per run also avoids grad-cam's shared mutable default instance.
    """

    def __new__(cls) -> Any:
        from pytorch_grad_cam import AblationLayer

        class SmpAblationLayer(AblationLayer):
            def __call__(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
                return super().__call__(x)

        return SmpAblationLayer()


def build_plain(
    cls: type, model: torch.nn.Module, layers: list[torch.nn.Module], batch_size: int, reshape: Any = None
) -> Any:
    return cls(model, layers, reshape_transform=reshape)


def build_scorecam(
    cls: type, model: torch.nn.Module, layers: list[torch.nn.Module], batch_size: int, reshape: Any = None
) -> Any:
    obj = cls(model, layers, reshape_transform=reshape)
    obj.batch_size = batch_size
    return obj


def build_ablation(
    cls: type, model: torch.nn.Module, layers: list[torch.nn.Module], batch_size: int, reshape: Any = None
) -> Any:
    if reshape is not None:
        raise InputError("ablation on a token layer (B×N×C) is not supported; pick a gradient method or a map layer")
    return cls(model, layers, batch_size=batch_size, ablation_layer=_AblationLayer())


def run_grad_cam(run: PassRun) -> tuple[np.ndarray, np.ndarray]:
    """grad-cam's own class on the private copy; its hooks released in ``finally``."""
    assert run.grad_cam_class is not None
    module = dict(run.model.named_modules())[run.layer]
    with _progress_hook(run):
        reshape = reshape_transform(module, tuple(run.x.shape))
        cam_obj = run.build(run.grad_cam_class, run.model, [module], run.batch_size, reshape)
        try:
            kwargs: dict[str, bool] = {"eigen_smooth": run.eigen_smooth}
            if run.aug_smooth:
                kwargs["aug_smooth"] = True
            with contextlib.redirect_stdout(None):
                cam = cam_obj(run.x, [run.target_fn], **kwargs)
        finally:
            inner = getattr(cam_obj, "base_cam", None) or cam_obj
            inner.activations_and_grads.release()
    run.notes.append("cam_raw equals cam: grad-cam does not expose the un-normalised map for this method")
    return cam, cam


def run_scorecam_topk(run: PassRun) -> tuple[np.ndarray, np.ndarray]:
    """ScoreCAM restricted to the k channels with the most activation energy (sum of squares).

    Same masking and scoring as grad-cam's ScoreCAM (bilinear upsampling with aligned corners,
    per-channel min-max, softmax of the target scores); the channels left out get weight 0.
    """
    model, x, k = run.model, run.x, FAST_SCORECAM_K
    with capture_outputs(model, [run.layer]) as outs, torch.no_grad():
        forward(model, x)
        acts = outs[run.layer].detach()
    run.forwards += 1
    energy = acts[0].float().pow(2).sum(dim=(1, 2))
    top = torch.argsort(energy, descending=True)[: min(k, acts.shape[1])]
    sel = acts[:, top]
    with torch.no_grad():
        up = torch.nn.UpsamplingBilinear2d(size=(int(x.shape[-2]), int(x.shape[-1])))(sel)[0]
        flat = up.view(up.shape[0], -1)
        lo, hi = flat.min(1)[0][:, None, None], flat.max(1)[0][:, None, None]
        up = (up - lo) / (hi - lo + 1e-8)
        scores: list[float] = []
        bs = run.batch_size
        for i in range(0, up.shape[0], bs):
            out = forward(model, x * up[i : i + bs, None])
            run.forwards += 1
            scores += [float(run.target_fn(o)) for o in out]
            if run.progress:
                done = min(i + bs, len(top))
                run.progress(done / len(top), f"{run.label}: {done} of {len(top)} channels")
        weights = torch.softmax(torch.tensor(scores), dim=0).numpy()
    raw = (weights[:, None, None] * sel[0].float().cpu().numpy()).sum(axis=0)[None]
    size_wh = (int(x.shape[-1]), int(x.shape[-2]))
    run.notes.append(
        f"approximation: ScoreCAM on the top {min(k, run.channels)} of {run.channels} channels by activation energy"
    )
    return cammath.normalise(raw, size_wh), cammath.raw_full(raw, size_wh)[None]


def expected_batches(channels: int, batch_size: int) -> int:
    return 1 + math.ceil(channels / max(batch_size, 1))
