"""#24 item 1: state-dict checkpoints and Lightning checkpoints, read with torch.load(weights_only=True)
only, the architecture from segcam.json; a pickle payload is refused without running."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import CLASSES, TINY_UNET_ARCH, tiny_unet
from test_engine_equivalence import gradcam_reference

from cam_core import cli, engine
from cam_core.engine.methods import METHODS
from cam_core.engine.targets import TargetSpec
from cam_core.errors import ModelLoadError
from cam_core.model import models
from cam_core.model.models import preprocess

ARCH = TINY_UNET_ARCH


def _folder(tmp_path, state, name="model.pth", spec=None):
    folder = tmp_path / "models" / "from_training"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / name)
    (folder / "segcam.json").write_text(json.dumps(spec or {"classes": CLASSES, "architecture": ARCH}))
    return folder


def _same_cam_as_gradcam(loaded, image):
    region = np.zeros(image.shape[:2], bool)
    region[8:48, 16:56] = True
    cap = engine.capture(loaded, image, TargetSpec("mask", 1, region), ["decoder.blocks.2"])
    ours = engine.cam_from_capture(cap, METHODS["gradcam"], "decoder.blocks.2").cam
    ref = gradcam_reference(
        loaded.model,
        METHODS["gradcam"],
        "decoder.blocks.2",
        preprocess(image, loaded.spec),
        1,
        region.astype(np.float32),
    )
    assert ours.max() > 0.99
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_a_state_dict_checkpoint_loads_and_explains_as_grad_cam_does(tmp_path, image64):
    trained = tiny_unet(seed=4)
    loaded = models.load_folder(_folder(tmp_path, trained.state_dict()))
    assert loaded.loaded_from == "model.pth (state dict, torch.load weights_only)"
    with torch.no_grad():
        x = preprocess(image64, loaded.spec)
        assert torch.allclose(loaded.model(x), trained(x), atol=1e-5)  # the same weights
    _same_cam_as_gradcam(loaded, image64)
    assert loaded.weights_sha256
    assert loaded.spec.classes == CLASSES


def test_a_lightning_checkpoint_loads_with_its_prefix_stripped(tmp_path, image64):
    trained = tiny_unet(seed=5)
    ckpt = {
        "epoch": 7,
        "global_step": 700,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": {f"model.{k}": v for k, v in trained.state_dict().items()},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-3}]}],
        "hyper_parameters": {"lr": 1e-3, "encoder": "resnet18"},
    }
    loaded = models.load_folder(_folder(tmp_path, ckpt, name="epoch=7-step=700.ckpt"))
    assert loaded.loaded_from == "epoch=7-step=700.ckpt (state dict, torch.load weights_only, prefix 'model.' stripped)"
    _same_cam_as_gradcam(loaded, image64)
    entries = {e.name: e for e in models.discover(tmp_path / "models")}
    assert entries["from_training"].error is None  # the model list checks it the same way
    assert entries["from_training"].classes == CLASSES


class _Payload:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))  # creates the file when unpickled


def test_a_pickle_payload_inside_a_pth_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned.txt"
    state = dict(tiny_unet().state_dict()) | {"extra": _Payload(str(marker))}
    folder = _folder(tmp_path, state)
    with pytest.raises(ModelLoadError, match=r"model\.pth is refused: it holds more than tensors") as err:
        models.load_folder(folder)
    assert "torch.save(model.state_dict(), 'model.pth')" in str(err.value)
    assert str(tmp_path) not in str(err.value)  # no server path
    entries = {e.name: e for e in models.discover(tmp_path / "models")}
    assert "is refused" in entries["from_training"].error
    assert not marker.exists()  # the payload never ran


def test_wrong_keys_missing_architecture_and_two_checkpoints_say_what_to_do(tmp_path):
    state = dict(tiny_unet().state_dict())
    gone = sorted(state)[0]
    del state[gone]
    state["head.extra.weight"] = torch.zeros(1)
    with pytest.raises(ModelLoadError, match=r"weights do not match segcam\.json's architecture") as err:
        models.load_folder(_folder(tmp_path, state))
    assert f"1 missing ({gone})" in str(err.value)
    assert "1 unexpected (head.extra.weight)" in str(err.value)
    folder = _folder(tmp_path, tiny_unet().state_dict(), spec={"classes": CLASSES})
    with pytest.raises(ModelLoadError, match=r"no config\.json and no architecture or factory in segcam\.json"):
        models.load_folder(folder)
    (folder / "segcam.json").write_text(json.dumps({"classes": CLASSES, "architecture": ARCH}))
    torch.save(tiny_unet(seed=9).state_dict(), folder / "best.pt")
    with pytest.raises(ModelLoadError, match=r"2 checkpoints \(best\.pt, model\.pth\); name the one"):
        models.load_folder(folder)
    (folder / "segcam.json").write_text(json.dumps({"classes": CLASSES, "architecture": ARCH, "weights": "best.pt"}))
    assert models.load_folder(folder).loaded_from.startswith("best.pt (state dict")
    arch = dict(ARCH, arch="Unet3000")
    (folder / "segcam.json").write_text(json.dumps({"classes": CLASSES, "architecture": arch, "weights": "best.pt"}))
    with pytest.raises(ModelLoadError, match=r"architecture\.arch 'Unet3000' is not an smp architecture \(Unet, "):
        models.load_folder(folder)


def test_the_schema_names_architecture_and_weights(capsys):
    assert cli.main(["models", "--schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert {"architecture", "weights"} <= set(schema["properties"])


def test_convert_writes_a_safetensors_folder_that_gives_the_same_output(tmp_path, image64, capsys):
    trained = tiny_unet(seed=6)
    ckpt = {"state_dict": {f"model.{k}": v for k, v in trained.state_dict().items()}, "epoch": 1}
    folder = _folder(tmp_path, ckpt, name="last.ckpt")
    out = tmp_path / "converted"
    assert cli.main(["convert", str(folder), "--out", str(out)]) == 0
    assert "config.json, model.safetensors, segcam.json" in capsys.readouterr().out  # and smp's README.md
    assert {"config.json", "model.safetensors", "segcam.json"} <= {p.name for p in out.iterdir()}
    assert "architecture" not in json.loads((out / "segcam.json").read_text())
    a, b = models.load_folder(folder), models.load_folder(out)
    assert b.loaded_from == "model.safetensors"
    with torch.no_grad():
        x = preprocess(image64, a.spec)
        assert torch.equal(a.model(x), b.model(x))
    assert cli.main(["convert", str(folder), "--out", str(out)]) == 2  # never over a folder's files
    assert "is not empty" in capsys.readouterr().err


def test_models_check_gives_one_line_per_problem(tmp_path, capsys):
    state = dict(tiny_unet().state_dict())
    del state[sorted(state)[0]]
    folder = _folder(tmp_path, state, spec={"classes": ["background", "nucleus"], "architecture": ARCH})
    assert cli.main(["models", "--check", str(folder)]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("from_training: weights do not match segcam.json's architecture: 1 missing (")
    assert "names 2 classes but the model has 3 output channel(s)" in lines[1]
    assert all(str(tmp_path) not in line for line in lines)  # no server path
    (folder / "model.pth").unlink()
    assert cli.main(["models", "--check", str(folder)]) == 1
    assert "no model.safetensors and no .pth/.pt/.ckpt checkpoint" in capsys.readouterr().out
    torch.save(tiny_unet().state_dict(), folder / "model.pth")
    (folder / "segcam.json").write_text(json.dumps({"classes": CLASSES, "architecture": ARCH}))
    assert cli.main(["models", "--check", str(folder)]) == 0
    assert "from_training: loads — model.pth (state dict" in capsys.readouterr().out


def test_an_unreadable_checkpoint_is_named_without_a_server_path(tmp_path, monkeypatch):
    from pathlib import Path

    folder = _folder(tmp_path, tiny_unet().state_dict())
    real = Path.read_bytes

    def denied(self):
        if self.suffix == ".pth":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(ModelLoadError, match=r"from_training/model\.pth cannot be read \(Permission denied\)") as err:
        models.load_folder(folder)
    assert str(tmp_path) not in str(err.value)
