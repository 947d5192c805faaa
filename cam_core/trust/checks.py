"""Can I believe this map? Faithfulness against random, and the model-randomisation sanity check.

Every CAM looks convincing. Two checks tell a faithful map from a pretty one:

* **Faithfulness** (:func:`faithfulness`): remove the pixels the map calls most important, 5 % at a
  time, and watch the target's score (the class's mean probability over the target region) fall
  (*deletion*); reveal them one step at a time on a blurred copy and watch it rise (*insertion*).
  The score is the insertion area minus the deletion area (−1..1, higher = more faithful).
  Removed pixels are taken from a heavily blurred copy of the image, never a constant colour (a
  grey square is itself out of distribution and moves the score for the wrong reason). Ties in a
  map are broken at random before ranking: after ReLU most of a map can be exactly 0, and a fixed
  tie order would rank those pixels by their position, not by the map. A score only means
  something next to two references computed the same way on the same image and target:
  ``RandomCAM`` at the same layer (mean of :data:`RANDOM_SEEDS` seeds) and the target region itself
  used as a map — in segmentation a map must beat "the mask you asked about" to show anything the
  mask does not.
  grad-cam's own metrics are not used: ``CamMultImageConfidenceChange`` and ``DropInConfidence``
  multiply the image by the map, which rewards overlap with the target region (the target mask
  itself outranks every method), and its ROAD removes percentiles of the map, which with tied
  zeros removes most of the image in one step (a 98 %-zero random map scores +0.87).
* **Sanity** (:func:`sanity`, Adebayo et al., NeurIPS 2018): re-draw the weights of a *copy* of the
  model from the head down through the decoder and the encoder (cascading), explain the same
  target with the randomised copy, and compare the maps (Spearman rank correlation and SSIM). A map
  that stays the same explains the image or the target mask, not the model, and fails. The shared
  model is never touched.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch

from cam_core.engine import cammath
from cam_core.engine import targets as tg
from cam_core.engine.capturing import (
    Capture,
    Prediction,
    Progress,
    capture,
    forward,
    prepare,
    probabilities,
    target_region,
)
from cam_core.engine.graph import passes as passes_of
from cam_core.engine.methods import MethodInfo
from cam_core.engine.passes import default_batch_size, private_copy
from cam_core.errors import Cancelled, InputError
from cam_core.limits import LARGE_SIDE, is_large
from cam_core.model.models import LoadedModel
from cam_core.model.rules import DecisionRule
from cam_core.model.state import preserved_state
from cam_core.runtime import denormals_flushed

log = logging.getLogger("cam_core.engine")  # every model pass is logged there
# One place for every constant of the checks.
FAITHFULNESS_STEPS = 20  # 5 % of the pixels per step
# RandomCAM maps averaged for the random baseline. Random maps vary a lot (sd ~0.2-0.5 on the
# sample tiles: random combinations of learned channels can still outline nuclei); with 3 fixed
# seeds the same unlucky draws served every tile and RandomCAM itself "beat random" on 6/7 tiles.
RANDOM_SEEDS = 5
BLUR_SIGMA = 8.0  # px: removes nuclear detail at 40× (nuclei are ~10-30 px wide)
MAX_BATCH = 16  # perturbed images per model call (the lock is held for one call at a time)
# A map fails sanity when |Spearman ρ| between the trained and the fully randomised model's map is
# at least this: it has kept its ranking of the pixels although the model's knowledge is gone.
SANITY_MAX_RHO = 0.5
# Beating a reference means scoring at least this much above it (scores are in −1..1).
MARGIN = 0.02

Explainer = Callable[[LoadedModel, np.ndarray, tg.TargetSpec, Prediction], np.ndarray]


# ---------------------------------------------------------------------------- faithfulness


@dataclass
class Faithfulness:
    """Deletion and insertion curves of one map and the single number from them."""

    fractions: list[float]
    deletion: list[float]  # target score after removing the top fraction of pixels
    insertion: list[float]  # target score after revealing the top fraction on the blurred copy

    @property
    def deletion_auc(self) -> float:
        return float(np.trapezoid(self.deletion, self.fractions))

    @property
    def insertion_auc(self) -> float:
        return float(np.trapezoid(self.insertion, self.fractions))

    @property
    def score(self) -> float:
        """Insertion AUC − deletion AUC: −1..1, 0 for a map that ranks pixels no better than chance."""
        return self.insertion_auc - self.deletion_auc


def forwards(maps: int, steps: int = FAITHFULNESS_STEPS) -> int:
    """Model forwards that :func:`faithfulness` runs for this many maps (for estimates)."""
    return 2 + 2 * (steps - 1) * maps


def estimate_seconds(
    model: torch.nn.Module,
    layers: list[str],
    maps: int,
    references: dict[str, Any],
    cascade: bool,
    forward_s: float,
) -> float:
    """The cost model of :func:`trust`, before it runs: the faithfulness forwards of ``maps`` maps
    plus the reference curves not yet in ``references`` (the random maps of each layer, the
    target mask), and the sanity steps (one capture each: a forward and a backward, together
    1.3–2× the forward here; the whole cascade for one-pass methods, one step otherwise)."""
    needing = {la for la in layers if f"random{RANDOM_SEEDS - 1}@{la}" not in references}
    total_maps = maps + RANDOM_SEEDS * len(needing) + ("target mask" not in references)
    steps = count_blocks(model) if cascade else 1
    return forwards(total_maps) * forward_s + steps * 2 * forward_s


def rank_pixels(cam: np.ndarray, seed: int = 0) -> np.ndarray:
    """Pixel indices from most to least important, ties broken at random (not by position).

    The tie-breaking draw is seeded by ``seed`` and the map itself, so a map ranks the same in
    any company (one generator shared by the maps of a call made a map's score depend on which
    other maps were scored with it: +0.0106 alone, +0.0098 beside another).
    """
    flat = np.asarray(cam, dtype=np.float64).ravel()
    digest = hashlib.sha256(np.ascontiguousarray(cam, dtype=np.float32).tobytes()).digest()
    rng = np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])
    return np.lexsort((rng.random(flat.size), -flat))


def blurred(image: np.ndarray) -> np.ndarray:
    """The reference the perturbations move towards: the image without its structure."""
    return np.asarray(cv2.GaussianBlur(image, (0, 0), BLUR_SIGMA), dtype=image.dtype)


def _class_score(loaded: LoadedModel, logits: torch.Tensor, cls: int, region: torch.Tensor) -> torch.Tensor:
    """Mean probability of the class over the region, one number per image in the batch."""
    h, w = region.shape
    probs = probabilities(logits, loaded.spec.binary)[:, cls, :h, :w]
    return (probs * region).sum(dim=(1, 2)) / region.sum()


def _batched_scores(
    loaded: LoadedModel,
    inputs: Iterator[torch.Tensor],
    total: int,
    cls: int,
    region: torch.Tensor,
    progress: Progress | None,
    label: str,
) -> list[float]:
    """Target scores of a stream of input batches; the model's lock is held one batch at a time."""
    scores: list[float] = []
    t0 = time.perf_counter()
    for xb in inputs:
        with loaded.lock, preserved_state(loaded.model), torch.no_grad():
            loaded.model.eval()
            logits = forward(loaded.model, xb)
            passes_of(loaded)["forward"] += xb.shape[0]
            log.info("model pass: forward ×%d (trust) %s %s", xb.shape[0], loaded.name, tuple(xb.shape[1:]))
        scores.extend(_class_score(loaded, logits.float(), cls, region).cpu().tolist())
        if progress is not None:
            done = len(scores)
            rate = (time.perf_counter() - t0) / done
            progress(done / total, f"{label}: {done}/{total} perturbed images, ~{rate * (total - done):.0f} s left")
    return scores


