"""The engine's one-pass CAMs equal grad-cam's own output (max abs difference ≤ 1e-5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

from cam_core import engine
from cam_core.engine import cammath
from cam_core.engine import graph as engine_graph
from cam_core.engine.methods import METHODS
from cam_core.engine.targets import TargetSpec
from cam_core.model.models import preprocess

# An encoder stage, a decoder block, and the full-resolution last decoder block (64×64).
LAYERS = ["encoder.layer2", "decoder.blocks.3", "decoder.blocks.4"]
# KPCA-CAM is left out: our path calls grad-cam's own projection, so comparing would test grad-cam
# against itself (its use of the captured activations is covered by the hook and layer tests).
CACHE_METHODS = [m for m in METHODS.values() if m.from_cache and m.layer_cam is not cammath.kpca_cam]


def gradcam_reference(model, info, layer, x, cls, region, eigen_smooth=False):
    module = dict(model.named_modules())[layer]
    targets = [SemanticSegmentationTarget(cls, region)]
    kwargs = {"k": 2} if info.name == "FEM" else {}
    with info.grad_cam_cls()(model, [module], **kwargs) as cam:
        return cam(input_tensor=x, targets=targets, eigen_smooth=eigen_smooth)[0]


@pytest.fixture(scope="module")
def setup():
    from conftest import tiny_unet, wrap

    loaded = wrap(tiny_unet())
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    region = np.zeros((64, 64), dtype=bool)
    region[10:40, 20:50] = True
    spec = TargetSpec("mask", 1, region)
    cap = engine.capture(loaded, image, spec, LAYERS)
    x = preprocess(image, loaded.spec)
    return loaded, cap, x, region.astype(np.float32)


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("info", CACHE_METHODS, ids=lambda m: m.name)
def test_matches_gradcam(setup, info, layer):
    loaded, cap, x, region = setup
    res = engine.cam_from_capture(cap, info, layer)
    ours = res.cam
    if info.name == "RandomCAM":  # ours draws grad-cam's stream from a generator of its own
        np.random.seed(cammath.random_seed(cap.activations[layer]))
    ref = gradcam_reference(loaded.model, info, layer, x, 1, region)
    assert ours.shape == ref.shape == (64, 64)
    assert np.abs(ours - ref).max() <= 1e-5, f"{info.name} @ {layer}"
    # a real map, not a blank one (a random draw may be negative everywhere: its raw map is not)
    assert ours.max() > 0.99 or (info.baseline and np.ptp(res.cam_raw) > 0)


@pytest.mark.parametrize("name", ["GradCAM", "HiResCAM", "LayerCAM", "GradCAMPlusPlus"])
def test_eigen_smooth_matches_gradcam(setup, name):
    loaded, cap, x, region = setup
    info = METHODS[name.lower()]
    for layer in LAYERS:
        ours = engine.cam_from_capture(cap, info, layer, eigen_smooth=True).cam
        ref = gradcam_reference(loaded.model, info, layer, x, 1, region, eigen_smooth=True)
        assert np.abs(ours - ref).max() <= 1e-5, f"{name} eigen_smooth @ {layer}"


def test_gradient_methods_differ_by_class(setup):
    """Same image, same region, only the class changes: a class-blind engine would fail this."""
    loaded, cap, *_ = setup
    region = cap.target.mask
    image = np.random.default_rng(3).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)  # setup's image
    other = engine.capture(loaded, image, TargetSpec("mask", 2, region), LAYERS)
    assert other.target.class_index == 2
    assert cap.target.class_index != 2
    a = engine.cam_from_capture(cap, METHODS["gradcam"], "decoder.blocks.3").cam
    b = engine.cam_from_capture(other, METHODS["gradcam"], "decoder.blocks.3").cam
    assert np.abs(a - b).max() > 0.05


def test_raw_cam_kept_before_relu(setup):
    _, cap, *_ = setup
    res = engine.cam_from_capture(cap, METHODS["hirescam"], "decoder.blocks.3")
    assert res.cam_raw.shape == res.cam.shape
    assert res.cam_raw.min() < 0 < res.cam_raw.max()  # negative evidence survives in the raw map
    # The normalised CAM is the min-max of ReLU(raw) (up to interpolation order).
    assert np.corrcoef(np.maximum(res.cam_raw, 0).ravel(), res.cam.ravel())[0, 1] > 0.95


def test_capture_gradients_equal_backward(setup):
    """autograd.grad to the hooked outputs gives the same gradients as loss.backward()."""
    loaded, cap, x, region = setup
    model = loaded.model
    module = dict(model.named_modules())["decoder.blocks.3"]
    saved = {}

    def keep(m, i, o):
        o.retain_grad()
        saved["out"] = o

    h = module.register_forward_hook(keep)
    try:
        out = model(x)
        (out[0, 1] * torch.from_numpy(region)).sum().backward()
    finally:
        h.remove()
        model.zero_grad(set_to_none=True)
    np.testing.assert_allclose(cap.gradients["decoder.blocks.3"], saved["out"].grad.numpy(), atol=1e-6)


@pytest.mark.parametrize("layer", LAYERS)
def test_one_layer_records_from_the_layer_with_bit_equal_gradients(tiny, image64, layer):
    """A one-layer capture records autograd from the layer on (capture_outputs'
    graph_from_layer): the same activations and gradients, bit for bit, as a capture recorded
    from the input (two layers), also with frozen parameters, and a smaller kept graph."""
    spec = TargetSpec("class", 1)
    other = next(n for n in LAYERS if n != layer)
    alone = engine.capture(tiny, image64, spec, [layer], keep_graph=True)
    small = engine_graph.kept(tiny).nbytes
    both = engine.capture(tiny, image64, spec, [layer, other], keep_graph=True)
    assert small < engine_graph.kept(tiny).nbytes  # the encoder before the layer is not recorded
    np.testing.assert_array_equal(alone.gradients[layer], both.gradients[layer])
    np.testing.assert_array_equal(alone.activations[layer], both.activations[layer])
    assert np.abs(alone.gradients[layer]).max() > 0
    for p in tiny.model.parameters():
        p.requires_grad_(False)
    try:
        frozen = engine.capture(tiny, image64, spec, [layer])
    finally:
        for p in tiny.model.parameters():
            p.requires_grad_(True)
    np.testing.assert_array_equal(frozen.gradients[layer], alone.gradients[layer])
    assert torch.is_grad_enabled()  # the hook's switch ended with the capture


def test_recapture_equals_full_capture_with_one_backward(tiny, image64):
    layers = ["encoder.layer2", "decoder.blocks.3"]
    first = engine.capture(tiny, image64, TargetSpec("class", 1), layers, keep_graph=True)
    before = dict(engine_graph.passes(tiny))
    again = engine.recapture(tiny, first, TargetSpec("class", 2), image64)
    assert engine_graph.passes(tiny)["forward"] == before["forward"]  # no new forward
    assert engine_graph.passes(tiny)["backward"] == before["backward"] + 1
    third = engine.recapture(tiny, again, TargetSpec("class", 1), image64)  # the graph follows the newest
    assert engine_graph.passes(tiny)["forward"] == before["forward"]
    np.testing.assert_allclose(third.gradients["decoder.blocks.3"], first.gradients["decoder.blocks.3"], atol=1e-6)
    full = engine.capture(tiny, image64, TargetSpec("class", 2), layers)
    for n in layers:
        np.testing.assert_allclose(again.gradients[n], full.gradients[n], atol=1e-6)
        np.testing.assert_array_equal(again.activations[n], full.activations[n])
    assert engine_graph.kept(tiny) is None  # the plain capture replaced (freed) the kept graph
    # The kept graph is gone: recapture falls back to a full capture, with the same numbers.
    fallback = engine.recapture(tiny, again, TargetSpec("class", 1), image64)
    np.testing.assert_allclose(fallback.gradients["decoder.blocks.3"], first.gradients["decoder.blocks.3"], atol=1e-6)
    from cam_core.model.state import hook_count

    assert hook_count(tiny.model) == 0


def test_scorecam_topk_equals_scorecam_when_k_covers_all_channels(setup):
    """With k ≥ channels the approximation must be exactly grad-cam's ScoreCAM."""
    loaded, _, x, region = setup
    layer = "decoder.blocks.4"  # 8 channels < k = 32
    assert dict(loaded.model.named_modules())[layer].conv2[0].out_channels <= engine.FAST_SCORECAM_K
    ref = gradcam_reference(loaded.model, METHODS["scorecam"], layer, x, 1, region)
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    ours = engine.run_method(loaded, image, TargetSpec("mask", 1, region > 0), METHODS["scorecam-topk"], layer).cam
    assert np.abs(ours - ref).max() <= 1e-5


