"""How much of the evidence for a target lies in the haematoxylin vs the eosin stain.

A CAM says *where* the model looked; on H&E the next question is *in which stain*: a nucleus
call should rest on haematoxylin (the nuclear stain), and a model that leans on eosin (cytoplasm,
stroma) or on the residual channel (ink, scanner colour) is a warning. The input is decomposed by
the Ruifrok–Johnston colour deconvolution (:mod:`cam_core.data.stain`, the matrix of
``skimage.color.rgb2hed``) and the target's score is attributed to the three concentration
channels by Integrated Gradients (Sundararajan et al. 2017) from the unstained slide (all
concentrations 0: white) to the tile, in torch so the gradient goes through the deconvolution.
By completeness the three sums add up to score(tile) − score(white), which is checked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cam_core.data.metrics import overlap
from cam_core.data.stain import HED_FROM_RGB, RGB_FROM_HED
from cam_core.engine import targets as tg
from cam_core.engine.capturing import Prediction, forward, predict, score_function
from cam_core.engine.methods import MethodInfo
from cam_core.errors import InputError
from cam_core.limits import LARGE_SIDE, is_large
from cam_core.model.models import LoadedModel, pad_to_multiple
from cam_core.model.rules import DecisionRule
from cam_core.model.state import preserved_state
from cam_core.trust.similarity import rho_text

STAINS = ("haematoxylin", "eosin", "residual")  # the deconvolution's channels (the third is DAB's)
IG_STEPS = 16  # Riemann midpoints along the path; the completeness gap says whether that sufficed
IG_BATCH = 8  # path points per model call


@dataclass(frozen=True)
class StainEvidence:
    """The target's score attributed to each stain channel (signed, in score units)."""

    attribution: dict[str, float]
    score: float  # the target's score on the tile
    baseline: float  # ... on the unstained (white) tile
    steps: int

    @property
    def gap(self) -> float:
        """|sum of attributions − (score − baseline)| relative to the change: small when enough steps."""
        change = self.score - self.baseline
        return abs(sum(self.attribution.values()) - change) / max(abs(change), 1e-9)

    def shares(self) -> dict[str, float]:
        """Each channel's share of the evidence (by magnitude, 0..1)."""
        total = sum(abs(v) for v in self.attribution.values())
        return {k: (abs(v) / total if total > 0 else 0.0) for k, v in self.attribution.items()}

    def describe(self) -> str:
        s = self.shares()
        parts = ", ".join(f"{k} {s[k] * 100:.0f} %" for k in STAINS)
        return (
            f"**Stain evidence** — of the evidence for this target: {parts} (Integrated Gradients through the H&E "
            f"colour deconvolution, {self.steps} steps from the unstained slide; completeness gap {self.gap * 100:.1f} %)."
        )

    def record(self) -> dict[str, object]:
        return {"attribution": self.attribution, "shares": self.shares(), "score": self.score,
                "baseline": self.baseline, "steps": self.steps, "gap": self.gap}  # fmt: skip


