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

import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from cam_core.cost import PRIORS, Work, units
from cam_core.engine import targets as tg
from cam_core.engine.capturing import (
    Capture,
    Progress,
    target_region,
)
from cam_core.engine.methods import MethodInfo
from cam_core.errors import Cancelled
from cam_core.model.models import LoadedModel
from cam_core.model.rules import DecisionRule
from cam_core.trust.deletion import Faithfulness, FaithfulnessVerdict, faithfulness, forwards, random_maps
from cam_core.trust.protocol import (
    FAITHFULNESS_STEPS,
    MARGIN,
    RANDOM_SEEDS,
    REFERENCE_EXPLAINERS,
    SANITY_MAX_RHO,
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
    needing = {la for la in layers if f"random{RANDOM_SEEDS - 1}@{la}" not in references}
    total_maps = maps + RANDOM_SEEDS * len(needing) + ("target mask" not in references)
    steps = count_blocks(model) if cascade else 1
    forwards_equivalent = forwards(total_maps) * PRIORS["batched"][0] + steps * PRIORS["capture"][0]
    return Work("trust", units(forwards_equivalent, pixels))


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

    def rank_key(self) -> tuple[bool, float]:
        """How maps are ranked (best first): a map that fails sanity never ranks above one that
        passes (sanity is necessary, not sufficient), then by faithfulness."""
        return (not self.sanity.passed, -self.faithfulness.score)

    def record(self) -> dict[str, Any]:
        """The JSON entry (one per layer × method) of ``trust --json`` (schema: :class:`TrustRecord`)."""
        f, s = self.faithfulness, self.sanity
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
            sanity_rho=round(s.final_rho, 4),
            sanity_ssim=round(s.ssim[-1], 4),
            sanity_pass=s.passed,
            sanity_cascade=[CascadeStep(randomised=b, rho=round(r, 4)) for b, r in zip(s.steps, s.rho)],
            seconds=round(self.seconds, 2),
        ).model_dump(mode="json", by_alias=True)


class CascadeStep(BaseModel):
    randomised: str = Field(description="the block re-drawn at this step (cumulative, head first)")
    rho: float = Field(description="Spearman ρ between the trained and the randomised model's map")


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
    sanity_rho: float = Field(description="ρ after the whole cascade")
    sanity_ssim: float
    sanity_pass: bool = Field(description=f"|ρ| < {SANITY_MAX_RHO}")
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
    maps, slow = _maps(loaded, image, cap, layers, methods, cams or {}, eigen_smooth, part(0.0, 0.2))
    known = references if references is not None else {}
    named = {f"{m}@{la}": v for (m, la), v in maps.items()} | _references_needed(loaded, cap, layers, known)
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
    "Cancelled",
    "Faithfulness",
    "FaithfulnessVerdict",
    "Sanity",
    "TrustReport",
    "faithfulness",
    "sanity",
    "trust",
]
