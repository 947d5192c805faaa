"""Results that were silently wrong (#18): each test reproduces one item on the main it started from.

Real geometry throughout: the tiny test model has the real stride (32), the 1100² case uses the
built-in model, sizes are odd.
"""

from __future__ import annotations

import io
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from conftest import REPO, tiny_unet, wrap
from PIL import Image

from cam_core import engine, trust
from cam_core.cache import LRUCache, nbytes
from cam_core.data import truth as gt
from cam_core.engine import cammath, tiling
from cam_core.engine import graph as engine_graph
from cam_core.engine.methods import METHODS
from cam_core.engine.targets import TargetSpec
from cam_core.errors import InputError
from cam_core.model import models

CONSEP = ["background", "other", "inflammatory", "epithelial", "spindle"]


def _png(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, format="PNG")
    return buf.getvalue()


def _tissue(side_h: int, side_w: int) -> np.ndarray:
    img = np.asarray(Image.open(REPO / "samples/images/test_12_002.png").convert("RGB"))
    img = np.pad(
        img, ((0, max(0, side_h - img.shape[0])), (0, max(0, side_w - img.shape[1])), (0, 0)), mode="symmetric"
    )
    return np.ascontiguousarray(img[:side_h, :side_w])


# ---------------------------------------------------------------- 1. tiled images lose a strip


@pytest.fixture(scope="module")
def builtin():
    return models.load(None, device=torch.device("cpu"))


@pytest.mark.slow
def test_an_1100_px_upload_has_no_strip_and_the_areas_of_an_untiled_run(builtin):
    image = _tissue(1100, 1100)
    untiled = engine.predict(builtin, image)
    cap = tiling.capture_tiled(builtin, image, TargetSpec("class", 3), [tiling_layer(builtin)])
    tiled = cap.prediction
    strip = (slice(1088, 1100), slice(None))  # main: in no tile, P = 0 everywhere → class "other"
    assert tiled.probs[:, 1088:, :].sum(axis=0).min() > 0.99  # probabilities, not zeros
    assert (tiled.mask[strip] == untiled.mask[strip]).mean() > 0.9
    assert (tiled.mask[:, 1088:] == untiled.mask[:, 1088:]).mean() > 0.9
    diff = np.abs(tiled.area_percent() - untiled.area_percent())
    assert diff.max() <= 0.5, dict(zip(builtin.spec.classes, diff.round(3)))


def tiling_layer(loaded):
    from cam_core.model.layers import default_layer

    return default_layer(loaded)


# ---------------------------------------------------------------- 3. / 4. one mask-format rule


def test_an_index_mask_of_only_class_1_is_read_as_indices_with_a_note():
    labels = np.zeros((40, 40), np.uint8)
    labels[5:20, 5:20] = 1  # every nucleus "other"
    t = gt.load_truth(_png(labels), CONSEP, (40, 40), name="other_only.png")
    assert not t.binary  # main: binary, per-class Dice lost
    assert "0 and 1" in (t.note or "")
    assert "binary" in (t.note or "")
    predicted = np.where(labels > 0, 3, 0).astype(np.uint8)  # the model calls them epithelial
    dice = gt.dice(predicted, t, CONSEP)
    assert dice["epithelial"] == 0.0  # main: 1.0 (compared as any nucleus)
    assert dice["other"] == 0.0
    assert dice[gt.ANY_NUCLEUS] == 1.0
    b = gt.load_truth(_png(labels), CONSEP, (40, 40), kind="binary")
    assert b.binary
    assert b.note is None
    assert set(gt.dice(predicted, b, CONSEP)) == {gt.ANY_NUCLEUS}
    with pytest.raises(Exception, match="mask kind"):
        gt.load_truth(_png(labels), CONSEP, (40, 40), kind="vote")


def test_evaluate_scores_a_0_255_mask_as_nuclei_like_the_truth(tiny_folder, tmp_path):
    from cam_core.trust import evaluate as ev

    loaded = models.load_folder(tiny_folder, device=torch.device("cpu"))
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(image).save(data / "images/a.png")
    pred = engine.predict(loaded, image).mask
    mask = np.where(pred > 0, 255, 0).astype(np.uint8)  # the model's own nuclei, as a 0/255 mask
    mask[:6] = 0
    Image.fromarray(mask).save(data / "masks/a.png")
    r = ev.evaluate(loaded, data, ["a"], "none", 0, loaded.spec.decision_rule, ["alpha"])
    truth = gt.load_truth(data / "masks/a.png", loaded.spec.classes, (64, 64))
    assert truth.binary
    assert r["ignored_pixels"] == 0  # main: every nucleus pixel "ignored"
    assert r["binary_masks"] == 1
    assert r["nuclei_dice"] == pytest.approx(gt.dice(pred, truth, loaded.spec.classes)[gt.ANY_NUCLEUS], abs=1e-4)
    assert r["nuclei_dice"] > 0.5  # main: 0.0


