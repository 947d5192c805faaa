"""The training script's smoke mode and the evaluation command, on real CoNSeP tiles."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO
from PIL import Image
from safetensors.torch import load_file

from cam_core import cli
from cam_core.data.stain import hed_to_rgb, restain, rgb_to_hed
from cam_core.trust.evaluate import scores

DATA = REPO.parent / "shared" / "data" / "consep"


@pytest.mark.slow
def test_training_smoke_writes_a_loadable_model(tmp_path):
    """Two optimiser steps on four tiles (samples/ stands in for CoNSeP when it is absent)."""
    data = DATA
    if not (data / "train.txt").is_file():  # CI on a machine without the shared data set
        data = tmp_path / "data"
        (data / "images").mkdir(parents=True)
        (data / "masks").mkdir()
        names = []
        for i, p in enumerate(sorted((REPO / "samples/images").glob("*.png"))):
            name = f"train_{i + 1}_000"
            names.append(name)
            (data / "images" / f"{name}.png").write_bytes(p.read_bytes())
            (data / "masks" / f"{name}.png").write_bytes((REPO / "samples/masks" / p.name).read_bytes())
        (data / "train.txt").write_text("\n".join(names))
    out = tmp_path / "model"

    def train(*extra: str, to: Path = out) -> subprocess.CompletedProcess:
        cmd = [sys.executable, str(REPO / "models/train_consep.py"), "--smoke", *extra]
        cmd += ["--data", str(data), "--out", str(to), "--val-tiles", "1"]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)

    proc = train()
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "epoch 1:" in proc.stdout
    for name in ("config.json", "model.safetensors", "checkpoint.pt", "history.json", "training.json"):
        assert (out / name).is_file(), name
    (out / "segcam.json").write_text((REPO / "models/consep_unet_regnetx004/segcam.json").read_text())
    assert cli.main(["layers", "--model", str(out)]) == 0
    resumed = train("--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed at epoch 1" in resumed.stdout

    # Warm start under bfloat16 autocast: with lr 0 the written weights must be the loaded ones
    # (BatchNorm's running statistics still move in training mode, so they are left out).
    warm = train("--init-from", str(out), "--precision", "bf16", "--lr", "0", to=tmp_path / "warm")
    assert warm.returncode == 0, warm.stderr[-2000:]
    assert "warm start from" in warm.stdout
    before, after = load_file(str(out / "model.safetensors")), load_file(str(tmp_path / "warm/model.safetensors"))
    assert before.keys() == after.keys()
    stats = ("running_mean", "running_var", "num_batches_tracked")
    weights = [k for k in before if not k.endswith(stats)]
    assert len(weights) > 100
    assert all(torch.equal(before[k], after[k]) for k in weights)


def test_scores_from_confusion():
    # truth rows, prediction columns; classes bg, a, b
    conf = np.array([[90, 5, 5], [2, 8, 0], [0, 4, 6]])
    s = scores(conf, ["bg", "a", "b"], ["a", "b"])
    assert s["per_class"]["a"]["dice"] == pytest.approx(2 * 8 / (2 * 8 + 9 + 2))
    assert s["per_class"]["b"]["iou"] == pytest.approx(6 / (6 + 5 + 4))
    # nuclei: every foreground class merged
    assert s["nuclei_dice"] == pytest.approx(2 * 18 / (28 + 20))
    assert s["macro_dice"] == pytest.approx((s["per_class"]["a"]["dice"] + s["per_class"]["b"]["dice"]) / 2)


def test_hed_roundtrip_and_restain_is_seeded():
    img = np.asarray(Image.open(REPO / "samples/images/test_13_008.png"))
    back = (hed_to_rgb(rgb_to_hed(img / 255.0)) * 255).round()
    assert np.abs(back - img).max() <= 1
    a = restain(img, "hed-strong", np.random.default_rng(0))
    b = restain(img, "hed-strong", np.random.default_rng(0))
    assert np.array_equal(a, b)
    light = np.abs(restain(img, "hed-light", np.random.default_rng(1)).astype(int) - img).mean()
    strong = np.abs(restain(img, "hed-strong", np.random.default_rng(1)).astype(int) - img).mean()
    assert 0 < light < strong


def test_evaluate_json_on_samples(capsys):
    rc = cli.main(
        [
            "evaluate",
            "--data",
            str(REPO / "samples"),
            "--json",
            "--restain",
            "none,hed-strong",
            "--macro-classes",
            "inflammatory,epithelial,spindle",
        ]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    for setting in ("none", "hed-strong"):
        r = out["settings"][setting]
        assert {"per_class", "nuclei_dice", "macro_dice"} <= set(r)
        assert r["tiles"] == 7


def test_evaluate_bad_rule_exits_2(capsys):
    assert cli.main(["evaluate", "--data", str(REPO / "samples"), "--rule", "bg:7"]) == 2
    assert "bad decision rule" in capsys.readouterr().err
