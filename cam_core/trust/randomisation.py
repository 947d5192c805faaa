"""Sanity (Adebayo et al., NeurIPS 2018): cascading randomisation of a private copy of the model,
block by block from the head down, and the maps it gives; the shared model is never touched."""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch

from cam_core.engine import targets as tg
from cam_core.engine.capturing import (
    Capture,
    Prediction,
    Progress,
    capture,
    forward,
    prepare,
    target_region,
)
from cam_core.engine.methods import MethodInfo
from cam_core.engine.passes import private_copy
from cam_core.errors import InputError
from cam_core.limits import LARGE_SIDE, is_large
from cam_core.model.models import LoadedModel
from cam_core.model.rules import DecisionRule
from cam_core.runtime import denormals_flushed
from cam_core.trust.protocol import SANITY_MAX_RHO, Explainer
from cam_core.trust.similarity import spearman, ssim

# One place for every constant of the checks.


@dataclass
class Sanity:
    """Cascading randomisation of one method at one layer: correlations step by step."""

    method: str
    layer: str
    steps: list[str]  # the block randomised at each step (cumulative, head first)
    rho: list[float]  # Spearman ρ, trained vs randomised map, after each step
    ssim: list[float]

    @property
    def final_rho(self) -> float:
        return self.rho[-1]

    @property
    def passed(self) -> bool:
        return abs(self.final_rho) < SANITY_MAX_RHO

    def describe(self) -> str:
        """The verdict in words (Markdown), as the app shows it."""
        meaning = (
            "the map depends on what the model learned."
            if self.passed
            else "the map shows the image or the target, not the model."
        )
        return (
            f"**Sanity** {'passes' if self.passed else 'FAILS'} — rank correlation ρ = {self.final_rho:+.2f} "
            "between this map and the same method on a fully randomised copy of the model "
            f"(SSIM {self.ssim[-1]:.2f}; fails at |ρ| ≥ {SANITY_MAX_RHO}): {meaning}"
        )


def _block_of(name: str, depth: int) -> str:
    return ".".join(name.split(".")[:depth]) if name.count(".") >= depth else name


def count_blocks(model: torch.nn.Module, depth: int = 3) -> int:
    """How many cascade steps :func:`cascade_blocks` will make (no forward; for estimates)."""
    return len(
        {_block_of(n, depth) for n, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))}
    )


def cascade_blocks(model: torch.nn.Module, x: torch.Tensor, depth: int = 3) -> list[tuple[str, list[str]]]:
    """The model's parameter blocks in reverse execution order (head first), for cascading.

    A block is a module ``depth`` levels down the name tree (e.g. ``decoder.blocks.3``,
    ``encoder.model.s2``, ``segmentation_head``); the order comes from a forward pass, so it holds
    for any architecture, not just the ones we know.
    """
    order: list[str] = []
    handles = []
    for name, module in model.named_modules():
        if any(True for _ in module.parameters(recurse=False)):
            handles.append(module.register_forward_hook(lambda m, i, o, name=name: order.append(name)))
    try:
        with torch.no_grad():
            forward(model, x)
    finally:
        for hd in handles:
            hd.remove()
    blocks: dict[str, list[str]] = {}
    for name in order:
        key = _block_of(name, depth)
        blocks.setdefault(key, [])
        if name not in blocks[key]:
            blocks[key].append(name)
    return list(reversed(list(blocks.items())))


@torch.no_grad()
def randomise(model: torch.nn.Module, names: list[str], generator: torch.Generator) -> None:
    """Re-draw the parameters of the named modules from a normal with each tensor's mean and std.

    Keeping each tensor's scale keeps activations finite through a randomised network; the
    knowledge in the weights (their arrangement) is gone.
    """
    modules = dict(model.named_modules())
    for name in names:
        for p in modules[name].parameters(recurse=False):
            if p.numel() < 2:
                continue
            std = float(p.float().std()) or 1.0
            noise = torch.randn(p.shape, generator=generator, dtype=torch.float32).to(p.device, p.dtype)
            p.copy_(noise * std + float(p.float().mean()))


