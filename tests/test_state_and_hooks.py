"""Hooks never leak and the model is left as found, after every method, also after errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cam_core import engine
from cam_core.engine.methods import METHODS
from cam_core.engine.targets import TargetSpec
from cam_core.errors import Cancelled, EmptyTargetError, InputError
from cam_core.model.state import hook_count, preserved_state

LAYER = "decoder.blocks.3"


def snapshot(model):
    return {
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grad": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "modules": [(n, type(m).__name__) for n, m in model.named_modules()],
        "hooks": hook_count(model),
        "state": {k: v.clone() for k, v in model.state_dict().items()},
    }


def assert_same(before, model):
    after = snapshot(model)
    assert after["hooks"] == before["hooks"] == 0
    assert after["training"] == before["training"]
    assert after["requires_grad"] == before["requires_grad"]
    assert after["modules"] == before["modules"]
    for a, b in zip(before["grad"], after["grad"]):
        assert (a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))
    for k, v in before["state"].items():
        assert torch.equal(v, after["state"][k]), k


@pytest.fixture
def odd_state(tiny):
    """A model in a state grad-cam would disturb: training mode, a frozen stage, stale grads."""
    model = tiny.model
    model.train()
    model.decoder.blocks[0].eval()
    for p in model.encoder.layer1.parameters():
        p.requires_grad_(False)
    for p in model.segmentation_head.parameters():
        p.grad = torch.full_like(p, 0.25)
    return tiny


def region():
    r = np.zeros((64, 64), dtype=bool)
    r[8:40, 8:40] = True
    return TargetSpec("mask", 1, r)


@pytest.mark.parametrize("info", list(METHODS.values()), ids=lambda m: m.name)
def test_state_restored_after_every_method(odd_state, image64, info):
    before = snapshot(odd_state.model)
    if info.from_cache:
        cap = engine.capture(odd_state, image64, region(), [LAYER])
        res = engine.cam_from_capture(cap, info, LAYER)
    else:
        res = engine.run_method(odd_state, image64, region(), info, LAYER, batch_size=4)
    assert res.cam.shape == (64, 64)
    assert np.isfinite(res.cam).all()
    assert_same(before, odd_state.model)


def test_ablationcam_failure_leaves_no_ablation_layer(odd_state, image64, monkeypatch):
    """grad-cam's AblationCAM swaps the layer for an AblationLayer; a failure must undo it."""
    import pytorch_grad_cam.ablation_cam as ab

    before = snapshot(odd_state.model)

    def boom(*args, **kwargs):
        raise RuntimeError("simulated failure inside the ablation loop")

    monkeypatch.setattr(ab.AblationCAM, "assemble_ablation_scores", boom)
    with pytest.raises(InputError, match="AblationCAM failed on layer"):
        engine.run_method(odd_state, image64, region(), METHODS["ablationcam"], LAYER, batch_size=4)
    assert not any("Ablation" in type(m).__name__ for m in odd_state.model.modules())
    assert_same(before, odd_state.model)


def test_cancel_scorecam_restores_state(odd_state, image64):
    before = snapshot(odd_state.model)
    seen = []

    def progress(frac, msg):
        seen.append(frac)
        if len(seen) == 3:
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        engine.run_method(odd_state, image64, region(), METHODS["scorecam"], LAYER, batch_size=2, progress=progress)
    assert seen == sorted(seen)
    assert len(seen) == 3
    assert_same(before, odd_state.model)


def test_capture_error_restores_state(odd_state, image64):
    before = snapshot(odd_state.model)
    empty = TargetSpec("mask", 1, np.zeros((64, 64), dtype=bool))
    with pytest.raises(EmptyTargetError, match="empty"):
        engine.capture(odd_state, image64, empty, [LAYER])
    assert_same(before, odd_state.model)


def test_nan_model_output_is_refused(tiny, image64):
    with torch.no_grad():
        tiny.model.segmentation_head[0].bias.fill_(float("nan"))
    with pytest.raises(InputError, match="NaN/Inf"):
        engine.capture(tiny, image64, region(), [LAYER])
    assert hook_count(tiny.model) == 0


def test_preserved_state_restores_replaced_module(tiny):
    model = tiny.model
    original = model.decoder.blocks[3]
    with pytest.raises(RuntimeError), preserved_state(model):
        model.decoder.blocks[3] = torch.nn.Identity()
        model.register_forward_hook(lambda *a: None)
        raise RuntimeError("x")
    assert model.decoder.blocks[3] is original
    assert hook_count(model) == 0
