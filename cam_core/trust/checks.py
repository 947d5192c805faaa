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

import math
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from cam_core.cost import PRIORS, Work, units
from cam_core.data.truth import Truth
from cam_core.engine import targets as tg
from cam_core.engine.capturing import (
    Capture,
    Progress,
    target_region,
)
from cam_core.engine.methods import MethodInfo
from cam_core.errors import Cancelled
from cam_core.model.models import LoadedModel, padded_pixels
from cam_core.model.rules import DecisionRule
from cam_core.trust.deletion import Faithfulness, FaithfulnessVerdict, faithfulness, forwards, random_maps
from cam_core.trust.localisation import Localisation, localisation
from cam_core.trust.protocol import (
    FAITHFULNESS_STEPS,
    MARGIN,
    RANDOM_SEEDS,
    REFERENCE_EXPLAINERS,
    SANITY_MAX_RHO,
    SANITY_RULE,
    Explainer,
    method_explainer,
)
from cam_core.trust.randomisation import Sanity, count_blocks, sanity

# One place for every constant of the checks.


def work(
    model: torch.nn.Module,
    layers: list[str],
    maps: int,
    references: dict[str, Any],
    cascade: bool,
    pixels: int,
) -> Work:
    """The work of :func:`trust` before it runs, for the one estimate (:mod:`cam_core.cost`): the
    faithfulness forwards of ``maps`` maps plus the reference curves not yet in ``references``
    (the random maps of each layer, the target mask), batched; and the sanity steps, one capture
    each (the whole cascade for one-pass methods, one step otherwise). Counted in forward units
    weighted by each pass's prior; the check's own runs then set its rate."""
    return Work("trust", units(sum(_stages(model, layers, maps, references, cascade)), pixels))


def _stages(
    model: torch.nn.Module, layers: list[str], maps: int, references: dict[str, Any], cascade: bool
) -> tuple[float, float]:
    """Faithfulness's and sanity's forward-equivalents per image (the priors weight each pass):
    the estimate's sum, and the split of :func:`trust`'s progress, so that its fraction runs with
    the clock (a fixed split put faithfulness, ~90 % of the time, at 60 % of the bar: the time
    left read 15 s at 4 s of a 125 s check)."""
    needing = {la for la in layers if f"random{RANDOM_SEEDS - 1}@{la}" not in references}
    total_maps = maps + RANDOM_SEEDS * len(needing) + ("target mask" not in references)
    steps = count_blocks(model) if cascade else 1
    step = PRIORS["capture"][0] + PRIORS["sanity map"][0] * max(maps - 1, 0)
    return forwards(total_maps) * PRIORS["batched"][0], steps * step


def _own_passes(
    loaded: LoadedModel, image: np.ndarray, layers: list[str], methods: list[MethodInfo], given: dict
) -> float:
    """Forward units, weighted by their priors, of the maps :func:`_maps` computes by their own passes."""
    from cam_core import engine

    works = [
        engine.method_work(loaded, image.shape, info, layer)
        for layer in layers
        for info in methods
        if not info.from_cache and (info.name, layer) not in given
    ]
    return sum(w.units * PRIORS[w.prior][0] for w in works)


# The three verdicts on one map, from worst to best: the one place their words are chosen.
VERDICTS = {"dont": "Don't trust this map", "caution": "Caution", "believe": "Believe this map"}


