"""Model folders, binary models, padding, layers and targets."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch

from cam_core import engine
from cam_core.engine.methods import METHODS, get_method, resolve_methods
from cam_core.engine.targets import TargetSpec, class_index, rectangle_mask
from cam_core.errors import EmptyTargetError, ModelLoadError, UnknownNameError
from cam_core.model import layers, models
from cam_core.model.state import hook_count

ARCHS = ["Unet", "FPN", "Linknet", "UnetPlusPlus", "DeepLabV3Plus", "PAN", "MAnet"]


@pytest.mark.parametrize("arch", ARCHS)
def test_any_smp_architecture_from_save_pretrained_explains(arch, tmp_path):
    torch.manual_seed(0)
    image = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    model = smp.create_model(arch, encoder_name="resnet18", encoder_weights=None, classes=3)
    model.save_pretrained(str(tmp_path / arch))
    loaded = models.load_folder(tmp_path / arch, device=torch.device("cpu"))
    assert loaded.spec.classes == ["class 0", "class 1", "class 2"]  # no segcam.json: generic names
    curated = layers.curated_layers(loaded)
    assert curated, arch
    assert layers.default_layer(loaded) in layers.spatial_layers(loaded)
    cap = engine.capture(loaded, image, TargetSpec("class", 1), [layers.default_layer(loaded), curated[0]])
    for layer in cap.layers:
        res = engine.cam_from_capture(cap, METHODS["gradcam"], layer)
        assert res.cam.shape == (128, 128)
    assert hook_count(loaded.model) == 0


def test_binary_sigmoid_model(tmp_path):
    torch.manual_seed(0)
    smp.Unet("resnet18", encoder_weights=None, classes=1, decoder_channels=(16, 8, 8, 8, 8)).save_pretrained(
        str(tmp_path / "bin")
    )
    loaded = models.load_folder(tmp_path / "bin", device=torch.device("cpu"))
    assert loaded.spec.binary
    assert loaded.spec.classes == ["background", "foreground"]
    img = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    pred = engine.predict(loaded, img)
    assert pred.probs.shape == (2, 64, 64)
    np.testing.assert_allclose(pred.probs.sum(0), 1.0, atol=1e-6)
    fg = engine.capture(loaded, img, TargetSpec("class", 1), ["decoder.blocks.3"])
    bg = engine.capture(loaded, img, TargetSpec("class", 0), ["decoder.blocks.3"])
    # Background's target is −logit: its gradients are exactly the negated foreground ones.
    np.testing.assert_allclose(bg.gradients["decoder.blocks.3"], -fg.gradients["decoder.blocks.3"], atol=1e-6)


def test_odd_sizes_are_padded_and_cropped(tiny):
    img = np.random.default_rng(2).integers(0, 256, (45, 77, 3), dtype=np.uint8)
    pred = engine.predict(tiny, img)
    assert pred.mask.shape == (45, 77)
    cap = engine.capture(tiny, img, TargetSpec("class", 1), ["decoder.blocks.2"])
    assert cap.padded_shape == (64, 96)  # the encoder's real stride, 32
    res = engine.cam_from_capture(cap, METHODS["gradcam"], "decoder.blocks.2")
    assert res.cam.shape == res.cam_raw.shape == (45, 77)


def test_segcam_json_must_match_channels(tiny_folder):
    (tiny_folder / "segcam.json").write_text(json.dumps({"classes": ["a", "b"]}))
    with pytest.raises(ModelLoadError, match="names 2 classes but the model has 3 output channel"):
        models.load_folder(tiny_folder)


def test_mismatched_weights_named(tiny_folder):
    smp.Unet("resnet34", encoder_weights=None, classes=3, decoder_channels=(32, 16, 16, 8, 8)).save_pretrained(
        str(tiny_folder.parent / "other")
    )
    (tiny_folder / "model.safetensors").write_bytes((tiny_folder.parent / "other" / "model.safetensors").read_bytes())
    with pytest.raises(ModelLoadError, match=r"weights do not match config\.json"):
        models.load_folder(tiny_folder)


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickle_weights_never_unpickled(tiny_folder, tmp_path):
    marker = tmp_path / "pwned.txt"
    (tiny_folder / "model.safetensors").unlink()
    (tiny_folder / "pytorch_model.pt").write_bytes(pickle.dumps(_Evil(str(marker))))
    # a .pt is read as a state dict with torch.load(weights_only=True): refused before the object exists
    with pytest.raises(ModelLoadError, match=r"pytorch_model\.pt is refused: it holds more than tensors"):
        models.load_folder(tiny_folder)
    entries = {e.name: e for e in models.discover(tiny_folder.parent)}
    assert "is refused" in entries["tiny_unet"].error
    (tiny_folder / "pytorch_model.pt").rename(tiny_folder / "weights.pkl")  # a pickle of another kind: never read
    with pytest.raises(ModelLoadError, match=r"Found weights\.pkl: pickled objects are never loaded"):
        models.load_folder(tiny_folder)
    assert not marker.exists()


def test_layer_resolution(tiny):
    assert layers.resolve_layers(tiny, "all") == layers.curated_layers(tiny)
    assert layers.resolve_layers(tiny, None) == [layers.default_layer(tiny)]
    assert layers.resolve_layers(tiny, "encoder.layer1.0.conv1") == ["encoder.layer1.0.conv1"]
    with pytest.raises(UnknownNameError, match="valid layers: encoder"):
        layers.resolve_layers(tiny, "decoder.blocks.9")
    assert hook_count(tiny.model) == 0


def test_curated_layers_for_unet(tiny):
    curated = layers.curated_layers(tiny)
    assert curated[:4] == ["encoder.relu", "encoder.layer1", "encoder.layer2", "encoder.layer3"]
    assert [n for n in curated if n.startswith("decoder.blocks")] == [f"decoder.blocks.{i}" for i in range(5)]
    assert layers.spatial_layers(tiny)[curated[-1]].kind == "pre-head"


def test_method_lookup():
    assert get_method("gradcam++").name == "GradCAMPlusPlus"
    assert get_method("KPCA-CAM").name == "KPCA_CAM"
    assert get_method("hirescam").name == "HiResCAM"
    with pytest.raises(UnknownNameError, match="valid methods: GradCAM"):
        get_method("nope")
    assert all(m.from_cache for m in resolve_methods("all"))
    assert len(resolve_methods("every")) == len(METHODS) == 18  # 17 grad-cam methods + ScoreCAM-TopK


def test_targets(tiny, image64):
    assert class_index("Alpha", tiny.spec.classes) == 1
    assert class_index("2", tiny.spec.classes) == 2
    with pytest.raises(UnknownNameError):
        class_index(7, tiny.spec.classes)
    r = rectangle_mask((64, 64), 50, 40, 10, 5)
    assert r.sum() == 40 * 35
    with pytest.raises(EmptyTargetError, match="outside"):
        rectangle_mask((64, 64), 100, 100, 120, 120)
    with torch.no_grad():
        tiny.model.segmentation_head[0].bias[2] = -1e4  # class 2 is never predicted
    assert not (engine.predict(tiny, image64).mask == 2).any()
    absent = 2
    with pytest.raises(EmptyTargetError, match="predicted nowhere"):
        engine.capture(tiny, image64, TargetSpec("predicted", absent), ["decoder.blocks.3"])


def test_eigen_methods_memory_at_256_full_resolution(tiny):
    """EigenCAM/SegEigenCAM on a 256×256 layer: grad-cam's full SVD would need 16 GiB (float32 U)."""
    import tracemalloc

    img = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    cap = engine.capture(tiny, img, TargetSpec("class", 1), ["decoder.blocks.4"])
    assert cap.activations["decoder.blocks.4"].shape[2:] == (256, 256)
    for name in ("eigencam", "segeigencam", "eigengradcam"):
        tracemalloc.start()
        res = engine.cam_from_capture(cap, METHODS[name], "decoder.blocks.4")
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 2 * 2**30, f"{name} peak {peak / 2**20:.0f} MiB"
        assert peak < 100 * 2**20  # in fact ~tens of MiB
        assert res.cam.max() > 0.99