def faithfulness(
    loaded: LoadedModel,
    image: np.ndarray,
    target: tg.TargetSpec,
    prediction: Prediction,
    maps: dict[str, np.ndarray],
    *,
    steps: int = FAITHFULNESS_STEPS,
    seed: int = 0,
    batch_size: int | None = None,
    progress: Progress | None = None,
) -> dict[str, Faithfulness]:
    """Deletion/insertion faithfulness of several maps of one target, batched through the model.

    Args:
        target: the target the maps explain (class resolved or automatic); its region is built on
            ``prediction``'s mask, as for the CAM itself.
        maps: name → H×W map (any scale; only the order of the pixels matters).
        progress: called with (fraction, text); may raise :class:`Cancelled`.

    Returns:
        name → curves; 2 + 2·(steps − 1) model forwards per map plus 2 shared.
    """
    if is_large(image.shape[:2]):
        raise InputError(
            "faithfulness runs dozens of forwards of the whole image; explain a region of at most "
            f"{LARGE_SIDE}×{LARGE_SIDE} pixels (crop the image or use a rectangle target on a crop)"
        )
    target, reg = target_region(loaded, target, prediction)
    assert target.class_index is not None
    h, w = image.shape[:2]
    for name, m in maps.items():
        if m.shape != (h, w):
            raise InputError(f"map {name!r} is {m.shape[1]}×{m.shape[0]}; the image is {w}×{h}")
    x_orig, _ = prepare(loaded, image)
    x_blur, _ = prepare(loaded, blurred(image))
    region = torch.from_numpy(reg).to(loaded.device)
    fractions = [i / steps for i in range(steps + 1)]
    counts = [round(f * h * w) for f in fractions]
    orders = {name: rank_pixels(m, seed) for name, m in maps.items()}
    # Every (map, kind, step) with 0 < step < steps; the two ends are the same for every map.
    jobs = [(name, kind, i) for name in maps for kind in ("deletion", "insertion") for i in range(1, steps)]
    bs = min(MAX_BATCH, batch_size or default_batch_size(loaded.device, int(x_orig.shape[-1] * x_orig.shape[-2])))

    def batches() -> Iterator[torch.Tensor]:
        yield torch.cat([x_orig, x_blur])
        for start in range(0, len(jobs), bs):
            chunk = []
            for name, kind, i in jobs[start : start + bs]:
                sel = np.zeros(h * w, dtype=bool)
                sel[orders[name][: counts[i]]] = True
                top = torch.zeros(x_orig.shape[-2:], dtype=torch.bool)
                top[:h, :w] = torch.from_numpy(sel.reshape(h, w))
                top = top.to(loaded.device)
                # deletion: the top pixels come from the blurred copy; insertion: only they are real
                chunk.append(
                    torch.where(top, x_blur, x_orig) if kind == "deletion" else torch.where(top, x_orig, x_blur)
                )
            yield torch.cat(chunk)

    scores = _batched_scores(loaded, batches(), 2 + len(jobs), target.class_index, region, progress, "faithfulness")
    s_orig, s_blur = scores[0], scores[1]
    by_job = dict(zip(jobs, scores[2:]))
    out = {}
    for name in maps:
        deletion = [s_orig] + [by_job[(name, "deletion", i)] for i in range(1, steps)] + [s_blur]
        insertion = [s_blur] + [by_job[(name, "insertion", i)] for i in range(1, steps)] + [s_orig]
        out[name] = Faithfulness(fractions, deletion, insertion)
    return out