@dataclass(frozen=True)
class Verdict:
    """Believe / Caution / Don't trust, and the reason in one plain sentence with its margins."""

    level: str  # a key of VERDICTS
    reason: str

    def sentence(self) -> str:
        return f"{VERDICTS[self.level]}: {self.reason}."


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
    localisation: Localisation | None = None  # against the truth, where there is one

    def rank_key(self) -> tuple[bool, float]:
        """How maps are ranked (best first): a map that fails sanity never ranks above one that
        passes (sanity is necessary, not sufficient), then by faithfulness."""
        return (not self.sanity.passed, -self.faithfulness.score)

    def verdict(self) -> Verdict:
        """One verdict from both checks, with its reason and margins (:data:`VERDICTS`)."""
        f, s = self.faithfulness, self.sanity
        need = max(MARGIN, f.random_sd)
        vs_random = (
            f"{f.score:+.2f} against random maps' {f.random:+.2f} ± {f.random_sd:.2f} "
            f"(margin {f.above_random:+.2f}; it must exceed {need:.2f})"
        )
        vs_target = (
            f"the target region itself ({f.target_map:+.2f}; margin {f.score - f.target_map:+.2f}, "
            f"it must exceed {MARGIN:.2f})"
        )
        views = s.views
        if s.verdict == "fail":
            worst = max((v for v in views if views[v].correlated), key=lambda v: abs(views[v].final))
            return Verdict(
                "dont",
                f"the map stays the same when the model's weights are randomised ({worst} ρ "
                f"{views[worst].final:+.2f}, fails at {SANITY_MAX_RHO}): it shows the image or the target, not the model",
            )
        if not f.beats_random:
            return Verdict("dont", f"the map is no more faithful than random maps at this layer: {vs_random}")
        if s.verdict == "degenerate":
            return Verdict(
                "caution",
                f"the map beats random maps ({vs_random}), but the sanity check cannot judge it: the "
                "randomised model's map is constant",
            )
        if not f.beats_target:
            return Verdict(
                "caution",
                f"the map is more faithful than random maps ({vs_random}), but no more than {vs_target}",
            )
        return Verdict(
            "believe",
            f"it passes sanity (raw ρ {views['raw'].text()}, |raw| ρ {views['|raw|'].text()}) and is "
            f"more faithful than random maps ({vs_random}) and than {vs_target}",
        )

    def record(self) -> dict[str, Any]:
        """The JSON entry (one per layer × method) of ``trust --json`` (schema: :class:`TrustRecord`)."""
        f, s, v = self.faithfulness, self.sanity, self.verdict()
        return TrustRecord(
            layer=self.layer,
            method=self.method,
            class_name=self.class_name,
            target=self.target,
            faithfulness=round(f.score, 4),
            random_faithfulness=round(f.random, 4),
            random_faithfulness_sd=round(f.random_sd, 4),
            target_mask_faithfulness=round(f.target_map, 4),
            beats_random=f.beats_random,
            beats_target_mask=f.beats_target,
            deletion_auc=round(f.curves.deletion_auc, 4) if f.curves else None,
            insertion_auc=round(f.curves.insertion_auc, 4) if f.curves else None,
            sanity_rho=_number(s.final_rho),
            sanity_ssim=_number(s.ssim[-1]),
            sanity_raw_rho=_number(s.views["raw"].final),
            sanity_abs_rho=_number(s.views["|raw|"].final),
            sanity_verdict=s.verdict,
            sanity_pass=s.passed,
            sanity_collapsed_at=s.collapsed_at(),
            verdict=v.level,
            verdict_sentence=v.sentence(),
            localisation=None if self.localisation is None else self.localisation.record(),
            sanity_cascade=[
                CascadeStep(
                    randomised=b,
                    rho=_number(s.views["shown"].rho[i]),
                    raw_rho=_number(s.views["raw"].rho[i]),
                    abs_rho=_number(s.views["|raw|"].rho[i]),
                )
                for i, b in enumerate(s.steps)
            ],
            seconds=round(self.seconds, 2),
        ).model_dump(mode="json", by_alias=True)


def explains(method: str) -> bool:
    """Whether a method's map may be suggested: a baseline (RandomCAM) is a reference, not an
    explanation, however it scores on one tile (the registry's ``baseline`` flag)."""
    from cam_core.engine.methods import METHODS

    info = METHODS.get(method.lower())
    return info is not None and not info.baseline


def suggest_for_tile(reports: list[TrustReport]) -> TrustReport | None:
    """The checked map of this tile to believe most: a Believe before a Caution (a Don't trust and
    a baseline are never suggested), then by the ranking every list uses
    (:meth:`TrustReport.rank_key`). The model's measured suggestion applied to one tile's checks."""
    order = list(VERDICTS)  # dont, caution, believe: worst first
    usable = [r for r in reports if r.verdict().level != "dont" and explains(r.method)]
    return max(usable, key=lambda r: (order.index(r.verdict().level), -r.rank_key()[1]), default=None)


def _number(x: float) -> float | None:
    """A correlation for JSON: None where it does not exist (a constant map has no ρ)."""
    return None if math.isnan(x) else round(x, 4)


class CascadeStep(BaseModel):
    randomised: str = Field(description="the block re-drawn at this step (cumulative, head first)")
    rho: float | None = Field(description="Spearman ρ, trained vs randomised map as displayed (None: constant)")
    raw_rho: float | None = Field(description="the same on the raw signed maps")
    abs_rho: float | None = Field(description="the same on |raw|")


