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
# Beating a reference means scoring at least this much above it (scores are in −1..1).


MARGIN = 0.02


Explainer = Callable[[LoadedModel, np.ndarray, tg.TargetSpec, Prediction], np.ndarray]


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
