"""#23 item 5: our deletion/insertion curves and model-randomisation similarity against Quantus
(0.6.0, a test-only dependency) on a tiny in-code model, each wrapped for a segmentation target.

What is compared, and why the numbers can be equal:

* **Deletion / insertion**: Quantus's ``PixelFlipping`` removes the most important features step by
  step and records the model's output for the class. Wrapped as our score (the target class's mean
  probability over the target region, one output), with the perturbation moving pixels to our
  blurred copy (deletion) or revealing the real pixels on it (insertion), its curve is ours point
  for point. The single numbers differ only in convention: we integrate over the fraction of
  pixels with the unperturbed point first (``trust.Faithfulness.score`` = insertion AUC − deletion
  AUC); Quantus's AUC is ``np.trapz`` over its steps (dx = 1) without that point.
* **Model randomisation**: Quantus's ``MPRT`` re-initialises layer after layer (``reset_parameters``
  after ``torch.manual_seed(seed + 1)``, head first) and compares the maps by Spearman's ρ. Our
  sanity check randomises block after block by redrawing each tensor from a normal with its own
  mean and std (so activations stay finite in a deep network); with Quantus's randomisation
  substituted for ours, our final-step ρ equals Quantus's last correlation.
"""

from __future__ import annotations

import numpy as np
import pytest
import quantus  # a test-only dependency: requirements-nodeps.txt (never skipped: CI installs it)
import torch
from conftest import tiny_unet, wrap

from cam_core import engine, trust
from cam_core.engine.capturing import prepare, probabilities
from cam_core.engine.targets import TargetSpec
from cam_core.trust.deletion import blurred

STEPS = 16  # 64² px: 256 pixels a step, a whole number as Quantus's fixed step needs


class ScoreOf(torch.nn.Module):
    """A segmentation model as a one-output classifier: our target score (trust.deletion)."""

    def __init__(self, loaded, cls: int, region: torch.Tensor) -> None:
        super().__init__()
        self.model, self.binary, self.cls, self.region = loaded.model, loaded.spec.binary, cls, region

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = unpack(x)
        probs = probabilities(self.model(x), self.binary)[:, self.cls]
        return ((probs * self.region).sum(dim=(1, 2)) / self.region.sum())[:, None]


def pack(x: np.ndarray) -> np.ndarray:
    """N×3×H×W → N×1×H×3W: Quantus flips features and asks a step to divide the input's size; a
    pixel's three channels become three features side by side, each with the pixel's attribution."""
    n, c, h, w = x.shape
    return x.transpose(0, 2, 3, 1).reshape(n, 1, h, w * c)


