"""Ground truth, predicted objects, the fn/fp/point targets and their CLI (issue #12)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from conftest import REPO
from PIL import Image

from cam_core import cli
from cam_core.data import truth as gt
from cam_core.data.images import load_image
from cam_core.data.objects import component_at, find_objects
from cam_core.engine import targets as tg
from cam_core.errors import EmptyTargetError, InputError
from cam_core.output import render

CLASSES = ["background", "alpha", "beta"]


def _png(arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", **kw)
    return buf.getvalue()


def _two_blobs() -> np.ndarray:
    m = np.zeros((40, 40), np.uint8)
    m[5:15, 5:15] = 1
    m[20:30, 22:34] = 2
    m[14, 15] = 1  # touches the first blob diagonally: the same object (8-connectivity)
    return m


def test_truth_reads_index_and_binary_masks_and_refuses_what_does_not_fit():
    labels = _two_blobs()
    t = gt.load_truth(_png(labels), CLASSES, (40, 40), name="gt.png")
    assert not t.binary
    assert (t.labels == labels).all()
    b = gt.load_truth(_png((labels > 0).astype(np.uint8) * 255), CLASSES, (40, 40))
    assert b.binary
    assert set(np.unique(b.labels)) == {0, 1}
    with pytest.raises(InputError, match="40×40 but the image is 50×40"):
        gt.load_truth(_png(labels), CLASSES, (40, 50))
    with pytest.raises(InputError, match=r"values 7 that are not classes.*0=background, 1=alpha"):
        gt.load_truth(_png(np.where(labels == 2, 7, labels).astype(np.uint8)), CLASSES, (40, 40))
    rgb = np.zeros((40, 40, 3), np.uint8)
    rgb[..., 0] = labels * 100
    with pytest.raises(InputError, match="colour picture"):
        gt.load_truth(_png(rgb), CLASSES, (40, 40))
    with pytest.raises(InputError, match="not a readable image"):
        gt.load_truth(b"<html>no</html>", CLASSES, (40, 40))


def test_compare_dice_and_counts():
    truth = gt.Truth(_two_blobs(), False, "t", "0" * 64)
    pred = truth.labels.copy()
    pred[5:10, 5:15] = 0  # half of blob 1 missed
    pred[0:3, 0:3] = 2  # a false 'beta'
    codes = gt.compare(pred, truth, 1)
    n = gt.counts(codes)
    assert n["false negative"] == 50
    assert n["false positive"] == 0
    assert n["true positive"] == int(((pred == 1) & (truth.labels == 1)).sum())
    d = gt.dice(pred, truth, CLASSES)
    tp1, p1, t1 = n["true positive"], int((pred == 1).sum()), int((truth.labels == 1).sum())
    assert d["alpha"] == pytest.approx(2 * tp1 / (p1 + t1), abs=1e-4)
    assert d["beta"] == pytest.approx(2 * 120 / (129 + 120), abs=1e-4)
    assert set(d) == {"alpha", "beta", gt.ANY_NUCLEUS}
    binary = gt.Truth((truth.labels > 0).astype(np.uint8), True, "b", "1" * 64)
    assert set(gt.dice(pred, binary, CLASSES)) == {gt.ANY_NUCLEUS}
    # binary truth: any nucleus, whatever the class asked
    assert (gt.compare(pred, binary, 2) == gt.compare(pred, binary, None)).all()


def test_fn_fp_targets_are_the_error_pixels_and_name_an_empty_error():
    truth = gt.Truth(_two_blobs(), False, "t", "0" * 64)
    pred = truth.labels.copy()
    pred[5:10, 5:15] = 0
    pred[0:3, 0:3] = 2
    fn = tg.region(tg.TargetSpec("fn", 1, truth=truth), pred, CLASSES)
    assert fn.sum() == 50
    assert fn[5:10, 5:15].all()
    fp = tg.region(tg.TargetSpec("fp", 2, truth=truth), pred, CLASSES)
    assert fp.sum() == 9
    with pytest.raises(EmptyTargetError, match="no false positive pixels for 'alpha'"):
        tg.region(tg.TargetSpec("fp", 1, truth=truth), pred, CLASSES)
    with pytest.raises(InputError, match=r"compares with the ground truth"):
        tg.TargetSpec("fn", 1)
    a, b = tg.TargetSpec("fn", 1, truth=truth), tg.TargetSpec("fp", 1, truth=truth)
    assert a.key() != b.key()
    assert a.with_class(2).truth is truth


def test_point_target_is_the_component_under_the_point():
    pred = _two_blobs()
    cls, comp = component_at(pred, 7, 7)
    assert cls == 1
    assert comp.sum() == 101
    spec = tg.resolve_auto(tg.TargetSpec("point", None, point=(25, 25)), pred, CLASSES)
    assert spec.class_index == 2
    assert tg.region(spec, pred, CLASSES).sum() == 120
    with pytest.raises(EmptyTargetError, match="predicted background"):
        tg.resolve_auto(tg.TargetSpec("point", None, point=(0, 39)), pred, CLASSES)
    with pytest.raises(EmptyTargetError, match="'beta' object, not 'alpha'"):
        tg.region(tg.TargetSpec("point", 1, point=(25, 25)), pred, CLASSES)
    with pytest.raises(EmptyTargetError, match="outside the 40×40"):
        component_at(pred, 40, 3)


def test_objects_table():
    pred = _two_blobs()
    probs = np.zeros((3, 40, 40), np.float32)
    probs[1][pred == 1] = 0.8
    probs[2][pred == 2] = 0.6
    cam = np.zeros((40, 40), np.float32)
    cam[20:30, 22:34] = 1.0
    objs = find_objects(pred, probs, cam)
    assert [(o.class_index, o.area_px) for o in objs] == [(2, 120), (1, 101)]
    assert objs[0].cam_share == pytest.approx(1.0)
    assert objs[1].cam_share == pytest.approx(0.0)
    assert objs[1].mean_probability == pytest.approx(0.8)
    for o in objs:  # the point given for an object is inside it
        assert pred[o.centroid_xy[1], o.centroid_xy[0]] == o.class_index
    assert objs[0].area_um2(0.25) == pytest.approx(7.5)


def test_resolution_from_metadata_and_scale_bar():
    tile = np.full((64, 64, 3), 200, np.uint8)
    assert load_image(_png(tile, dpi=(101600, 101600))).mpp == pytest.approx(0.25)
    assert load_image(_png(tile, dpi=(72, 72))).mpp is None  # a screen default, not a microscope
    assert load_image(_png(tile)).mpp is None
    big = np.full((256, 256, 3), 200, np.uint8)
    drawn = render.scale_bar(big, 0.25)
    assert (drawn != big).any()
    assert (render.scale_bar(big, None) == big).all()
    assert render._nice_length_um(256 * 0.25) == 10.0


def test_outline():
    rgb = np.zeros((32, 32, 3), np.uint8)
    region = np.zeros((32, 32), bool)
    region[8:20, 8:20] = True
    out = render.outline(rgb, region)
    assert (out[8, 8:20] == 255).all()
    assert (out[14, 14] == 0).all()


# ---------------------------------------------------------------- CLI


def explain_args(image, model, *extra: str) -> list[str]:
    return ["explain", str(image), "--model", str(model), *extra]


@pytest.fixture
def tile_and_truth(tmp_path, tiny):
    from cam_core import engine

    img = np.asarray(Image.open(REPO / "samples/images/test_12_002.png").convert("RGB"))[:128, :128]
    path = tmp_path / "tile.png"
    Image.fromarray(img).save(path)
    pred = engine.predict(tiny, img).mask
    truth = pred.copy()
    truth[pred == 1] = 0  # the truth says nothing of class 1: every class-1 pixel is a false positive
    truth[:10, :10] = 2  # and a patch of class 2 the model may miss
    gt_path = tmp_path / "gt.png"
    Image.fromarray(truth.astype(np.uint8)).save(gt_path)
    return path, gt_path, pred, truth


def test_cli_gt_and_fn_fp_point_targets(tile_and_truth, tiny_folder, tmp_path):
    path, gt_path, pred, _truth = tile_and_truth
    out = tmp_path / "fp"
    args = explain_args(path, tiny_folder, "--gt", str(gt_path), "--target", "fp", "--class", "1", "--out", str(out))
    assert cli.main(args) == 0
    rec = json.loads((out / "result.json").read_text())
    assert rec["target"] == "fp"
    assert rec["target_pixels"] == int((pred == 1).sum())
    assert rec["truth"]["file"] == "gt.png"
    assert rec["truth"]["pixels"]["false positive"] == rec["target_pixels"]
    assert set(rec["truth"]["dice"]) == {"alpha", "beta", "any nucleus"}
    mask = np.asarray(Image.open(out / "mask.png"))
    assert mask.ndim == 2
    assert (mask == pred).all()
    assert np.asarray(Image.open(out / "mask_color.png")).ndim == 3
    assert (out / "truth_compare.png").is_file()
    ys, xs = np.nonzero(pred == 2)
    x, y = int(xs[0]), int(ys[0])
    out = tmp_path / "pt"
    assert cli.main(explain_args(path, tiny_folder, "--target", f"point:{x},{y}", "--out", str(out))) == 0
    rec = json.loads((out / "result.json").read_text())
    assert rec["target_point_xy"] == [x, y]
    assert rec["class_index"] == 2
    assert rec["target_pixels"] == int(component_at(pred, x, y)[1].sum())


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--target", "fn"], "add --gt MASK"),
        (["--target", "point:5"], "write point:X,Y"),
        (["--target", "point:500,5"], "outside the 128×128 image"),
        (["--target", "wrong"], "point:X,Y"),
    ],
)
def test_cli_bad_targets_exit_2_with_one_line(tile_and_truth, tiny_folder, tmp_path, capsys, extra, needle):
    path, *_ = tile_and_truth
    assert cli.main(explain_args(path, tiny_folder, *extra, "--out", str(tmp_path / "o"))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert needle in err[0]


def test_cli_point_on_background_exits_2(tile_and_truth, tiny_folder, tmp_path, capsys):
    path, _, pred, _ = tile_and_truth
    ys, xs = np.nonzero(pred == 0)
    rc = cli.main(explain_args(path, tiny_folder, "--target", f"point:{xs[0]},{ys[0]}", "--out", str(tmp_path / "o")))
    assert rc == 2
    assert "predicted background" in capsys.readouterr().err