def copy_of(loaded: LoadedModel) -> LoadedModel:
    """A private copy to randomise: its own weights and lock (and so its own engine state: no kept
    graph, its own pass counters); the shared one untouched."""
    twin = private_copy(loaded.model, loaded.lock)
    return dataclasses.replace(loaded, model=twin, lock=threading.Lock())


def sanity(
    loaded: LoadedModel,
    image: np.ndarray,
    target: tg.TargetSpec,
    explainers: dict[tuple[str, str], Explainer],
    *,
    rule: DecisionRule | None = None,
    cascade: bool = True,
    seed: int = 0,
    progress: Progress | None = None,
    layers: list[str] | None = None,
    methods: list[MethodInfo] | None = None,
    eigen_smooth: bool = False,
    cap: Capture | None = None,
) -> list[Sanity]:
    """Cascading model randomisation for (method, layer) explainers, on a private copy.

    Args:
        explainers: (method name, layer) → explainer; :func:`method_explainer` makes one from the
            registry, :data:`REFERENCE_EXPLAINERS` holds the known failing cases.
        layers, methods: one-pass registry methods at these layers, computed from *one* capture
            per randomisation step for all of them (cheaper than an explainer each).
        cascade: every block from the head down (one step per block) or everything at once.
        cap: the trained model's capture of this image and target, when the caller has one.

    The target region is the trained model's (its prediction), so both maps explain the same
    pixels; only the weights differ.
    """
    from cam_core import engine

    if is_large(image.shape[:2]):
        raise InputError(
            f"the sanity check explains the image once per randomisation step; use an image of at most {LARGE_SIDE}×{LARGE_SIDE}"
        )
    layers, methods = layers or [], [m for m in (methods or []) if m.from_cache]
    t0 = time.perf_counter()
    if cap is None and layers and methods:
        cap = capture(loaded, image, target, layers, rule=rule)
    prediction = cap.prediction if cap is not None else engine.predict(loaded, image, rule)
    target, reg = target_region(loaded, target, prediction)
    fixed = tg.TargetSpec("mask", target.class_index, reg > 0)

    def all_maps(model: LoadedModel, pred: Prediction, c: engine.Capture | None) -> dict[tuple[str, str], np.ndarray]:
        out = {}
        if layers and methods:
            c = c or capture(model, image, fixed, layers, rule=pred.rule)
            for layer in layers:
                for info in methods:
                    out[(info.name, layer)] = engine.cam_from_capture(c, info, layer, eigen_smooth).cam
        for key, fn in explainers.items():
            out[key] = fn(model, image, fixed, pred)
        return out

    trained = all_maps(loaded, prediction, cap)
    # randomised activations underflow into slow denormals otherwise; scoped to this check
    with denormals_flushed():
        twin = copy_of(loaded)
        x, _ = prepare(twin, image)
        blocks = cascade_blocks(twin.model, x)
        if not cascade:
            blocks = [("everything", [n for _, names in blocks for n in names])]
        gen = torch.Generator().manual_seed(seed)
        results = {key: Sanity(key[0], key[1], [], [], []) for key in trained}
        for i, (block, names) in enumerate(blocks):
            randomise(twin.model, names, gen)
            randomised = all_maps(twin, prediction, None)
            for key, m in randomised.items():
                r = results[key]
                r.steps.append(block)
                r.rho.append(spearman(trained[key], m))
                r.ssim.append(ssim(trained[key], m))
            if progress is not None:
                spent = time.perf_counter() - t0
                progress(
                    (i + 1) / len(blocks),
                    f"sanity: randomised {block} ({i + 1}/{len(blocks)}), ~{spent / (i + 1) * (len(blocks) - i - 1):.0f} s left",
                )
        del twin
    return list(results.values())