class TrustRecord(BaseModel):
    """One map's trust check as written to JSON (``trust --json``, result.json's ``trust``); the
    JSON Schema is ``python -m cam_core schema trust``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    layer: str
    method: str
    class_name: str = Field(alias="class")
    target: str
    faithfulness: float = Field(description="insertion AUC − deletion AUC, −1..1")
    random_faithfulness: float = Field(description=f"mean over {RANDOM_SEEDS} RandomCAM maps at the layer")
    random_faithfulness_sd: float
    target_mask_faithfulness: float = Field(description="the target region itself used as a map")
    beats_random: bool = Field(description=f"above random by more than max({MARGIN}, its sd)")
    beats_target_mask: bool = Field(description=f"above the target mask by more than {MARGIN}")
    deletion_auc: float | None
    insertion_auc: float | None
    sanity_rho: float | None = Field(description="ρ of the displayed maps after the whole cascade (None: constant)")
    sanity_ssim: float | None
    sanity_raw_rho: float | None = Field(description="ρ of the raw signed maps after the whole cascade")
    sanity_abs_rho: float | None = Field(description="ρ of |raw| after the whole cascade")
    sanity_verdict: Literal["pass", "fail", "degenerate"] = Field(description=SANITY_RULE)
    sanity_pass: bool = Field(description=f"every view that varies has |ρ| < {SANITY_MAX_RHO}, a raw one among them")
    sanity_collapsed_at: str | None = Field(
        description="the block whose randomisation left the displayed map constant for good"
    )
    verdict: Literal["dont", "caution", "believe"] = Field(description=" / ".join(VERDICTS.values()))
    verdict_sentence: str = Field(description="the verdict and its reason, as the app shows it")
    localisation: dict[str, float | int | None] | None = Field(
        default=None,
        description="against the truth (relevance mass on truth / TP / FN / FP, rank accuracy, pointing game "
        "over objects: cam_core.trust.localisation); None without a truth",
    )
    sanity_cascade: list[CascadeStep]
    seconds: float


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
    truth: Truth | None = None,
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
        truth: the image's ground truth (in the model's classes): each map is also scored
            against it (:func:`cam_core.trust.localisation.localisation`, no model pass).
        progress: (fraction, text); may raise :class:`Cancelled`.
    """
    from cam_core import engine

    t0 = time.perf_counter()
    part = _staged(progress)
    if cap is None or not all(la in cap.activations for la in layers):
        cap = engine.capture(loaded, image, target, layers, rule=rule)
    target = cap.target
    known = references if references is not None else {}
    own = _own_passes(loaded, image, layers, methods, cams or {})
    pixels = padded_pixels(image.shape, loaded.multiple)
    faith, sane = (
        units(n, pixels) for n in _stages(loaded.model, layers, len(layers) * len(methods), dict(known), cascade)
    )
    a, b = own / (own + faith + sane), (own + faith) / (own + faith + sane)  # the stages' ends on the bar
    maps, slow = _maps(loaded, image, cap, layers, methods, cams or {}, eigen_smooth, part(0.0, a))
    named = {f"{m}@{la}": v for (m, la), v in maps.items()} | _references_needed(loaded, cap, layers, known)
    curves = faithfulness(loaded, image, target, cap.prediction, named, progress=part(a, b))
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
        progress=part(b, 1.0),
        eigen_smooth=eigen_smooth,
        cap=cap,
    )
    by_key = {(s.method, s.layer): s for s in checks}
    return _reports(loaded, cap, target, maps, curves, by_key, time.perf_counter() - t0, truth)


def _reports(
    loaded: LoadedModel,
    cap: Capture,
    target: tg.TargetSpec,
    maps: dict[tuple[str, str], np.ndarray],
    curves: dict[str, Faithfulness],
    by_key: dict[tuple[str, str], Sanity],
    seconds: float,
    truth: Truth | None,
) -> list[TrustReport]:
    """One report per map: its faithfulness next to its references, its sanity, its localisation."""
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
        loc = (
            None
            if truth is None
            else localisation(maps[(method, layer)], cap.prediction.mask, truth, target.class_index)
        )
        reports.append(
            TrustReport(
                method,
                layer,
                name,
                target.kind,
                verdict,
                by_key[(method, layer)],
                seconds / max(1, len(maps)),
                localisation=loc,
            )
        )
    return reports


def _maps(
    loaded: LoadedModel,
    image: np.ndarray,
    cap: Capture,
    layers: list[str],
    methods: list[MethodInfo],
    given: dict[tuple[str, str], np.ndarray],
    eigen_smooth: bool,
    progress: Progress | None,
) -> tuple[dict[tuple[str, str], np.ndarray], dict[tuple[str, str], Explainer]]:
    """The maps to check, (method, layer) → H×W (given ones kept, one-pass ones from ``cap``, the
    others by their own passes), and the explainers of the methods with passes of their own
    (sanity re-runs them on the randomised copy)."""
    from cam_core import engine

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
                    cap.target,
                    info,
                    layer,
                    eigen_smooth=eigen_smooth,
                    prediction=cap.prediction,
                    progress=progress,
                ).cam
    return maps, slow


def _references_needed(
    loaded: LoadedModel, cap: Capture, layers: list[str], known: MutableMapping[str, Faithfulness]
) -> dict[str, np.ndarray]:
    """The reference maps whose curves are not in ``known`` yet: the target region used as a map,
    and :data:`RANDOM_SEEDS` RandomCAM maps per layer."""
    h, w = cap.image_shape
    named: dict[str, np.ndarray] = {}
    if "target mask" not in known:
        named["target mask"] = target_region(loaded, cap.target, cap.prediction)[1]
    for layer in layers:
        if f"random{RANDOM_SEEDS - 1}@{layer}" not in known:
            for i, rm in enumerate(random_maps(cap.activations[layer], (h, w), cap.padded_shape)):
                named[f"random{i}@{layer}"] = rm
    return named


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
    "VERDICTS",
    "Cancelled",
    "Faithfulness",
    "FaithfulnessVerdict",
    "Sanity",
    "TrustReport",
    "Verdict",
    "faithfulness",
    "sanity",
    "trust",
]
