"""Sanity (Adebayo et al., NeurIPS 2018): cascading randomisation of a private copy of the model,
block by block from the head down, and the maps it gives; the shared model is never touched."""

from __future__ import annotations

import dataclasses
import math
import threading
from dataclasses import dataclass, field

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
from cam_core.trust.protocol import RAW_VIEWS, SANITY_MAX_RHO, SANITY_VIEWS, Explainer
from cam_core.trust.similarity import constant, rho_text, spearman, ssim

# One place for every constant of the checks.


@dataclass
class Comparison:
    """One view of the trained vs randomised maps (see :data:`SANITY_VIEWS`), step by step."""

    rho: list[float] = field(default_factory=list)  # NaN where the randomised map is constant
    ssim: list[float] = field(default_factory=list)
    constant_from: int | None = None  # the first step from which the randomised map stays constant

    def add(self, trained: np.ndarray, randomised: np.ndarray) -> None:
        self.rho.append(spearman(trained, randomised))
        self.ssim.append(ssim(trained, randomised))
        if not constant(randomised):
            self.constant_from = None
        elif self.constant_from is None:
            self.constant_from = len(self.rho) - 1

    @property
    def final(self) -> float:
        return self.rho[-1] if self.rho else float("nan")

    def text(self) -> str:
        """The final ρ as the app writes it ("constant" where there is none)."""
        return rho_text(self.final)

    @property
    def degenerate(self) -> bool:
        return math.isnan(self.final)

    @property
    def correlated(self) -> bool:
        return not self.degenerate and abs(self.final) >= SANITY_MAX_RHO


def _views() -> dict[str, Comparison]:
    return {v: Comparison() for v in SANITY_VIEWS}


@dataclass
class Sanity:
    """Cascading randomisation of one method at one layer: each view's correlations step by step,
    and the verdict of :data:`SANITY_RULE`."""

    method: str
    layer: str
    steps: list[str]  # the block randomised at each step (cumulative, head first)
    views: dict[str, Comparison] = field(default_factory=_views)

    @property
    def rho(self) -> list[float]:  # the displayed map's, as the app's table shows it
        return self.views["shown"].rho

    @property
    def ssim(self) -> list[float]:
        return self.views["shown"].ssim

    @property
    def final_rho(self) -> float:
        return self.views["shown"].final

    @property
    def verdict(self) -> str:
        """``pass``, ``fail`` or ``degenerate`` (:data:`SANITY_RULE`, the one place it is decided)."""
        if any(c.correlated for c in self.views.values()):
            return "fail"
        if all(self.views[v].degenerate for v in RAW_VIEWS):
            return "degenerate"
        return "pass"

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    def collapsed_at(self, view: str = "shown") -> str | None:
        """The block whose randomisation left the view's map constant for good (None: it never did)."""
        i = self.views[view].constant_from
        return None if i is None else self.steps[i]

    def describe(self) -> str:
        """The verdict in words (Markdown), as the app shows it."""
        rhos = ", ".join(f"{v} {c.text()}" for v, c in self.views.items())
        word = {"pass": "passes", "fail": "FAILS", "degenerate": "cannot judge this map"}[self.verdict]
        meaning = {
            "pass": "the map depends on what the model learned.",
            "fail": "the map shows the image or the target, not the model.",
            "degenerate": "the randomised model's map is constant, so it says nothing about the weights.",
        }[self.verdict]
        notes = [
            f"the {v} map of the randomised model is constant from step '{self.collapsed_at(v)}'"
            for v in SANITY_VIEWS
            if self.views[v].degenerate and self.collapsed_at(v) is not None
        ]
        note = f" ({'; '.join(notes)}: judged on the views that vary)" if notes and self.verdict == "pass" else ""
        return (
            f"**Sanity** {word} — rank correlation ρ between this map and the same method on a fully "
            f"randomised copy of the model: {rhos} (fails at |ρ| ≥ {SANITY_MAX_RHO}): {meaning}{note}"
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


@dataclass
class _Maps:
    """Every map a sanity check compares, in each of :data:`SANITY_VIEWS`, for one model (the
    trained one, then its randomised copy at each step): the one-pass methods from one capture,
    the explainers by their own passes."""

    image: np.ndarray
    fixed: tg.TargetSpec  # the trained model's region: both models explain the same pixels
    layers: list[str]
    methods: list[MethodInfo]
    explainers: dict[tuple[str, str], Explainer]
    eigen_smooth: bool

    def __call__(
        self, model: LoadedModel, pred: Prediction, c: Capture | None
    ) -> dict[tuple[str, str], dict[str, np.ndarray]]:
        from cam_core import engine

        out: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
        if self.layers and self.methods:
            c = c or capture(model, self.image, self.fixed, self.layers, rule=pred.rule)
            for layer in self.layers:
                for info in self.methods:
                    res = engine.cam_from_capture(c, info, layer, self.eigen_smooth)
                    out[(info.name, layer)] = (res.cam, res.cam_raw)
        for key, fn in self.explainers.items():
            made = fn(model, self.image, self.fixed, pred)
            out[key] = made if isinstance(made, tuple) else (made, made)  # a plain map is its own raw map
        return {key: {"raw": raw, "|raw|": np.abs(raw), "shown": shown} for key, (shown, raw) in out.items()}


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
    if cap is None and layers and methods:
        cap = capture(loaded, image, target, layers, rule=rule)
    prediction = cap.prediction if cap is not None else engine.predict(loaded, image, rule)
    target, reg = target_region(loaded, target, prediction)
    fixed = tg.TargetSpec("mask", target.class_index, reg > 0)

    maps = _Maps(image, fixed, layers, methods, explainers, eigen_smooth)
    trained = maps(loaded, prediction, cap)
    # randomised activations underflow into slow denormals otherwise; scoped to this check
    with denormals_flushed():
        twin = copy_of(loaded)
        x, _ = prepare(twin, image)
        blocks = cascade_blocks(twin.model, x)
        if not cascade:
            blocks = [("everything", [n for _, names in blocks for n in names])]
        gen = torch.Generator().manual_seed(seed)
        results = {key: Sanity(key[0], key[1], []) for key in trained}
        for i, (block, names) in enumerate(blocks):
            randomise(twin.model, names, gen)
            randomised = maps(twin, prediction, None)
            for key, views in randomised.items():
                r = results[key]
                r.steps.append(block)
                for view, m in views.items():
                    r.views[view].add(trained[key][view], m)
            if progress is not None:  # the time left is the caller's to say, once
                progress((i + 1) / len(blocks), f"sanity: randomised {block} ({i + 1}/{len(blocks)})")
        del twin
    return list(results.values())
