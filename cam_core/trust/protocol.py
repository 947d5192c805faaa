"""What the trust checks explain and with which fixed numbers: one place for every constant of
the checks, and the explainers they compare (a registry method, and the two known failing cases:
an edge detector blind to the model, and the target region itself)."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from cam_core.engine import targets as tg
from cam_core.engine.capturing import (
    Prediction,
    capture,
    target_region,
)
from cam_core.engine.methods import MethodInfo
from cam_core.model.models import LoadedModel

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
# The maps sanity compares, trained vs randomised, with what each one catches. The displayed map
# alone hid both failure modes seen on the built-in model: GradCAM's randomised map collapsed to
# zero after ReLU (ρ "0.00" counted as a pass), and HiResCAM's signed map decorrelated while its
# magnitude stayed (|raw| ρ 0.87–1.00: it copies the target region) — Adebayo et al. report the
# signed and the absolute comparison for this reason.
SANITY_VIEWS = {
    "raw": "the raw signed map (before ReLU and min-max)",
    "|raw|": "its absolute value (where the evidence is, for or against)",
    "shown": "the map as displayed (ReLU, min-max)",
}
RAW_VIEWS = ("raw", "|raw|")  # the views a verdict rests on; "shown" can only add a failure
SANITY_RULE = (
    f"A map fails sanity when, after the whole model is randomised, any of its views keeps |ρ| ≥ "
    f"{SANITY_MAX_RHO} with the trained model's map (raw signed, |raw| or as displayed). A view that "
    "becomes constant has no ρ: it is reported as degenerate with the step where it collapsed; when "
    "both raw views are degenerate the check cannot judge the map (never a pass)."
)
# Beating a reference means scoring at least this much above it (scores are in −1..1).


MARGIN = 0.02


# A map, or (map as displayed, raw signed map) where the method has one (sanity compares both).
Explainer = Callable[[LoadedModel, np.ndarray, tg.TargetSpec, Prediction], np.ndarray | tuple[np.ndarray, np.ndarray]]


def method_explainer(info: MethodInfo, layer: str, eigen_smooth: bool = False) -> Explainer:
    """A registry method as an explainer (one capture, or its own passes)."""
    from cam_core import engine

    def explain(
        model: LoadedModel, image: np.ndarray, target: tg.TargetSpec, prediction: Prediction
    ) -> tuple[np.ndarray, np.ndarray]:
        if info.from_cache:
            cap = capture(model, image, target, [layer], rule=prediction.rule)
            res = engine.cam_from_capture(cap, info, layer, eigen_smooth)
        else:
            res = engine.run_method(model, image, target, info, layer, eigen_smooth=eigen_smooth, prediction=prediction)
        return res.cam, res.cam_raw

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
