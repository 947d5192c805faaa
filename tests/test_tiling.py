"""Tiled inference: no seams, agreement with the untiled CAM, and the CLI's large-image path."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import REPO, explain_args
from PIL import Image

from cam_core import cli, engine, grid, limits
from cam_core.engine import tiling
from cam_core.engine.methods import METHODS
from cam_core.engine.targets import TargetSpec
from cam_core.errors import InputError

# The tolerance the README states: Pearson r >= 0.95 and mean |difference| <= 0.08 (CAM in [0, 1]).
MIN_R, MAX_MEAN_ABS = 0.95, 0.08


@pytest.fixture(scope="module")
def tissue():
    img = np.asarray(Image.open(REPO / "samples/images/test_12_002.png").convert("RGB"))
    return np.pad(img, ((0, 128), (0, 128), (0, 0)), mode="symmetric")  # 384², real H&E


def test_boxes_cover_with_overlap():
    boxes = [c.box for c in grid.grid(700, 1000, 512, 64)]
    covered = np.zeros((1000, 700), int)
    for y0, x0, y1, x1 in boxes:
        covered[y0:y1, x0:x1] += 1
        assert (y1 - y0, x1 - x0) == (512, 512)
    assert covered.min() >= 1
    with pytest.raises(InputError):
        [c.box for c in grid.grid(100, 100, 64, 64)]


@pytest.mark.parametrize("layer", ["decoder.blocks.3", "decoder.blocks.4"])
@pytest.mark.parametrize("method", ["gradcam", "hirescam"])
def test_tiled_agrees_with_untiled_and_has_no_seams(tiny, tissue, layer, method):
    info = METHODS[method]
    cap = engine.capture(tiny, tissue, TargetSpec("class", 1), [layer])
    full = engine.cam_from_capture(cap, info, layer).cam
    pred, (res,) = tiling.explain_tiled(tiny, tissue, TargetSpec("class", 1), layer, [info], tile=256, overlap=64)
    assert res.cam.shape == full.shape
    assert res.cam.min() == 0.0
    assert res.cam.max() == pytest.approx(1.0, abs=1e-5)  # one global normalisation
    r = np.corrcoef(full.ravel(), res.cam.ravel())[0, 1]
    assert r >= MIN_R, r
    assert np.abs(full - res.cam).mean() <= MAX_MEAN_ABS
    # No seam: across the columns where one tile hands over to the next, the map changes no
    # more than it does elsewhere (a seam would be a jump many times the typical step).
    step = np.abs(np.diff(res.cam, axis=1)).mean(axis=0)
    boundaries = [128 + 64, 256]  # where the first tile's weight ends / the last tile starts
    assert max(step[b - 2 : b + 2].max() for b in boundaries) <= 4 * np.median(step) + 1e-3
    assert (pred.mask == cap.prediction.mask).mean() > 0.95


def test_methods_with_own_passes_refused(tiny, tissue):
    with pytest.raises(InputError, match="cannot run tiled"):
        tiling.explain_tiled(tiny, tissue, TargetSpec("class", 1), "decoder.blocks.3", [METHODS["scorecam"]])


@pytest.mark.parametrize("method", ["gradcam", "hirescam", "eigencam", "gradcamplusplus"])
def test_tiled_rectangle_target_matches_untiled(tiny, tissue, method):
    """A local target: most tiles hold no target pixel. Grad-CAM's channel weights are global, so
    tiles without the target must still contribute their activations (main had r = 0.36 on a
    1024² image: it skipped them), and Eigen maps must be one projection over the whole map."""
    from cam_core.engine.targets import rectangle_mask

    info = METHODS[method]
    rect = TargetSpec("mask", 1, rectangle_mask(tissue.shape[:2], 40, 40, 120, 120))
    cap = engine.capture(tiny, tissue, rect, ["decoder.blocks.2"])
    full = engine.cam_from_capture(cap, info, "decoder.blocks.2").cam
    _, (res,) = tiling.explain_tiled(tiny, tissue, rect, "decoder.blocks.2", [info], tile=256, overlap=64)
    r = np.corrcoef(full.ravel(), res.cam.ravel())[0, 1]
    assert r >= MIN_R, r  # main: GradCAM 0.14, GradCAM++ 0.13 here


def test_tiling_uses_the_given_rule(tiny, tissue):
    from cam_core.model.rules import DecisionRule

    strict = DecisionRule(type="background_below", threshold=0.05)
    pred_tiled, _ = tiling.explain_tiled(
        tiny,
        tissue,
        TargetSpec("class", 1),
        "decoder.blocks.3",
        [METHODS["gradcam"]],
        tile=256,
        overlap=64,
        rule=strict,
    )
    untiled = engine.predict(tiny, tissue, strict)
    assert pred_tiled.rule == strict
    assert (pred_tiled.mask == untiled.mask).mean() > 0.95
    default = engine.predict(tiny, tissue)
    assert (pred_tiled.mask != default.mask).any()  # the rule made a difference to begin with


def test_cli_tiles_large_images(tiny_folder, tissue, tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "TILE_ABOVE_PIXELS", 300 * 300)
    monkeypatch.setattr(tiling, "DEFAULT_TILE", 256)
    path = tmp_path / "big.png"
    Image.fromarray(tissue).save(path)
    out = tmp_path / "out"
    extra = ("--layer", "decoder.blocks.3", "--method", "GradCAM", "--out", str(out))
    assert cli.main(explain_args(path, tiny_folder, *extra)) == 0
    assert np.load(out / "cam.npy").shape == (384, 384)
    info = json.loads((out / "result.json").read_text())
    assert json.loads((out / "summary.json").read_text())["tiled"] is True
    assert "tiled: 4 tiles of 256²" in " ".join(info["notes"])
    assert info["tiles"] == 4
    assert info["source"] == "tiled"