def random_maps(
    activations: np.ndarray, size_hw: tuple[int, int], padded_hw: tuple[int, int], seeds: int = RANDOM_SEEDS
) -> list[np.ndarray]:
    """grad-cam's ``RandomCAM`` (random channel weights in [−1, 1)) on a captured layer.

    Seeded by the activations themselves: reproducible for an image and layer, and independent
    draws from one image to the next, so a report over many tiles does not inherit one unlucky draw.
    """
    h, w = size_hw
    digest = int.from_bytes(hashlib.sha256(np.ascontiguousarray(activations, dtype=np.float32).tobytes()).digest()[:8])
    out = []
    for seed in range(seeds):
        weights = np.random.default_rng([digest, seed]).uniform(-1, 1, size=activations.shape[:2])
        raw = cammath.weighted(weights, activations, False)
        out.append(cammath.visible(cammath.normalise(raw, (padded_hw[1], padded_hw[0]))[0], (h, w)))
    return out


@dataclass
class FaithfulnessVerdict:
    """A map's faithfulness next to its two references."""

    score: float
    random: float  # mean over RandomCAM seeds at the same layer
    random_sd: float
    target_map: float  # the target region used as a map
    curves: Faithfulness | None = None

    @property
    def above_random(self) -> float:
        return self.score - self.random

    @property
    def beats_random(self) -> bool:
        """Above the random maps' mean by more than their spread (random maps vary a lot)."""
        return self.score > self.random + max(MARGIN, self.random_sd)

    @property
    def beats_target(self) -> bool:
        return self.score > self.target_map + MARGIN

    def describe(self) -> str:
        """The verdict in words (Markdown), as the app shows it."""

        def beats(yes: bool) -> str:
            return "beats" if yes else "does **not** beat"

        return (
            f"**Faithfulness** {self.score:+.3f} — {beats(self.beats_random)} random maps "
            f"({self.random:+.3f} ± {self.random_sd:.3f}) and {beats(self.beats_target)} the target mask used "
            f"as a map ({self.target_map:+.3f})."
        )


