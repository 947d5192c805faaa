"""The CLI on a save_pretrained folder: outputs, one-pass counting, exit code 2 on bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import explain_args
from PIL import Image

from cam_core import cli, engine
from cam_core.engine.methods import METHODS
from cam_core.engine.result import ResultRecord
from cam_core.model import models as models_mod
from cam_core.output import bundle


@pytest.fixture
def tile(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "tile.png"
    Image.fromarray(rng.integers(0, 256, size=(70, 90, 3), dtype=np.uint8)).save(path)  # not a multiple of 32
    return path


def test_explain_writes_outputs(tiny_folder, tile, tmp_path):
    out = tmp_path / "out"
    extra = ("--layer", "decoder.blocks.3", "--method", "gradcam", "--out", str(out))
    rc = cli.main(explain_args(tile, tiny_folder, *extra, cls="alpha"))
    assert rc == 0
    # one writer (cam_core.output.bundle) for the CLI's folders and the app's ZIP: the same names
    names = sorted(p.name for p in out.iterdir() if p.name != "summary.json")  # summary.json: the run's
    assert names == sorted(set(bundle.FILES) - {"objects.geojson", "truth_compare.png"})
    with pytest.raises(KeyError, match=r"declared: mask\.png"):
        bundle.files(None, {}, {"mask.jpg": b""})
    # the app's ZIP goes through the same writer: without a shared scale, the map's own, stated
    record = json.loads((out / "result.json").read_text())
    ResultRecord.model_validate(record)  # the schema `schema result` prints
    res = engine.CamResult(
        np.load(out / "cam.npy"), np.load(out / "cam_raw.npy"), "GradCAM", "l", "predicted", "m", "cpu", 0.0, "cache"
    )
    files = bundle.files(res, {**record, "signed_scale": None, "signed_scale_classes": None}, {})
    again = json.loads(files["result.json"])
    assert again["signed_scale"] == pytest.approx(record["signed_scale"])
    assert again["signed_scale_classes"] == ["alpha"]
    assert bundle.to_zip(files)[:2] == b"PK"
    cam = np.load(out / "cam.npy")
    assert cam.dtype == np.float32
    assert cam.shape == (70, 90)  # cropped back to the input size
    assert cam.min() >= 0.0
    assert cam.max() <= 1.0
    info = json.loads((out / "result.json").read_text())
    assert info["method"] == "GradCAM"
    assert info["layer"] == "decoder.blocks.3"
    assert info["class"] == "alpha"
    assert info["device"] == str(models_mod.default_device())  # where the model ran, GPU hosts included
    assert info["target"] == "class"
    assert info["class_index"] == 1
    assert info["source"] == "cache"
    assert info["decision_rule"] == {"type": "argmax"}
    assert info["image"]["size_hw"] == [70, 90]
    assert info["target_pixels"] == 70 * 90
    assert {"torch", "grad-cam", "segmentation-models-pytorch"} <= set(info["versions"])
    assert Image.open(out / "overlay.png").size == (90, 70)
    # The signed picture: 0 maps to the diverging colormap's centre, ±signed_scale to its ends.
    raw = np.load(out / "cam_raw.npy")
    assert info["signed_scale"] == pytest.approx(float(np.abs(raw).max()), rel=1e-5)
    assert info["signed_scale_classes"] == [info["class"]]  # the CLI scales each map by itself
    signed = np.asarray(Image.open(out / "heatmap_signed.png"))
    from cam_core.output import render

    np.testing.assert_array_equal(signed, render.signed_heatmap(raw, info["signed_scale"]))
    unit = render.signed_unit(np.array([-2.0, 0.0, 1.0, 2.0, 5.0]), 2.0)
    np.testing.assert_allclose(unit, [0.0, 0.5, 0.75, 1.0, 1.0])  # centred on 0, clipped at ±scale


def test_all_layers_all_methods_one_forward_one_backward(tiny_folder, tile, tmp_path, monkeypatch):
    counts = {"forward": 0, "backward": 0}
    real = models_mod.load_folder

    def counting_load(*args, **kwargs):
        loaded = real(*args, **kwargs)

        def on_forward(module, inputs, output):
            counts["forward"] += 1
            if output.requires_grad:
                output.register_hook(lambda g: counts.__setitem__("backward", counts["backward"] + 1))

        loaded.model.register_forward_hook(on_forward)
        return loaded

    monkeypatch.setattr(models_mod, "load_folder", counting_load)
    out = tmp_path / "grid"
    rc = cli.main(
        ["explain", str(tile), "--model", str(tiny_folder), "--layer", "all", "--method", "all", "--out", str(out)]
    )
    assert rc == 0
    # The layer probe (run once per model, no gradients) is the only other forward.
    assert counts == {"forward": 2, "backward": 1}
    summary = json.loads((out / "summary.json").read_text())
    cache_methods = [m for m in METHODS.values() if m.from_cache]
    written = list(out.glob("*/*/cam.npy"))
    assert summary["results"] == len(written)
    # Every one-pass method on every curated layer, except KPCA-CAM on layers above its size limit.
    assert len(written) >= (len(cache_methods) - 1) * 6
    assert summary["skipped"]  # KPCA-CAM is refused on the full-resolution layers...
    assert all("KPCA" in s for s in summary["skipped"])  # ...and nothing else is


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["explain", "missing.png"], "not found"),
        (["explain", "{bad}"], "not a readable image"),
        (["explain", "{tile}", "--model", "nope"], "unknown model 'nope'"),
        (
            ["explain", "{tile}", "--model", "{model}", "--class", "gamma"],
            "unknown class 'gamma'; valid classes: 0=background",
        ),
        (["explain", "{tile}", "--model", "{model}", "--layer", "decoder.nope"], "unknown layer 'decoder.nope'"),
        (["explain", "{tile}", "--model", "{model}", "--layer", "encoder.layer1.0.conv1.weight"], "unknown layer"),
        (
            ["explain", "{tile}", "--model", "{model}", "--method", "magiccam"],
            "unknown method 'magiccam'; valid methods: GradCAM",
        ),
        (["explain", "{tile}", "--model", "{model}", "--target", "rect:1,2"], "bad rectangle"),
        (["layers", "--model", "{empty}"], "no config.json"),
    ],
)
def test_bad_input_exits_2_with_one_line(args, needle, tiny_folder, tile, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"<html>not an image</html>")
    empty = tmp_path / "empty_model"
    empty.mkdir()
    fill = {"{tile}": str(tile), "{bad}": str(bad), "{model}": str(tiny_folder), "{empty}": str(empty)}
    rc = cli.main([fill.get(a, a) for a in args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1, err
    assert err[0].startswith("error: ")
    assert needle in err[0]
    assert "Traceback" not in err[0]


def test_non_spatial_layer_refused(tmp_path, tile, capsys):
    """smp's aux classification head ends in Flatten: a real layer with no CAM."""
    import segmentation_models_pytorch as smp

    folder = tmp_path / "aux"
    smp.Unet(
        "resnet18", encoder_weights=None, classes=2, decoder_channels=(16, 8, 8, 8, 8), aux_params={"classes": 2}
    ).save_pretrained(str(folder))
    rc = cli.main(explain_args(tile, folder, "--layer", "classification_head.2"))
    err = capsys.readouterr().err
    assert rc == 2
    assert "does not output a spatial feature map" in err
    assert cli.main(explain_args(tile, folder, "--out", str(tmp_path / "o"))) == 0