def unpack(x: torch.Tensor) -> torch.Tensor:
    n, _, h, w3 = x.shape
    return x.reshape(n, h, w3 // 3, 3).permute(0, 3, 1, 2).contiguous()


def _towards(reference: np.ndarray):
    """A Quantus perturbation: the chosen features take the reference's values."""
    flat = reference.reshape(1, -1)

    def perturb(arr: np.ndarray, indices: np.ndarray, **_: object) -> np.ndarray:
        out = arr.copy()
        rows = np.arange(arr.shape[0])[:, None]
        out[rows, indices] = flat[0, indices]
        return out

    return perturb


def _pixel_flipping(model: torch.nn.Module, x: np.ndarray, towards: np.ndarray, a: np.ndarray) -> np.ndarray:
    metric = quantus.PixelFlipping(
        features_in_step=3 * a.size // STEPS,  # a pixel is three features
        perturb_func=_towards(pack(towards)),
        normalise=False,
        disable_warnings=True,
    )
    per_feature = np.repeat(a, 3, axis=1)[None, None]  # the pixel's attribution on each of its channels
    curve = metric(
        model=model, x_batch=pack(x), y_batch=np.array([0]), a_batch=per_feature, softmax=False, device="cpu"
    )
    return np.asarray(curve[0], dtype=np.float64)


def test_deletion_and_insertion_curves_equal_quantus_pixel_flipping(image64):
    loaded = wrap(tiny_unet())
    target = TargetSpec("class", 1)
    prediction = engine.predict(loaded, image64)
    cam = np.random.default_rng(7).random((64, 64))  # distinct values: no tie to break
    ours = trust.faithfulness(loaded, image64, target, prediction, {"map": cam}, steps=STEPS)["map"]
    x, _ = prepare(loaded, image64)
    x_blur, _ = prepare(loaded, blurred(image64))
    region = torch.ones(64, 64)
    model = ScoreOf(loaded, 1, region).eval()
    x, x_blur = x.numpy(), x_blur.numpy()
    deletion = _pixel_flipping(model, x, x_blur, cam)
    insertion = _pixel_flipping(model, x_blur, x, cam)
    assert len(deletion) == STEPS
    np.testing.assert_allclose(deletion, ours.deletion[1:], atol=1e-5)
    np.testing.assert_allclose(insertion, ours.insertion[1:], atol=1e-5)
    assert np.ptp(ours.deletion) > 1e-3  # the curves moved: a real comparison, not two flat lines
    # the one number: the same curves integrated by each convention (Quantus: dx = 1, no first point)
    theirs = np.trapezoid(insertion) - np.trapezoid(deletion)
    first = (ours.insertion[0] + ours.insertion[1] - ours.deletion[0] - ours.deletion[1]) / 2
    assert ours.score == pytest.approx((theirs + first) / STEPS, abs=1e-5)


def _reset_as_quantus(model: torch.nn.Module, names: list[str], generator: torch.Generator, seed: int = 42) -> None:
    """Quantus's randomisation of these blocks: each module's ``reset_parameters`` after
    ``torch.manual_seed(seed + 1)`` (quantus.helpers.model.pytorch_model.get_random_layer_generator)."""
    modules = dict(model.named_modules())
    for name in names:
        for m in modules[name].modules():
            if hasattr(m, "reset_parameters"):
                torch.manual_seed(seed + 1)
                m.reset_parameters()


def test_randomisation_rho_equals_quantus_mprt_under_the_same_randomisation(image64, monkeypatch):
    from cam_core.engine.methods import get_method
    from cam_core.trust import randomisation

    loaded = wrap(tiny_unet())
    layer, gradcam = "decoder.blocks.3", get_method("GradCAM")
    region = np.zeros((64, 64), bool)
    region[8:40, 16:56] = True
    target = TargetSpec("mask", 1, region)

    def shown(model: torch.nn.Module) -> np.ndarray:
        cap = engine.capture(wrap(model), image64, target, [layer])
        return engine.cam_from_capture(cap, gradcam, layer).cam

    trained = shown(loaded.model)
    monkeypatch.setattr(randomisation, "randomise", _reset_as_quantus)
    ours = trust.sanity(loaded, image64, target, {}, layers=[layer], methods=[gradcam], cascade=False)[0]
    mprt = quantus.MPRT(
        layer_order="top_down", return_last_correlation=True, normalise=False, abs=False, disable_warnings=True
    )
    x, _ = prepare(loaded, image64)
    theirs = mprt(
        model=loaded.model,
        x_batch=x.numpy(),
        y_batch=np.array([1]),
        a_batch=trained[None, None],
        explain_func=lambda model, inputs, targets, **_: shown(model)[None, None],
        device="cpu",
    )
    assert np.isfinite(ours.views["shown"].final)
    assert ours.views["shown"].final == pytest.approx(float(np.ravel(theirs)[0]), abs=1e-6)
    # and with our own randomisation (a normal per tensor): the same verdict, another number
    monkeypatch.undo()
    own = trust.sanity(loaded, image64, target, {}, layers=[layer], methods=[gradcam], cascade=False)[0]
    assert (abs(own.views["shown"].final) < 0.5) == (abs(ours.views["shown"].final) < 0.5)