# ---------------------------------------------------------------------------- sanity


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


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Rank correlation of two maps (average ranks for ties).

    Two constant maps that are equal count as identical (1.0: nothing changed); a constant map
    against a varying one as unrelated (0.0).
    """
    from scipy.stats import rankdata

    ra, rb = rankdata(a.ravel()), rankdata(b.ravel())
    if ra.std() == 0 or rb.std() == 0:
        return 1.0 if ra.std() == rb.std() == 0 and np.allclose(a, b) else 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean structural similarity of two maps scaled to [0, 1]: scikit-image's, with Wang et al.'s
    Gaussian window (σ = 1.5, population covariance); a map smaller than that window (11 px) is
    compared with the largest odd uniform window that fits."""
    from skimage.metrics import structural_similarity

    def unit(m: np.ndarray) -> np.ndarray:
        m = np.asarray(m, dtype=np.float64)
        span = m.max() - m.min()
        return (m - m.min()) / span if span > 0 else np.zeros_like(m)

    a, b = unit(a), unit(b)
    if min(a.shape) >= 11:
        kw: dict[str, Any] = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False}
    else:
        kw = {"win_size": max(1, min(a.shape) - (1 - min(a.shape) % 2)), "use_sample_covariance": False}
    return float(structural_similarity(a, b, data_range=1.0, **kw))


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


def method_explainer(info: MethodInfo, layer: str, eigen_smooth: bool = False) -> Explainer:
    """A registry method as an explainer (one capture, or its own passes)."""
    from cam_core import engine

    def explain(model: LoadedModel, image: np.ndarray, target: tg.TargetSpec, prediction: Prediction) -> np.ndarray:
        if info.from_cache:
            cap = capture(model, image, target, [layer], rule=prediction.rule)
            return engine.cam_from_capture(cap, info, layer, eigen_smooth).cam
        return engine.run_method(
            model, image, target, info, layer, eigen_smooth=eigen_smooth, prediction=prediction
        ).cam

    return explain