def test_a_loaded_folder_runs_channels_last_and_still_equals_gradcam(tiny_folder):
    """load_folder keeps a model's weights channels-last when the probe says the output is the
    same (faster convolutions); CAMs on it equal grad-cam's own, run on the same model."""
    from conftest import load_tiny_folder

    loaded = load_tiny_folder(tiny_folder)
    conv = next(m for m in loaded.model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size[0] > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, size=(64, 96, 3), dtype=np.uint8)
    region = np.zeros((64, 96), dtype=bool)
    region[5:50, 30:90] = True
    cap = engine.capture(loaded, image, TargetSpec("mask", 1, region), ["decoder.blocks.2"])
    info = METHODS["gradcam"]
    ours = engine.cam_from_capture(cap, info, "decoder.blocks.2").cam
    x = preprocess(image, loaded.spec)
    ref = gradcam_reference(loaded.model, info, "decoder.blocks.2", x, 1, region.astype(np.float32))
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_a_model_that_breaks_channels_last_is_left_in_its_layout(tiny_folder, monkeypatch):
    """A model whose forward fails on channels-last tensors (``view`` on a permuted layout, as in
    some transformers) loads as it was and runs."""
    from cam_core.model import models as model_mod

    original = torch.nn.Conv2d.forward

    def picky(self, x):
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            x.view(x.shape[0], -1)  # what a transformer's reshape does: fails on this layout
        return original(self, x)

    monkeypatch.setattr(torch.nn.Conv2d, "forward", picky)
    loaded = model_mod.load_folder(tiny_folder, device=torch.device("cpu"))
    conv = next(m for m in loaded.model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size[0] > 1)
    assert conv.weight.is_contiguous()
    assert not conv.weight.is_contiguous(memory_format=torch.channels_last)
    engine.capture(loaded, np.zeros((64, 64, 3), np.uint8), TargetSpec("class", 1), ["decoder.blocks.2"])