def test_an_ignore_label_is_left_out_of_the_truth_too():
    labels = np.zeros((30, 30), np.uint8)
    labels[:10] = 255
    labels[15:20] = 2
    t = gt.load_truth(_png(labels), CONSEP, (30, 30))
    predicted = np.full((30, 30), 2, np.uint8)
    codes = gt.compare(predicted, t, 2)
    assert (codes[:10] == gt.TN).all()  # ignored: neither false positive nor anything else
    assert gt.counts(codes)["false positive"] == 15 * 30
    assert t.record()["ignored_pixels"] == 300


# ---------------------------------------------------------------- 5. a transparent mask target


def test_a_mask_target_on_a_transparent_png_is_the_painted_pixels():
    from cam_core.engine.targets import parse_target

    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., :3] = 255  # white, but transparent
    rgba[20:30, 30:40] = [255, 0, 0, 255]

    def target(path):
        return parse_target(f"mask:{path}", 1, (64, 64))

    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = f"{d}/roi.png"
        Image.fromarray(rgba, "RGBA").save(path)
        spec = target(path)
        assert int(spec.mask.sum()) == 100  # main: 4096, the whole image
        Image.fromarray(rgba[:32], "RGBA").save(path)
        with pytest.raises(InputError, match="same size"):
            target(path)
        Image.fromarray(np.zeros((64, 64, 4), np.uint8), "RGBA").save(path)
        with pytest.raises(InputError, match="marks no pixel"):
            target(path)


# ---------------------------------------------------------------- 8. normalisation over the image


@pytest.mark.slow
def test_the_colour_bar_is_the_visible_images(builtin):
    """A 200×140 crop is padded to 224×160: the padding must not hold the map's 0 or 1."""
    img = np.asarray(Image.open(REPO / "samples/images/test_13_008.png").convert("RGB"))[:140, :200].copy()
    names = ["decoder.blocks.0", "decoder.blocks.2", "encoder.model.s4"]
    cap = engine.capture(builtin, img, TargetSpec("predicted", None), names)
    for layer in names:
        for method in ("eigencam", "gradcam", "hirescam"):
            cam = engine.cam_from_capture(cap, METHODS[method], layer).cam
            assert cam.shape == (140, 200)
            assert cam.min() == pytest.approx(0.0, abs=1e-6)
            # main: EigenCAM @ decoder.blocks.0 peaked at 0.901 on the visible pixels
            assert cam.max() == pytest.approx(1.0, abs=1e-5) or cam.max() == 0.0, (layer, method, cam.max())


def test_an_odd_sized_image_still_equals_grad_cam(tiny):
    """Ours = grad-cam's own output on the padded input, cropped and min-max normalised over the
    image (min-max is affine, so nothing but the range changes)."""
    from test_engine_equivalence import gradcam_reference

    from cam_core.model.models import preprocess

    image = _tissue(140, 200)
    region = np.zeros((140, 200), bool)
    region[30:90, 50:150] = True
    cap = engine.capture(tiny, image, TargetSpec("mask", 1, region), ["decoder.blocks.2", "encoder.layer3"])
    x = preprocess(image, tiny.spec)
    x = torch.nn.functional.pad(x, (0, 224 - 200, 0, 160 - 140), mode="reflect")
    padded_region = np.zeros((160, 224), np.float32)
    padded_region[:140, :200] = region
    for name in ("gradcam", "eigencam", "layercam"):
        for layer in ("decoder.blocks.2", "encoder.layer3"):
            ours = engine.cam_from_capture(cap, METHODS[name], layer).cam
            ref = cammath.visible(gradcam_reference(tiny.model, METHODS[name], layer, x, 1, padded_region), (140, 200))
            assert np.abs(ours - ref).max() <= 1e-5, (name, layer)


# ---------------------------------------------------------------- 9. faithfulness seeded per map


