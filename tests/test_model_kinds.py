"""The models people have, beyond smp's save_pretrained folder: transformer encoders whose layers
output tokens (B×N×C), smp's Segformer, a transformers SegFormer folder and a module built by a
factory from an installed package. Each is explained, and compared to grad-cam's own output."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from conftest import CLASSES, MODEL_KINDS, tiny_dpt, tiny_segformer, write_model_folder
from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

from cam_core import engine
from cam_core.engine.methods import METHODS
from cam_core.engine.targets import TargetSpec
from cam_core.errors import InputError
from cam_core.model import layers
from cam_core.model.models import preprocess
from cam_core.model.state import hook_count

GRADIENT_METHODS = ["gradcam", "hirescam", "gradcamplusplus", "xgradcam", "layercam", "eigencam"]


def reference(model, layer, x, cls, region, info):
    """grad-cam's own class, with its reshape_transform for a token layer."""
    module = dict(model.named_modules())[layer]
    with info.grad_cam_cls()(
        model, [module], reshape_transform=layers.reshape_transform(module, tuple(x.shape))
    ) as cam:
        return cam(input_tensor=x, targets=[SemanticSegmentationTarget(cls, region.astype(np.float32))])[0]


@pytest.fixture(scope="module")
def dpt():
    from conftest import wrap

    return wrap(tiny_dpt())


@pytest.fixture(scope="module")
def image():  # odd, non-square: padded to 96×128, a 6×8 patch grid
    return np.random.default_rng(3).integers(0, 256, size=(75, 109, 3), dtype=np.uint8)


def test_token_layers_are_found_with_their_grid_and_offered(dpt):
    assert dpt.multiple == 32  # the ViT's stride is 16, but DPT's 1/32 branch needs an even grid
    spatial = layers.spatial_layers(dpt)
    block = spatial["encoder.model.blocks.5"]
    assert (block.tokens, block.stride, block.channels) == (1, 16, 32)  # 1 CLS token, patch 16
    assert spatial["decoder.fusion_blocks.3"].tokens is None
    curated = layers.curated_layers(dpt)
    assert [n for n in curated if spatial[n].tokens is not None] == [f"encoder.model.blocks.{i}" for i in (2, 5, 8, 11)]
    assert curated.index("encoder.model.blocks.11") < curated.index("decoder.fusion_blocks.0")  # execution order
    assert "encoder.model.patch_embed.norm" not in spatial  # N×H×W×C, not a map: never read as one


@pytest.mark.parametrize("name", GRADIENT_METHODS)
def test_a_cam_on_a_token_layer_equals_gradcam_with_its_reshape_transform(dpt, image, name):
    region = np.zeros(image.shape[:2], bool)
    region[10:50, 20:70] = True
    layer = "encoder.model.blocks.8"
    cap = engine.capture(dpt, image, TargetSpec("mask", 1, region), [layer])
    assert cap.activations[layer].shape == (1, 32, 6, 8)  # padded to 96×128 (DPT needs 32) → 6×8 patches
    ours = engine.cam_from_capture(cap, METHODS[name], layer).cam
    x, _ = engine.prepare(dpt, image)
    ref = reference(dpt.model, layer, x, 1, np.pad(region, ((0, 21), (0, 19))), METHODS[name])[:75, :109]
    assert np.abs(ours - ref).max() <= 1e-5, name
    assert ours.max() > 0.99
    assert hook_count(dpt.model) == 0