def test_models_lists_folder_and_broken_entries(tiny_folder, tmp_path, capsys):
    broken = tiny_folder.parent / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    rc = cli.main(["models", "--models-dir", str(tiny_folder.parent)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "tiny_unet" in out
    assert "classes: background, alpha, beta" in out
    assert "broken" in out
    assert "CANNOT LOAD" in out
    assert "not valid JSON" in out
    assert "consep-unet-regnetx004" in out  # the built-in one is still listed


def test_models_dir_env(tiny_folder, monkeypatch, capsys):
    monkeypatch.setenv("SEGCAM_MODELS_DIR", str(tiny_folder.parent))
    assert cli.main(["layers", "--model", "tiny_unet"]) == 0
    assert "decoder.blocks.4" in capsys.readouterr().out


def test_every_file_schema_is_printed(capsys):
    """One schema per JSON file the tool reads or writes, each a pydantic model (cam_core.cli.SCHEMAS)."""
    from cam_core.cli import commands

    for name in commands.SCHEMAS:
        assert cli.main(["schema", name]) == 0
        schema = json.loads(capsys.readouterr().out)
        assert schema["type"] == "object", name
        assert schema["properties"], name
    assert "class" in commands.schema_of("result")["properties"]  # the file's own names, not Python's
    with pytest.raises(SystemExit):
        cli.main(["schema", "results"])
    assert "choose from 'segcam', 'result'" in capsys.readouterr().err