def test_a_maps_faithfulness_does_not_depend_on_its_company(tiny):
    image = _tissue(64, 64)
    pred = engine.predict(tiny, image)
    target = TargetSpec("class", 1)
    rng = np.random.default_rng(0)
    a = np.where(rng.random((64, 64)) < 0.7, 0.0, rng.random((64, 64)))  # many ties
    b = rng.random((64, 64))
    alone = trust.faithfulness(tiny, image, target, pred, {"a": a}, steps=4)
    together = trust.faithfulness(tiny, image, target, pred, {"b": b, "a": a}, steps=4)
    assert alone["a"].score == together["a"].score  # main: +0.0106 alone vs +0.0098 beside another


def test_randomcam_leaves_numpys_global_generator_alone(tiny, image64):
    cap = engine.capture(tiny, image64, TargetSpec("class", 1), ["decoder.blocks.2"])
    np.random.seed(5)
    before = np.random.get_state()[1].copy()
    first = engine.cam_from_capture(cap, METHODS["randomcam"], "decoder.blocks.2").cam
    assert (np.random.get_state()[1] == before).all()
    again = engine.cam_from_capture(cap, METHODS["randomcam"], "decoder.blocks.2").cam
    np.testing.assert_array_equal(first, again)  # reproducible for an image and layer


def test_the_sanity_check_does_not_leave_denormals_flushed(tiny, image64):
    torch.set_flush_denormal(False)
    trust.sanity(tiny, image64, TargetSpec("class", 1), {}, layers=["decoder.blocks.2"], methods=[METHODS["gradcam"]])
    tiny_value = torch.tensor([1e-39], dtype=torch.float32)
    assert (tiny_value * 1.0).item() != 0.0  # main: flushed for the rest of the thread's life


# ---------------------------------------------------------------- memory: bytes and objects, not keys


def test_the_cache_counts_a_value_under_several_keys_once():
    cache = LRUCache(max_entries=2, max_bytes=1 << 20)
    a, b, c = (np.zeros(100) for _ in range(3))
    for k in ("cap", "base", "resolved", "pred"):
        cache.put(("a", k), a)  # one capture under four keys
    cache.put("b", b)
    assert cache.distinct == 2
    assert cache.get(("a", "cap")) is a  # main: evicted by its own aliases
    assert cache.get("b") is b
    cache.put("c", c)
    assert cache.distinct == 2
    assert cache.get("b") is b
    assert cache.get("c") is c


def test_a_capture_is_measured_before_the_work_and_what_passes_can_be_cached(tiny):
    from cam_core.engine.capturing import capture_bytes, check_fits
    from cam_core.model.layers import spatial_layers

    image = _tissue(200, 260)
    names = ["decoder.blocks.2", "encoder.layer2"]
    cap = engine.capture(tiny, image, TargetSpec("class", 1), names)
    estimate = capture_bytes(tiny, (200, 260), names)
    assert nbytes(cap) <= estimate <= nbytes(cap) * 1.05 + 4096
    every = list(spatial_layers(tiny))
    forwards = engine_graph.passes(tiny)["forward"]
    with pytest.raises(InputError) as info:
        check_fits(tiny, (1024, 1024), every, 256 << 20, "one request on this server")
    msg = str(info.value)
    assert "of these" in msg
    assert "region of at most" in msg
    assert engine_graph.passes(tiny)["forward"] == forwards  # refused before any pass


def test_the_app_refuses_a_request_that_cannot_be_cached(monkeypatch):
    from cam_core import limits
    from ui import compute

    monkeypatch.setattr(limits, "REQUEST_CAPTURE_BYTES", 8 << 20)
    from cam_core.data.images import LoadedImage

    loaded = wrap(tiny_unet())
    image = compute.ImageChoice("big", "sha-big", LoadedImage(_tissue(700, 700)))
    rule = loaded.spec.decision_rule
    ch = compute.Choices(image, loaded, 1, "decoder.blocks.2", METHODS["gradcam"], TargetSpec("class", 1), rule, False)
    with pytest.raises(InputError, match="one request on this server may use 8 MB"):
        compute.get_capture(ch, ["decoder.blocks.4", "decoder.blocks.3"])
    assert engine_graph.passes(loaded)["forward"] == 0


# ---------------------------------------------------------------- contention


def test_loading_a_model_does_not_block_sessions_on_another(monkeypatch):
    from ui import compute

    release = threading.Event()
    started = threading.Event()
    ready = wrap(tiny_unet(), name="ready")

    def slow_load(name):
        started.set()
        release.wait(20)
        return wrap(tiny_unet(), name=name)

    monkeypatch.setattr(compute, "_MODELS", {"ready": (None, ready)})  # (folder version, model)
    monkeypatch.setattr(compute.models, "load", slow_load)
    loader = threading.Thread(target=compute.get_model, args=("slow",))
    loader.start()
    assert started.wait(10)
    other = threading.Thread(target=compute.get_model, args=("ready",))
    other.start()
    other.join(5)
    blocked = other.is_alive()  # main: waits behind the other model's load (the global lock)
    release.set()
    loader.join(10)
    other.join(10)
    assert not blocked