def test_several_token_layers_in_one_capture_equal_one_layer_captures(dpt, image):
    region = np.zeros(image.shape[:2], bool)
    region[30:60, 40:90] = True
    names = ["encoder.model.blocks.2", "encoder.model.blocks.11", "decoder.fusion_blocks.2"]
    both = engine.capture(dpt, image, TargetSpec("mask", 2, region), names)
    for n in names:
        one = engine.capture(dpt, image, TargetSpec("mask", 2, region), [n])
        np.testing.assert_allclose(both.gradients[n], one.gradients[n], rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(both.activations[n], one.activations[n])


def test_a_method_with_passes_of_its_own_runs_on_a_token_layer(dpt, image):
    region = np.zeros(image.shape[:2], bool)
    region[10:50, 20:70] = True
    res = engine.run_method(
        dpt, image, TargetSpec("mask", 1, region), METHODS["scorecam-topk"], "encoder.model.blocks.5"
    )
    assert res.cam.shape == image.shape[:2]
    assert np.ptp(res.cam) > 0
    with pytest.raises(InputError, match="token layer"):
        engine.run_method(dpt, image, TargetSpec("mask", 1, region), METHODS["ablationcam"], "encoder.model.blocks.5")
    assert hook_count(dpt.model) == 0


@pytest.mark.parametrize("name", ["gradcam", "hirescam"])
def test_smp_segformer_is_explained_and_equals_gradcam(name):
    from conftest import wrap

    loaded = wrap(tiny_segformer())
    img = np.random.default_rng(5).integers(0, 256, size=(96, 128, 3), dtype=np.uint8)
    region = np.zeros(img.shape[:2], bool)
    region[20:70, 30:100] = True
    curated = layers.curated_layers(loaded)
    layer = layers.default_layer(loaded)
    assert layer in curated
    for lay in [curated[0], layer]:
        cap = engine.capture(loaded, img, TargetSpec("mask", 1, region), [lay])
        ours = engine.cam_from_capture(cap, METHODS[name], lay).cam
        ref = reference(loaded.model, lay, preprocess(img, loaded.spec), 1, region, METHODS[name])
        assert np.abs(ours - ref).max() <= 1e-5, (name, lay)


# ---------------------------------------------------------------- every kind of folder


@pytest.mark.parametrize("kind", list(MODEL_KINDS))
def test_each_kind_loads_lists_and_explains_as_grad_cam_does(kind, tmp_path, lab_site):
    from cam_core.model import models

    folder = write_model_folder(kind, tmp_path / "models" / "m")
    assert models.check(folder) == []
    (entry,) = [e for e in models.discover(folder.parent) if e.name == "m"]
    assert entry.error is None
    assert entry.kind == MODEL_KINDS[kind]
    assert entry.classes == CLASSES
    loaded = models.load_folder(folder, device=torch.device("cpu"))
    hooks = hook_count(loaded.model)  # transformers keeps hooks of its own: they stay, none is added
    assert loaded.kind == MODEL_KINDS[kind]
    assert loaded.spec.classes == CLASSES
    curated = layers.curated_layers(loaded)
    layer = layers.default_layer(loaded)
    assert layer in curated
    assert len(curated) >= 2
    img = np.random.default_rng(7).integers(0, 256, size=(96, 128, 3), dtype=np.uint8)
    region = np.zeros(img.shape[:2], bool)
    region[20:70, 30:100] = True
    for lay in dict.fromkeys([curated[0], layer]):
        cap = engine.capture(loaded, img, TargetSpec("mask", 1, region), [lay])
        assert cap.prediction.mask.shape == img.shape[:2]
        ours = engine.cam_from_capture(cap, METHODS["gradcam"], lay).cam
        ref = reference(loaded.model, lay, preprocess(img, loaded.spec), 1, region, METHODS["gradcam"])
        assert np.abs(ours - ref).max() <= 1e-5, (kind, lay)
    assert hook_count(loaded.model) == hooks


def test_a_transformers_folder_reads_its_classes_and_normalisation_and_upsamples_as_its_processor(tmp_path):
    from conftest import CLASSES, write_model_folder

    from cam_core.model import models

    folder = write_model_folder("transformers", tmp_path / "models" / "hf")
    loaded = models.load_folder(folder, device=torch.device("cpu"))
    assert loaded.spec.classes == CLASSES  # config.json id2label
    assert loaded.spec.mean == (0.5, 0.5, 0.5)  # preprocessor_config.json
    assert loaded.spec.std == (0.25, 0.25, 0.25)
    assert loaded.loaded_from == "model.safetensors (transformers' own loader)"
    x = torch.randn(1, 3, 96, 160)
    with torch.no_grad():
        inner = loaded.model.model(pixel_values=x).logits
        assert inner.shape[-2:] == (24, 40)  # SegFormer's logits are at 1/4
        want = torch.nn.functional.interpolate(inner, size=(96, 160), mode="bilinear", align_corners=False)
        torch.testing.assert_close(loaded.model(x), want)


def test_a_transformers_folder_without_the_package_names_the_pin_and_the_image_build(tmp_path, monkeypatch):
    from cam_core.errors import ModelLoadError
    from cam_core.model import models
    from cam_core.model.kinds import TRANSFORMERS_PIN

    folder = write_model_folder("transformers", tmp_path / "models" / "hf")
    monkeypatch.setitem(sys.modules, "transformers", None)  # what `import transformers` meets where it is absent
    with pytest.raises(ModelLoadError) as err:
        models.load_folder(folder, device=torch.device("cpu"))
    said = str(err.value)
    assert said.startswith("hf: a transformers model folder needs the optional package")
    assert f"pip install {TRANSFORMERS_PIN}" in said
    assert "--build-arg EXTRAS=1" in said
    assert str(tmp_path) not in said  # the folder's name, not the server's path
    assert models.check(folder) == [said]  # `models --check` says the same line


def test_a_factory_in_the_models_folder_is_refused_without_running_it(tmp_path, monkeypatch):
    from cam_core.errors import ModelLoadError
    from cam_core.model import models

    root = tmp_path / "models"
    marker = tmp_path / "ran"
    (root / "evil_pkg").mkdir(parents=True)
    (root / "evil_pkg" / "__init__.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\ndef build():\n    raise SystemExit\n"
    )
    monkeypatch.syspath_prepend(str(root))  # even importable, it is refused
    monkeypatch.setenv("SEGCAM_MODELS_DIR", str(root))
    folder = root / "m"
    folder.mkdir()
    (folder / "segcam.json").write_text('{"factory": "evil_pkg:build", "classes": ["a", "b"]}')
    torch.save({"w": torch.zeros(1)}, folder / "model.pth")
    with pytest.raises(ModelLoadError, match="refused: 'evil_pkg' lies in the models folder"):
        models.load_folder(folder, device=torch.device("cpu"))
    (entry,) = [e for e in models.discover(root) if e.name == "m"]
    assert "refused" in (entry.error or "")
    assert models.check(folder) == [entry.error]
    monkeypatch.syspath_prepend(str(tmp_path))  # the models folder itself importable as a package
    (folder / "segcam.json").write_text('{"factory": "models.evil_pkg:build", "classes": ["a", "b"]}')
    assert "is refused: 'models' lies in the models folder" in models.check(folder)[0]
    assert not marker.exists()  # its code never ran
    (folder / "segcam.json").write_text('{"factory": "no_such_lab_package:build"}')
    assert models.check(folder) == [
        "m: factory package 'no_such_lab_package' is not installed where the server runs (pip install it there)"
    ]


def test_a_factory_with_weights_of_another_module_names_the_keys(tmp_path, lab_site):
    from conftest import write_model_folder

    from cam_core.model import models

    folder = write_model_folder("factory (lab package)", tmp_path / "models" / "m")
    spec = (folder / "segcam.json").read_text().replace('"classes": 3', '"classes": 3, "width": 4')
    (folder / "segcam.json").write_text(spec)
    problems = models.check(folder)
    assert problems
    assert all("weights do not match segcam.json's factory" in p for p in problems), problems
    assert any("of wrong shape (e.g. " in p for p in problems), problems


def test_a_factory_checkpoint_converts_to_safetensors_and_gives_the_same_output(tmp_path, lab_site, capsys):
    from cam_core import cli
    from cam_core.model import models

    folder = write_model_folder("factory (lab package)", tmp_path / "models" / "m")
    out = tmp_path / "m_safe"
    assert cli.main(["convert", str(folder), "--out", str(out)]) == 0
    assert "model.safetensors, segcam.json" in capsys.readouterr().out
    a = models.load_folder(folder, device=torch.device("cpu"))
    b = models.load_folder(out, device=torch.device("cpu"))
    assert (b.kind, b.loaded_from) == ("factory", "model.safetensors")
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(b.model(x), a.model(x), rtol=0, atol=0)
    assert cli.main(["convert", str(out), "--out", str(tmp_path / "again")]) == 2  # already safetensors
    assert "nothing to convert" in capsys.readouterr().err