def test_segcam_json_has_one_schema_that_names_every_wrong_field(tiny_folder, capsys):
    import json

    from cam_core.cli import main
    from cam_core.model.spec_file import json_schema

    # what the hand-written checks let through: class names that are not names, text for a number
    (tiny_folder / "segcam.json").write_text(
        json.dumps({"classes": [{"name": "a"}, "b", "c"], "microns_per_pixel": "0.25", "description": 7})
    )
    with pytest.raises(ModelLoadError) as info:
        models.load_folder(tiny_folder)
    msg = str(info.value)  # main: loaded, with the class named "{'name': 'a'}"
    assert "classes must be a list with one name per output channel" in msg
    assert "microns_per_pixel must be a number in 0.05–20" in msg
    assert "description must be text" in msg
    schema = json_schema()
    assert set(schema["properties"]) >= {"classes", "colors", "preprocessing", "decision_rule", "microns_per_pixel"}
    # the decision rule's own schema (cam_core.model.rules), not "any object"
    assert set(schema["$defs"]["DecisionRule"]["properties"]) == {"type", "threshold"}
    assert main(["models", "--schema"]) == 0
    assert json.loads(capsys.readouterr().out) == schema


def test_an_unreadable_model_file_names_the_user_and_the_fix(tiny_folder, monkeypatch):
    """In a container the server's user cannot read a host's 0600 model.safetensors (what
    save_pretrained writes): main said "unreadable (No such file or directory: /models/…)"."""
    import os

    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p).endswith("model.safetensors") else real(p, mode))
    with pytest.raises(ModelLoadError) as info:
        models.load_folder(tiny_folder)
    msg = str(info.value)
    assert "permission denied reading model.safetensors" in msg
    assert f"uid {os.getuid()}" in msg
    assert f"chmod -R a+rX {tiny_folder.name}" in msg
    assert str(tiny_folder.parent) not in msg  # the folder's name, never the server's path
    (entry,) = [e for e in models.discover(tiny_folder.parent) if e.name == tiny_folder.name]
    assert "permission denied" in (entry.error or "")