def test_new_weights_copied_over_a_model_folder_are_served_on_its_next_use(tiny_folder, monkeypatch):
    """main: a loaded model was kept by name for good: weights copied over the old ones (same
    folder, same name) were never served until the server restarted."""
    import os

    from ui import compute

    monkeypatch.setenv("SEGCAM_MODELS_DIR", str(tiny_folder.parent))
    monkeypatch.setattr(compute, "_MODELS", {})
    first = compute.get_model(tiny_folder.name)
    assert compute.get_model(tiny_folder.name) is first  # unchanged: the same object
    tiny_unet(seed=5).save_pretrained(str(tiny_folder))
    weights = tiny_folder / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # a later copy
    second = compute.get_model(tiny_folder.name)
    assert second is not first
    assert second.weights_sha256 != first.weights_sha256


def test_discover_checks_a_folder_once_per_version(tiny_folder, monkeypatch):
    calls = []
    real = models._entry
    monkeypatch.setattr(models, "_entry", lambda *a: calls.append(a[0]) or real(*a))
    monkeypatch.setattr(models, "_CHECKED", {})
    first = models.discover(tiny_folder.parent)
    n = len(calls)
    assert n == len(first) >= 2  # built-in models and the folder
    second = models.discover(tiny_folder.parent)
    assert len(calls) == n  # main: every model's weights loaded again (every 30 s in the app)
    assert [e.name for e in second] == [e.name for e in first]
    (tiny_folder / "segcam.json").write_text('{"classes": ["background", "alpha", "gamma"]}')
    third = models.discover(tiny_folder.parent)
    assert calls[n:] == ["tiny_unet"]  # only the changed folder
    assert next(e for e in third if e.name == "tiny_unet").classes[-1] == "gamma"


# ---------------------------------------------------------------- smaller items


def test_sample_truth_is_consep_only_for_a_consep_model():
    from ui import compute

    three = compute.sample_truth("test_12_002", ["background", "alpha", "beta"])
    assert three.binary  # main: CoNSeP indices 1–2 read as this model's 'alpha' and 'beta'
    assert "CoNSeP" in three.note
    consep = compute.sample_truth("test_12_002", CONSEP)
    assert not consep.binary
    assert consep.note is None


def test_openslide_alpha_is_not_premultiplied():
    from cam_core.wsi.slides import _flatten_alpha

    rgba = np.array([[[100, 100, 100, 128], [10, 20, 30, 255], [0, 0, 0, 0]]], np.uint8)
    out = _flatten_alpha(rgba)
    assert out[0, 0].tolist() == [177, 177, 177]  # 100·0.502 + 255·0.498; main: 227
    assert out[0, 1].tolist() == [10, 20, 30]
    assert out[0, 2].tolist() == [255, 255, 255]