def edge_explainer(model: LoadedModel, image: np.ndarray, target: tg.TargetSpec, prediction: Prediction) -> np.ndarray:
    """A known failing case: an edge detector of the image, blind to the model."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    mag = np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))
    return mag / max(float(mag.max()), 1e-12)


def target_explainer(
    model: LoadedModel, image: np.ndarray, target: tg.TargetSpec, prediction: Prediction
) -> np.ndarray:
    """A known failing case (and the faithfulness reference): the target region itself."""
    return target_region(model, target, prediction)[1]


REFERENCE_EXPLAINERS: dict[str, Explainer] = {"edge detector": edge_explainer, "target mask": target_explainer}


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


@dataclass
class TrustReport:
    """Both checks for one map, with what produced them."""

    method: str
    layer: str
    class_name: str
    target: str
    faithfulness: FaithfulnessVerdict
    sanity: Sanity
    seconds: float
    notes: list[str] = field(default_factory=list)

    def record(self) -> dict:
        """The JSON entry (one per layer × method) of ``trust --json``."""
        f, s = self.faithfulness, self.sanity
        return {
            "layer": self.layer,
            "method": self.method,
            "class": self.class_name,
            "target": self.target,
            "faithfulness": round(f.score, 4),
            "random_faithfulness": round(f.random, 4),
            "random_faithfulness_sd": round(f.random_sd, 4),
            "target_mask_faithfulness": round(f.target_map, 4),
            "beats_random": f.beats_random,
            "beats_target_mask": f.beats_target,
            "deletion_auc": round(f.curves.deletion_auc, 4) if f.curves else None,
            "insertion_auc": round(f.curves.insertion_auc, 4) if f.curves else None,
            "sanity_rho": round(s.final_rho, 4),
            "sanity_ssim": round(s.ssim[-1], 4),
            "sanity_pass": s.passed,
            "sanity_cascade": [{"randomised": b, "rho": round(r, 4)} for b, r in zip(s.steps, s.rho)],
            "seconds": round(self.seconds, 2),
        }


def trust(
    loaded: LoadedModel,
    image: np.ndarray,
    target: tg.TargetSpec,
    layers: list[str],
    methods: list[MethodInfo],
    *,
    rule: DecisionRule | None = None,
    cams: dict[tuple[str, str], np.ndarray] | None = None,
    cascade: bool = True,
    progress: Progress | None = None,
    references: MutableMapping[str, Faithfulness] | None = None,
    cap: Capture | None = None,
    eigen_smooth: bool = False,
) -> list[TrustReport]:
    """Faithfulness (with its random and target-mask references) and sanity for methods × layers.

    One capture serves every one-pass method; faithfulness of all maps runs as shared batches;
    sanity runs one capture per randomisation step for all one-pass maps.

    Args:
        cams: maps already computed (method, layer) → H×W, e.g. the one on screen; others are
            computed here.
        references: curves of the reference maps ("target mask", "random<i>@<layer>") already
            measured for this image, target and rule; missing ones are measured and added, so a
            caller that keeps this mapping pays for the references once per layer.
        cap: a capture of this image and target over (at least) ``layers``, e.g. the app's, so
            no extra pass is made (and the app's kept graph is not replaced).
        progress: (fraction, text); may raise :class:`Cancelled`.
    """
    from cam_core import engine

    t0 = time.perf_counter()
    part = _staged(progress)
    if cap is None or not all(la in cap.activations for la in layers):
        cap = engine.capture(loaded, image, target, layers, rule=rule)
    target = cap.target
    given = cams or {}
    maps: dict[tuple[str, str], np.ndarray] = {}
    slow: dict[tuple[str, str], Explainer] = {}
    for layer in layers:
        for info in methods:
            key = (info.name, layer)
            if not info.from_cache:
                slow[key] = method_explainer(info, layer, eigen_smooth)
            if key in given:
                maps[key] = given[key]
            elif info.from_cache:
                maps[key] = engine.cam_from_capture(cap, info, layer, eigen_smooth).cam
            else:
                maps[key] = engine.run_method(
                    loaded,
                    image,
                    target,
                    info,
                    layer,
                    eigen_smooth=eigen_smooth,
                    prediction=cap.prediction,
                    progress=part(0.0, 0.2),
                ).cam
    h, w = cap.image_shape
    known = references if references is not None else {}
    named: dict[str, np.ndarray] = {f"{m}@{la}": v for (m, la), v in maps.items()}
    if "target mask" not in known:
        named["target mask"] = target_region(loaded, target, cap.prediction)[1]
    for layer in layers:
        if f"random{RANDOM_SEEDS - 1}@{layer}" not in known:
            for i, rm in enumerate(random_maps(cap.activations[layer], (h, w), cap.padded_shape)):
                named[f"random{i}@{layer}"] = rm
    curves = faithfulness(loaded, image, target, cap.prediction, named, progress=part(0.2, 0.8))
    for name, curve in curves.items():
        if name == "target mask" or name.startswith("random"):
            known[name] = curve
    curves = {**known, **curves}
    fast = [m for m in methods if m.from_cache]
    checks = sanity(
        loaded,
        image,
        target,
        slow,
        rule=cap.rule,
        cascade=cascade,
        layers=layers if fast else None,
        methods=fast,
        progress=part(0.8, 1.0),
        eigen_smooth=eigen_smooth,
        cap=cap,
    )
    by_key = {(s.method, s.layer): s for s in checks}
    seconds = time.perf_counter() - t0
    name = loaded.spec.classes[target.class_index or 0]
    reports = []
    for method, layer in maps:
        rand = [curves[f"random{i}@{layer}"].score for i in range(RANDOM_SEEDS)]
        verdict = FaithfulnessVerdict(
            score=curves[f"{method}@{layer}"].score,
            random=float(np.mean(rand)),
            random_sd=float(np.std(rand)),
            target_map=curves["target mask"].score,
            curves=curves[f"{method}@{layer}"],
        )
        reports.append(
            TrustReport(method, layer, name, target.kind, verdict, by_key[(method, layer)], seconds / max(1, len(maps)))
        )
    return reports


def _staged(progress: Progress | None) -> Callable[[float, float], Progress | None]:
    """Map a stage's 0..1 progress onto [start, end] of the whole; cancelling passes through."""

    def part(start: float, end: float) -> Progress | None:
        if progress is None:
            return None

        def report(frac: float, text: str) -> None:
            progress(start + (end - start) * frac, text)

        return report

    return part


__all__ = [
    "FAITHFULNESS_STEPS",
    "MARGIN",
    "RANDOM_SEEDS",
    "REFERENCE_EXPLAINERS",
    "SANITY_MAX_RHO",
    "Cancelled",
    "Faithfulness",
    "FaithfulnessVerdict",
    "Sanity",
    "TrustReport",
    "faithfulness",
    "sanity",
    "trust",
]