def stain_evidence(
    loaded: LoadedModel,
    image: np.ndarray,
    target: tg.TargetSpec,
    rule: DecisionRule | None = None,
    steps: int = IG_STEPS,
    prediction: Prediction | None = None,
) -> StainEvidence:
    """Integrated Gradients of the target's score over the tile's H, E and residual concentrations.

    ``prediction``: the tile's, when the caller has it (the app's capture): not predicted again."""
    if is_large(image.shape[:2]):
        raise InputError(f"stain evidence runs the model {steps} times; use a region of at most {LARGE_SIDE}²")
    prediction = predict(loaded, image, rule) if prediction is None else prediction
    spec, device = loaded.spec, loaded.device
    rgb = np.maximum(image.astype(np.float64) / 255.0, 1e-6)
    hed = torch.from_numpy((-np.log(rgb) @ HED_FROM_RGB).astype(np.float32)).to(device)  # H×W×3
    mix = torch.from_numpy(RGB_FROM_HED.astype(np.float32)).to(device)
    mean = torch.tensor(spec.mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    h, w = image.shape[:2]

    def model_input(concentrations: torch.Tensor) -> torch.Tensor:  # B×H×W×3 → padded, normalised
        x = (torch.exp(-(concentrations @ mix)).permute(0, 3, 1, 2) - mean) / std
        return pad_to_multiple(x, loaded.multiple)[0]

    padded = model_input(hed[None]).shape
    target, score_fn = score_function(loaded, target, prediction, padded)
    total = torch.zeros_like(hed)
    alphas = [(k + 0.5) / steps for k in range(steps)]
    with loaded.lock, preserved_state(loaded.model), torch.enable_grad():
        loaded.model.eval()
        ends = []
        with torch.no_grad():
            for a in (0.0, 1.0):
                ends.append(float(score_fn(forward(loaded.model, model_input(hed[None] * a))[0])))
        for i in range(0, steps, IG_BATCH):
            batch = torch.tensor(alphas[i : i + IG_BATCH], device=device).view(-1, 1, 1, 1) * hed[None]
            batch.requires_grad_(True)
            logits = forward(loaded.model, model_input(batch))
            score = torch.stack([score_fn(logits[j]) for j in range(logits.shape[0])]).sum()
            (grad,) = torch.autograd.grad(score, [batch])
            total += grad.sum(dim=0)
    attribution = (hed * total / steps)[:h, :w].sum(dim=(0, 1)).double().cpu().numpy()
    return StainEvidence(
        {name: float(v) for name, v in zip(STAINS, attribution)}, score=ends[1], baseline=ends[0], steps=steps
    )


@dataclass(frozen=True)
class Restained:
    """One re-staining of the tile: does the reason move when only the stain does?"""

    setting: str  # a key of TELLEZ_SETTINGS
    map_rho: float  # Spearman ρ of the map on the tile vs on the re-stained tile (NaN: a constant map)
    dice: float | None  # of the target class's predicted pixels, tile vs re-stained (None: neither has any)


def restain_stability(
    loaded: LoadedModel,
    image: np.ndarray,
    target: tg.TargetSpec,
    info: MethodInfo,
    layer: str,
    cam: np.ndarray,
    rule: DecisionRule | None = None,
    seed: int = 0,
    prediction: Prediction | None = None,
) -> list[Restained]:
    """The map's rank correlation between the tile and its Tellez re-stainings (the training
    augmentation's own code), next to the prediction's Dice: the same pixels are explained (the
    tile's target region), only the stain differs. One capture per setting (one-pass methods)."""
    from cam_core import engine
    from cam_core.data.stain import TELLEZ_SETTINGS, restain
    from cam_core.engine.capturing import capture, target_region
    from cam_core.trust.similarity import spearman

    if not info.from_cache:
        raise InputError(f"{info.name} runs passes of its own; re-staining stability needs a one-pass method")
    prediction = predict(loaded, image, rule) if prediction is None else prediction
    target, reg = target_region(loaded, target, prediction)
    fixed = tg.TargetSpec("mask", target.class_index, reg > 0)
    mine = prediction.mask == target.class_index
    out = []
    for i, setting in enumerate(TELLEZ_SETTINGS):
        other = restain(image, setting, np.random.default_rng(seed + i))
        cap = capture(loaded, other, fixed, [layer], rule=prediction.rule)
        agree = overlap(cap.prediction.mask == target.class_index, mine)
        out.append(
            Restained(
                setting,
                spearman(cam, engine.cam_from_capture(cap, info, layer).cam),
                None if agree.empty else agree.dice,
            )
        )
    return out


def describe_restained(rows: list[Restained]) -> str:
    """One line (Markdown), as the app shows it."""
    parts = "; ".join(
        f"{r.setting}: map ρ {rho_text(r.map_rho)}, prediction Dice {'—' if r.dice is None else f'{r.dice:.2f}'}"
        for r in rows
    )
    return f"**Under re-staining** (Tellez et al. 2019, the training augmentation) — {parts}."