def test_the_cli_works_without_posix_resource():
    """bench (POSIX ``resource``) was imported by every command: the CLI failed on Windows."""
    code = (
        "import sys; sys.modules['resource'] = None; from cam_core import cli; raise SystemExit(cli.main(['methods']))"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


def test_the_geojson_validator_applies_ogcs_rules():
    """The hand-written check found only two edges crossing; QuPath's JTS geometry also breaks on a
    hole outside its outline, a ring touching itself and a ring with no area (main: all passed)."""
    from cam_core.wsi import geojson as gj

    def problems(coords, kind="Polygon"):
        doc = gj.feature_collection(
            [gj.feature({"type": kind, "coordinates": coords}, "detection", "e", (1, 2, 3), {}, "k")]
        )
        return " | ".join(gj.validate(doc, 100, 100))

    square = [[10, 10], [40, 10], [40, 40], [10, 40], [10, 10]]
    assert problems([square]) == ""
    assert "not a valid polygon" in problems([[[0, 0], [2, 2], [2, 0], [0, 2], [0, 0]]])  # a bow tie
    assert "Hole" in problems([square, [[50, 50], [60, 50], [60, 60], [50, 50]]])  # a hole outside
    touching = [[0, 0], [4, 0], [4, 4], [2, 0], [0, 4], [0, 0]]  # meets itself at (2, 0)
    assert "not a valid polygon" in problems([touching])
    assert "not a valid polygon" in problems([[[0, 0], [5, 0], [9, 0], [0, 0]]])  # no area
    overlapping = [[square], [[[20, 20], [50, 20], [50, 50], [20, 50], [20, 20]]]]
    assert "not a valid polygon" in problems(overlapping, "MultiPolygon")
    assert "≥ 4" in problems([[[0, 0], [1, "x"]]])  # a ragged ring is named, not a crash


def test_thin_and_pinched_objects_are_exported_with_their_pixels():
    """A nucleus one pixel wide went to QuPath as a line of zero area (main); now every object is a
    valid polygon covering exactly its pixels (Douglas–Peucker at 1 px, tried for this, turned a
    3×3 nucleus into a triangle: hence exact outlines by default)."""
    import shapely

    from cam_core.wsi import geojson as gj

    cases = {"line": np.s_[5, 2:12], "block": np.s_[2:5, 2:5]}
    for name, where in cases.items():
        mask = np.zeros((16, 16), bool)
        mask[where] = True
        (rings,) = gj.mask_polygons(mask)
        poly = shapely.Polygon(rings[0], rings[1:])
        assert poly.is_valid, name
        assert poly.area >= mask.sum() - 2 * np.sqrt(mask.sum()), (name, poly.area)  # the line: 0 on main
    pinched = np.zeros((16, 16), bool)
    pinched[2:5, 2:5] = pinched[5:8, 5:8] = True  # two blobs joined by one diagonal step
    polys = gj.mask_polygons(pinched)
    doc = gj.feature_collection(
        [
            gj.feature(
                gj.geometry([gj.to_level0(p, (0.0, 0.0), 1.0) for p in polys]), "detection", "a", (1, 2, 3), {}, "p"
            )
        ]
    )
    assert gj.validate(doc, 16, 16) == []
    assert (gj.rasterize(doc, (16, 16), ["bg", "a"]).labels == pinched).all()


def test_old_uploaded_slides_are_deleted(tmp_path):
    import os

    from cam_core.wsi.slides import prune_uploads

    files = []
    for i in range(5):
        p = tmp_path / f"s{i}.tif"
        p.write_bytes(b"x")
        os.utime(p, ns=(i * 10**9, i * 10**9))
        files.append(p)
    gone = prune_uploads(tmp_path, keep=files[0], kept=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s0.tif", "s3.tif", "s4.tif"]  # the kept one stays
    assert len(gone) == 2


def test_a_batch_worker_keys_open_slides_by_resolution_and_closes_old_ones(tmp_path, monkeypatch):
    from cam_core.wsi import batch, slides

    opened = []

    class FakeSlide:
        def __init__(self, path, mpp):
            self.key, self.closed = (path, mpp), False
            opened.append(self)

        def close(self):
            self.closed = True

    monkeypatch.setattr(slides, "Slide", FakeSlide)
    monkeypatch.setattr(batch, "_WORKER", {"loads": 0})
    path = tmp_path / "a.tif"
    path.write_bytes(b"x")
    a25 = batch._slide(str(path), 0.25)
    assert batch._slide(str(path), 0.25) is a25
    a50 = batch._slide(str(path), 0.5)
    assert a50 is not a25  # main: the slide opened at 0.25 µm/px served a run at 0.5
    for i in range(batch.SLIDES_PER_WORKER):
        p = tmp_path / f"b{i}.tif"
        p.write_bytes(b"x")
        batch._slide(str(p), None)
    assert a25.closed  # main: never closed, cached without bound
    assert not opened[-1].closed


def test_a_recapture_that_lost_the_graph_is_counted(tiny, image64):
    """Another session's capture replaces the kept graph: the next class then costs a full pass,
    counted (scripts/measure_graph_fallback.py measures how often on a busy server)."""
    mine = engine.capture(tiny, image64, TargetSpec("class", 1), ["decoder.blocks.2"], keep_graph=True)
    engine.recapture(tiny, mine, TargetSpec("class", 2), image64)
    assert engine_graph.passes(tiny)["fallback"] == 0
    engine.capture(tiny, image64[::-1].copy(), TargetSpec("class", 1), ["decoder.blocks.2"], keep_graph=True)
    forwards = engine_graph.passes(tiny)["forward"]
    engine.recapture(tiny, mine, TargetSpec("class", 2), image64)
    assert engine_graph.passes(tiny)["fallback"] == 1
    assert engine_graph.passes(tiny)["forward"] == forwards + 1
