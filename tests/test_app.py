"""The Streamlit app through AppTest: every control, uploads, pages, and pass counting."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from PIL import Image
from streamlit.testing.v1 import AppTest

TIMEOUT = 120


def passes():
    from cam_core.engine import graph as engine_graph
    from cam_core.model import models
    from ui import compute

    return dict(engine_graph.passes(compute.get_model(models.default_model_name())))


@pytest.fixture
def at():
    from ui import compute

    compute.clear_caches()
    app = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    app.run()
    assert not app.exception
    return app


def run(app):
    app.run()
    assert not app.exception, app.exception
    assert not app.error, [e.value for e in app.error]
    return app


def provenance(app) -> str:
    return next(m.value for m in app.markdown if m.value.startswith("**") and " on `" in m.value)


def test_first_load_explains_a_sample_without_any_click(at):
    assert not at.error
    line = provenance(at)
    assert "GradCAM" in line
    assert "decoder.blocks.2" in line
    assert "consep-unet-regnetx004" in line
    from cam_core.model.models import default_device

    assert str(default_device()) in line  # cuda on a GPU host
    assert "last_render" in at.session_state
    assert [m.value for m in at.markdown if m.value.startswith("**Predicted mask")]
    labels = [b.label for b in at.get("download_button")]
    assert labels == [
        "mask.png",
        "mask_color.png",
        "heatmap.png",
        "overlay.png",
        "objects.geojson",
        "figure.png",
        "results.zip",
    ]


def test_switch_class_layer_method_target(at):
    at.selectbox(key="w_sel_class").set_value(3)
    assert "class **epithelial**" in provenance(run(at))
    at.selectbox(key="w_sel_layer").set_value("encoder.model.s3")
    assert "`encoder.model.s3`" in provenance(run(at))
    at.selectbox(key="w_sel_method").set_value("HiResCAM")
    assert "**HiResCAM**" in provenance(run(at))
    at.radio(key="w_sel_target").set_value("class")
    assert "over the whole image" in provenance(run(at))
    at.radio(key="w_sel_target").set_value("rectangle")
    run(at)
    at.slider(key="w_rect_x").set_value((0.1, 0.5))
    assert "over the user region" in provenance(run(at))
    at.selectbox(key="w_sel_layer_all").set_value("encoder.model.stem")
    assert "`encoder.model.stem`" in provenance(run(at))


def test_sliders_and_colormap_never_run_the_model(at):
    before = passes()
    renders = []
    at.slider(key="w_opacity").set_value(0.9)
    renders.append(run(at).session_state["last_render"])
    at.radio(key="w_thr_mode").set_value("absolute")
    run(at)
    at.slider(key="w_thr_abs").set_value(0.7)
    renders.append(run(at).session_state["last_render"])
    at.radio(key="w_thr_mode").set_value("percentile")
    run(at)
    at.slider(key="w_thr_pct").set_value(95.0)
    renders.append(run(at).session_state["last_render"])
    at.radio(key="w_thr_mode").set_value("otsu")
    renders.append(run(at).session_state["last_render"])
    at.selectbox(key="w_show").set_value("contour")
    run(at)
    at.selectbox(key="w_cmap").set_value("cividis")
    renders.append(run(at).session_state["last_render"])
    assert passes() == before  # no forward, no backward, no method run
    assert renders[0]["opacity"] == 0.9
    assert renders[1]["level"] == 0.7
    assert renders[3]["level"] is not None
    assert renders[4]["cmap"] == "cividis"
    assert len({r["overlay_sum"] for r in renders}) == len(renders)  # every change changed the picture


def test_method_and_layer_switch_reuse_the_pass(at):
    before = passes()
    at.selectbox(key="w_sel_method").set_value("LayerCAM")
    run(at)
    at.selectbox(key="w_sel_layer").set_value("decoder.blocks.0")
    run(at)
    assert passes() == before


def test_mask_confidence_and_eigen_smooth(at):
    default_area = dict(at.session_state["last_record"]["predicted_area_percent"])
    default_rule = at.session_state["last_record"]["decision_rule"]
    default_overlay = at.session_state["last_render"]["overlay_sum"]
    at.selectbox(key="w_sel_rule").set_value("P(background) < 0.5")
    run(at)
    record = at.session_state["last_record"]
    assert record["decision_rule"] != default_rule
    assert record["predicted_area_percent"]["background"] < default_area["background"]  # a looser rule
    ruled_overlay = at.session_state["last_render"]["overlay_sum"]
    at.checkbox(key="w_sel_eigen_smooth").check()
    assert "GradCAM" in provenance(run(at))
    assert at.session_state["last_record"]["eigen_smooth"] is True
    assert at.session_state["last_render"]["overlay_sum"] != ruled_overlay  # another map
    assert ruled_overlay != default_overlay


def test_slow_method_needs_a_click_then_runs(at):
    at.selectbox(key="w_sel_layer").set_value("decoder.blocks.3")
    run(at)
    at.selectbox(key="w_sel_method").set_value("ScoreCAM")
    run(at)
    assert any("runs the model many times" in w.value for w in at.warning)
    at.button[0].click()
    assert "**ScoreCAM**" in provenance(run(at))


def _png(arr) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_uploads_png_16bit_tiff_corrupt_then_valid(at):
    at.radio(key="w_sel_source").set_value("Upload")
    run(at)
    tile = np.asarray(Image.open(REPO / "samples/images/test_13_008.png"))
    at.file_uploader(key="upload").set_value(("tile.png", _png(tile), "image/png"))
    assert "GradCAM" in provenance(run(at))

    buf = io.BytesIO()
    Image.fromarray(tile[..., 0].astype(np.uint16) * 257).save(buf, format="TIFF")
    at.file_uploader(key="upload").set_value(("grey16.tif", buf.getvalue(), "image/tiff"))
    at.run()
    assert not at.exception
    assert any("16" in i.value for i in at.info)

    at.file_uploader(key="upload").set_value(("broken.png", b"\x89PNG\r\n\x1a\n garbage", "image/png"))
    at.run()
    assert not at.exception
    assert any("broken.png" in e.value for e in at.error)

    at.file_uploader(key="upload").set_value(("again.png", _png(tile[:200, :180]), "image/png"))
    assert "GradCAM" in provenance(run(at))


def _compare_reads_at_a_glance(at) -> None:
    """The grid's head names each method so that it may wrap between its words (never inside
    one: "GradCA|M"), each row is headed by its layer's whole name, and a cell says its time
    without repeating where it came from (the line above says it once)."""
    from cam_core.engine.methods import fast_methods
    from ui.text import BREAK

    texts = [m.value for m in at.markdown]
    for info in fast_methods():
        (head,) = [t for t in texts if t.replace(BREAK, "") == f"**{info.name}**"]
        assert [w.strip("*") for w in head.split(BREAK)] == re.findall(r"[A-Z]+(?![a-z])|[A-Z][a-z]+", info.name)
    assert [t for t in texts if t.startswith("Layer `")] == [f"Layer `{la}`" for la in at.session_state["compare_rows"]]
    captions = [c for i in at.get("image") for c in i.captions]
    assert captions
    assert not [c for c in captions if "from the cached pass" in c]
    assert any("from the cached pass unless it says otherwise" in t for t in texts)


@pytest.mark.parametrize("page", ["pages/1_Compare.py", "pages/2_Model.py", "pages/3_About.py"])
def test_every_page(at, page):
    at.switch_page(page)
    run(at)
    if "Compare" in page:
        assert at.session_state["compare_cells"] >= 3 * 6
        _compare_reads_at_a_glance(at)
    if "Model" in page:
        assert any("Add your own model" in s.value for s in at.subheader)
    if "About" in page:
        assert any("Reading a Class Activation Map" in t.value for t in at.title)
    # Shared choices survive the page switch.
    at.selectbox(key="w_sel_class").set_value(2)
    run(at)
    at.switch_page("app.py")
    assert "class **inflammatory**" in provenance(run(at))


def test_html_upload_message_shown_once(at):
    at.radio(key="w_sel_source").set_value("Upload")
    run(at)
    at.file_uploader(key="upload").set_value(("page.png", b"<!doctype html><html>hi</html>", "image/png"))
    at.run()
    assert not at.exception
    shown = [e.value for e in at.error if "HTML" in e.value]
    assert len(shown) == 1, shown


def test_absent_class_shows_the_mask_and_a_plain_note(at):
    """A class with no predicted pixels: the mask and an info naming the control, not a red error."""
    from cam_core.engine.targets import TARGET_KINDS

    area = at.session_state["last_record"]["predicted_area_percent"]
    absent = next(i for i, (_, a) in enumerate(area.items()) if a == 0 and i > 0)
    at.selectbox(key="w_sel_class").set_value(absent)
    at.run()
    assert not at.exception
    assert not at.error
    assert any(TARGET_KINDS["class"] in i.value for i in at.info)
    assert [m.value for m in at.markdown if m.value.startswith("**Predicted mask")]


def test_model_page_shows_no_server_paths(at):
    at.switch_page("pages/2_Model.py")
    run(at)
    texts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    assert texts
    assert not [t for t in texts if str(REPO) in t or "/models/user" in t]


def test_switching_model_uses_its_default_layer(tmp_path, monkeypatch):
    from conftest import tiny_unet

    from ui import compute

    folder = tmp_path / "other"
    tiny_unet().save_pretrained(str(folder))
    (folder / "segcam.json").write_text(
        '{"classes": ["background", "alpha", "beta"], "default_layer": "decoder.blocks.3"}'
    )
    monkeypatch.setenv("SEGCAM_MODELS_DIR", str(tmp_path))
    compute.reset_model_entries()
    try:
        app = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
        app.run()
        assert "`decoder.blocks.2`" in provenance(app)
        app.selectbox(key="w_sel_model").set_value("other")
        app.selectbox(key="w_sel_class").set_value(1)
        app.radio(key="w_sel_target").set_value("class")
        app.run()
        assert not app.exception
        assert app.session_state["sel_layer"] == "decoder.blocks.3"
        assert "`decoder.blocks.3`" in provenance(app)
    finally:
        compute.reset_model_entries()


def test_slow_method_estimate_is_the_same_everywhere(at):
    import re

    at.selectbox(key="w_sel_method").set_value("ScoreCAM")
    run(at)
    page = next(w.value for w in at.warning if "runs the model many times" in w.value)
    label = at.selectbox(key="w_sel_method").format_func("ScoreCAM")
    assert re.search(r"about (\d+) s", page).group(1) == re.search(r"~(\d+) s", label).group(1)
    # ScoreCAM-TopK runs K channels, not all of them: at a 384-channel layer it costs less than ScoreCAM.
    at.selectbox(key="w_sel_layer").set_value("encoder.model.s4")
    run(at)
    box = at.selectbox(key="w_sel_method")
    seconds = {m: int(re.search(r"~(\d+) s", box.format_func(m)).group(1)) for m in ("ScoreCAM", "ScoreCAM-TopK")}
    assert seconds["ScoreCAM-TopK"] < seconds["ScoreCAM"], seconds


def test_compare_page_tiles_a_large_upload(at, monkeypatch):
    from cam_core import limits
    from cam_core.engine import tiling

    monkeypatch.setattr(limits, "TILE_ABOVE_PIXELS", 200 * 200)
    monkeypatch.setattr(tiling, "DEFAULT_TILE", 256)
    at.radio(key="w_sel_source").set_value("Upload")
    run(at)
    tile = np.asarray(Image.open(REPO / "samples/images/test_13_008.png"))
    at.file_uploader(key="upload").set_value(
        ("big.png", _png(np.pad(tile, ((0, 64), (0, 64), (0, 0)), "symmetric")), "image/png")
    )
    run(at)
    at.switch_page("pages/1_Compare.py")
    run(at)
    captions = [c for i in at.get("image") for c in i.captions]
    assert any("Large image" in i.value for i in at.info)
    assert at.session_state["compare_cells"] >= 6, captions


def test_trust_line_on_demand_then_cached_and_in_the_zip(at):
    assert not at.session_state["last_render"].get("signed_scale")
    assert "last_trust" not in at.session_state
    button = next(b for b in at.button if b.key == "trust_run")
    assert "Check this map" in button.label
    before = passes()["forward"]
    button.click()
    run(at)
    trust = at.session_state["last_trust"]
    assert trust["method"] == "GradCAM"
    assert trust["layer"] == "decoder.blocks.2"
    assert passes()["forward"] - before > 40  # the perturbed images really ran
    texts = [m.value for m in [*at.success, *at.warning, *at.error]]
    # one verdict from both checks, with its reason and margins, above the two checks' lines
    assert f"**{trust['verdict_sentence']}**" in texts
    assert any(w in trust["verdict_sentence"] for w in ("margin", "ρ")), trust["verdict_sentence"]
    lines = [m.value for m in at.markdown]
    assert any("**Faithfulness**" in t and "**Sanity**" in t for t in lines)
    assert any("The sanity rule:" in c.value for c in at.caption)
    # the sample has a truth: the map is scored against it (no model pass), on the page and in the record
    assert any(t.startswith("**Against the truth**") for t in lines)
    assert 0 <= trust["localisation"]["mass_on_truth"] <= 1
    assert trust["localisation"]["pointing_objects"] > 0
    # and how much of the target's evidence is haematoxylin vs eosin (computed in the check's run)
    assert any(t.startswith("**Stain evidence**") for t in lines)
    stain = at.session_state["last_stain"]
    assert abs(sum(stain["shares"].values()) - 1) < 1e-6
    assert stain["gap"] < 0.25
    assert any(t.startswith("**Under re-staining**") and "prediction Dice" in t for t in lines)
    # Cached: a re-run (e.g. a slider) shows the same line without a model pass.
    before = passes()["forward"]
    at.slider(key="w_opacity").set_value(0.3)
    run(at)
    assert passes()["forward"] == before
    assert not [b for b in at.button if b.key == "trust_run"]
    record = at.session_state["last_record"]
    assert record["trust"]["faithfulness"] == trust["faithfulness"]
    # last_record is the ZIP's result.json; GradCAM @ decoder.blocks.2 passes sanity on the samples
    assert record["trust"]["sanity_pass"] is True


def test_raw_signed_view_shares_one_scale_over_classes(at):
    at.radio(key="w_values").set_value("raw signed")
    run(at)
    scale_3 = at.session_state["last_render"]["signed_scale"]
    assert scale_3 > 0
    captions = [c.value for c in at.caption if c.value.startswith("Raw CAM before ReLU")]
    assert captions
    assert "epithelial" in captions[0]
    assert "inflammatory" in captions[0]
    at.selectbox(key="w_sel_class").set_value(2)
    run(at)
    assert at.session_state["last_render"]["signed_scale"] == pytest.approx(scale_3)
    assert at.session_state["last_record"]["signed_scale"] == pytest.approx(scale_3)
    assert {"epithelial", "inflammatory"} <= set(at.session_state["last_record"]["signed_scale_classes"])


def test_compare_badges_and_orders_cells_by_faithfulness(at):
    at.switch_page("pages/1_Compare.py")
    run(at)
    at.multiselect(key="w_cmp_methods").set_value(["GradCAM", "RandomCAM", "HiResCAM", "FEM"])
    at.multiselect(key="w_cmp_layers").set_value(["decoder.blocks.2"])
    run(at)
    assert not at.session_state["compare_badges"]
    next(b for b in at.button if b.key == "cmp_trust").click()
    run(at)
    badges = at.session_state["compare_badges"]
    assert set(badges) == {f"{m}@decoder.blocks.2" for m in ("GradCAM", "RandomCAM", "HiResCAM", "FEM")}
    assert all("faithful" in b and "sanity" in b for b in badges.values())
    assert any(c.value.startswith("**faithful ✓**") for c in at.caption)  # the badges explained in place
    # this tile's suggestion, by the verdicts' rule: never a map that fails sanity or random
    best = at.session_state["compare_suggestion"]
    assert best is not None  # measured: FEM is believed on this tile (models/…/trust.json)
    assert not best.startswith("RandomCAM")  # a baseline is never suggested
    assert "sanity ✓" in badges[best]
    assert "faithful ✗" not in badges[best]
    if any("faithful ✓" in b and "sanity ✓" in b for b in badges.values()):
        assert "faithful ✓" in badges[best]  # a Believe before any Caution
    assert any(m.value.startswith(f"Suggested for this tile: **{best.split('@')[0]}**") for m in at.success)
    next(b for b in at.button if b.key == "cmp_use_suggestion").click()
    run(at)
    assert at.session_state["sel_method"] == best.split("@")[0]
    at.toggle(key="w_cmp_order").set_value(True)
    run(at)
    shown = at.session_state["compare_rows"]["decoder.blocks.2"]

    def rank(m):  # sanity failures never first (TrustReport.rank_key), then by faithfulness
        b = badges[f"{m}@decoder.blocks.2"]
        return ("sanity ✗" in b, -float(b.split("faithful ")[1].split()[1]))

    assert len(shown) == 4
    assert shown == sorted(shown, key=rank)
    assert at.query_params["order"] in ("1", ["1"])  # the grid's view is in the link
    assert at.query_params["methods"] in ("GradCAM,RandomCAM,HiResCAM,FEM", ["GradCAM,RandomCAM,HiResCAM,FEM"])
    at.toggle(key="w_cmp_order").set_value(False)
    assert run(at).session_state["compare_rows"]["decoder.blocks.2"] == ["GradCAM", "RandomCAM", "HiResCAM", "FEM"]
    at.multiselect(key="w_cmp_layers").set_value(["decoder.blocks.2", "decoder.blocks.3"])
    rows = run(at).session_state["compare_rows"]
    assert rows["decoder.blocks.2"] == rows["decoder.blocks.3"]  # aligned columns in every row


def test_teaching_sample_is_offered_with_its_note(at):
    at.selectbox(key="w_sel_sample").set_value("ink_dot_test_13_014")
    run(at)
    assert any("Teaching sample" in i.value for i in at.sidebar.info)
    assert any(w.value.startswith("Input quality: Pen ink or a marker") for w in at.warning)  # the dot, named
    at.selectbox(key="w_sel_model").set_value("consep-unet-marker-teaching")
    run(at)
    assert "class **epithelial**" in provenance(at)  # the dot made every nucleus epithelial


# ---------------------------------------------------------------- #12: truth, objects, links, presenter


def _sample_prediction(name="test_12_002"):
    from cam_core import engine
    from cam_core.model import models
    from ui import compute

    loaded = compute.get_model(models.default_model_name())
    return engine.predict(loaded, np.asarray(Image.open(REPO / f"samples/images/{name}.png").convert("RGB")))


def test_sample_shows_its_truth_and_the_fn_target_explains_the_missed_pixels(at):
    from cam_core.data import consep
    from cam_core.data.truth import FN, compare, load_truth

    assert [m.value for m in at.markdown if m.value == "**Truth**"]
    dice = at.session_state["last_dice"]
    assert set(dice) >= {"epithelial", "any nucleus"}
    from cam_core.data.truth import dice as truth_dice

    truth = load_truth(REPO / "samples/masks/test_12_002.png", consep.CLASSES, (256, 256), kind="index")
    assert dice == truth_dice(_sample_prediction().mask, truth, consep.CLASSES)  # the core's numbers
    at.selectbox(key="w_sel_class").set_value(3)  # epithelial
    at.radio(key="w_sel_target").set_value("fn")
    run(at)
    pred = _sample_prediction()
    classes = at.session_state["last_record"]["predicted_area_percent"].keys()
    truth = load_truth(REPO / "samples/masks/test_12_002.png", list(classes), pred.mask.shape)
    expected = int((compare(pred.mask, truth, 3) == FN).sum())
    assert expected > 0
    assert at.session_state["last_render"]["target_pixels"] == expected
    assert at.session_state["last_render"]["outlined"]
    record = at.session_state["last_record"]
    assert record["target"] == "fn"
    assert record["target_pixels"] == expected
    assert record["truth"]["pixels"]["false negative"] == expected
    assert record["truth"]["dice"]["epithelial"] == pytest.approx(at.session_state["last_dice"]["epithelial"])
    assert any("raw signed" in i.value for i in at.info)  # the page says how to read an FN map


def test_truth_targets_are_offered_only_with_a_truth(at):
    from ui.state import TARGET_CHOICES

    fn = TARGET_CHOICES["fn"]
    assert fn in at.radio(key="w_sel_target").options
    at.radio(key="w_sel_source").set_value("Upload")
    run(at)
    at.file_uploader(key="upload").set_value(
        ("tile.png", _png(np.asarray(Image.open(REPO / "samples/images/test_8_001.png"))), "image/png")
    )
    run(at)
    assert at.session_state["last_record"]["image"]["microns_per_pixel"] is None  # a PNG without resolution
    assert fn not in at.radio(key="w_sel_target").options
    bad = np.zeros((100, 100), np.uint8)
    at.file_uploader(key="upload_truth").set_value(("gt.png", _png(bad), "image/png"))
    run_allowing_errors = at.run()
    assert any("100×100 but the image is 256×256" in e.value for e in run_allowing_errors.error)
    assert at.session_state["last_render"]  # the image is still explained
    binary = (np.asarray(Image.open(REPO / "samples/masks/test_8_001.png")) > 0).astype(np.uint8) * 255
    at.file_uploader(key="upload_truth").set_value(("gt.png", _png(binary), "image/png"))
    run(at)
    assert fn in at.radio(key="w_sel_target").options
    assert set(at.session_state["last_dice"]) == {"any nucleus"}  # a binary truth is compared as any nucleus


def test_point_target_explains_the_object_under_it(at):
    from cam_core.data.objects import component_at

    pred = _sample_prediction()
    ys, xs = np.nonzero(pred.mask == 3)
    x, y = int(xs[len(xs) // 2]), int(ys[len(ys) // 2])
    cls, component = component_at(pred.mask, x, y)
    at.session_state["sel_point"] = (x, y)  # what a click on a panel sets
    at.radio(key="w_sel_target").set_value("point")
    run(at)
    assert at.session_state["last_render"]["target_pixels"] == int(component.sum())
    assert at.session_state["last_render"]["outlined"]
    record = at.session_state["last_record"]
    assert record["target_point_xy"] == [x, y]
    assert record["class_index"] == cls
    assert record["target_box_xyxy"][0] <= x < record["target_box_xyxy"][2]
    assert any(m.value.startswith("Target: **clicked object** at") for m in at.markdown)
    # a local question gets a map that depends on the region, and says so; sidebar and link agree
    assert record["method"] == "HiResCAM"
    assert at.selectbox(key="w_sel_method").value == "HiResCAM"
    assert at.query_params["method"] in ("HiResCAM", ["HiResCAM"])
    assert any("Explained with HiResCAM because the question is local" in i.value for i in at.info)
    at.radio(key="w_sel_target").set_value("predicted")
    run(at)
    assert at.session_state["last_record"]["method"] == "GradCAM"  # the switch is undone
    at.selectbox(key="w_sel_method").set_value("XGradCAM")  # the user's choice is kept
    run(at)
    at.radio(key="w_sel_target").set_value("point")
    run(at)
    assert at.session_state["last_record"]["method"] == "XGradCAM"


def test_a_link_reproduces_the_view_and_reports_what_it_cannot_use(at):
    at.selectbox(key="w_sel_sample").set_value("test_8_001")
    at.selectbox(key="w_sel_method").set_value("HiResCAM")
    at.selectbox(key="w_sel_class").set_value(3)
    at.slider(key="w_opacity").set_value(0.7)
    at.radio(key="w_thr_mode").set_value("percentile")
    run(at)
    params = {k: at.query_params[k] for k in at.query_params}
    assert params["sample"] == "test_8_001"
    assert params["method"] == "HiResCAM"
    assert params["class"] == "epithelial"
    first = at.session_state["last_render"]
    fresh = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    for k, v in params.items():
        fresh.query_params[k] = v[0] if isinstance(v, list) else v
    run(fresh)
    assert fresh.session_state["last_render"]["overlay_sum"] == first["overlay_sum"]
    assert fresh.session_state["last_render"]["level"] == first["level"]
    assert not fresh.warning
    bad = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    bad.query_params["sample"] = "test_99_999"
    bad.query_params["layer"] = "decoder.nowhere"
    bad.query_params["class"] = "mitosis"
    bad.run()
    notes = " ".join(w.value.replace("\\", "") for w in bad.warning)  # shown escaped: text, not markdown
    assert "test_99_999" in notes
    assert "decoder.nowhere" in notes
    assert "mitosis" in notes
    assert bad.session_state["sel_sample"] == "test_12_002"  # a visible default, not a silent switch


def test_presenter_mode_draws_one_figure_with_its_caption(at):
    at.toggle(key="w_present").set_value(True)
    run(at)
    assert not [m for m in at.markdown if m.value.startswith("**Predicted mask")]  # one figure, not panels
    assert at.query_params["present"] == ["1"] or at.query_params["present"] == "1"
    button = next(b for b in at.get("download_button") if b.key == "present_figure")
    assert "figure" in button.label
    at.selectbox(key="w_present_view").set_value("overlay")
    run(at)
    assert at.query_params["view"] in ("overlay", ["overlay"])  # the link carries the one-panel view


@pytest.mark.parametrize(
    "settings",
    [
        {"present_view": "three", "opacity": 0.3, "cmap": "magma", "thr_mode": "percentile", "thr_pct": 70.0},
        {
            "present_view": "overlay",
            "sel_sample": "test_8_001",
            "sel_target": "point",
            "sel_point": (120, 64),
            "zoom": (0.1, 0.2, 0.7, 0.8),
        },
        {"present_view": "tissue", "values": "raw signed", "mask_style": "outlines"},
    ],
)
def test_the_record_alone_rebuilds_the_figure_pixel_for_pixel(at, settings):
    """What the presenter shows is what ``python -m cam_core figure result.json`` draws again."""
    import hashlib

    from cam_core.output.rebuild import rebuild

    for key, value in {"present": True, **settings}.items():
        at.session_state[key] = value
    run(at)
    record = at.session_state["last_record"]
    assert record["display"]["view"] == settings["present_view"]
    assert f"view={settings['present_view']}" in record["app_link"]  # the record opens this view again
    built = rebuild(json.loads(json.dumps(record)))  # as a file holds it
    assert hashlib.sha256(built.figure.tobytes()).hexdigest() == at.session_state["last_figure_sha"]


# ---------------------------------------------------------------- #13: the Slide page


@pytest.fixture(scope="module")
def slide_folder(tmp_path_factory):
    from cam_core.wsi import synthslide

    folder = tmp_path_factory.mktemp("slides")
    synthslide.write_slide(folder / "big.tif", synthslide.sample_tiles(), 20_000, (9_000, 9_000, 1_024, 1_024))
    synthslide.write_slide(folder / "nores.tif", synthslide.sample_tiles(), 2_048, (512, 512, 768, 768), kind="nores")
    (folder / "broken.svs").write_bytes(b"II*\x00not really a slide")
    return folder


def slide_page(folder, name, monkeypatch):
    """The Slide page on ``name`` from ``folder`` (reached from Explore, as a user does; not run yet)."""
    monkeypatch.setenv("SEGCAM_SLIDES_DIR", str(folder))
    app = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    run(app)
    app.session_state["slide_name"] = name
    app.switch_page("pages/4_Slide.py")
    return app


def test_slide_page_opens_a_20000_px_slide_and_explains_a_region(slide_folder, monkeypatch):
    app = slide_page(slide_folder, "big.tif", monkeypatch)
    run(app)
    assert any("20000×20000 px" in m.value and "0.25 µm/px" in m.value for m in app.markdown)
    app.button(key="slide_explain").click()
    run(app)  # switches to Explore, which explains the region
    region = app.session_state["slide_region"]
    assert region.slide["name"] == "big.tif"
    assert region.mpp == 0.25
    assert region.image.array.shape[:2] == (512, 512)  # the default side at the model's resolution
    x, y, w, h = region.slide["region_level0_xywh"]
    assert 9_000 - 512 <= x <= 9_000 + 1_024  # the region starts on the tissue
    record = app.session_state["last_record"]
    assert record["image"]["slide"]["region_level0_xywh"] == [x, y, w, h]
    assert record["image"]["microns_per_pixel"] == 0.25
    assert "µm²" in next(m.value for m in app.markdown if m.value.startswith("Target:"))


def test_slide_page_names_bad_slides_and_asks_for_a_missing_resolution(slide_folder, monkeypatch):
    app = slide_page(slide_folder, "broken.svs", monkeypatch)
    app.run()
    assert not app.exception
    assert any("not a slide OpenSlide can read" in e.value for e in app.error)
    app.selectbox(key="w_slide_name").set_value("nores.tif")
    app.run()
    assert not app.exception
    assert any("does not say its resolution" in w.value for w in app.warning)
    app.number_input(key="slide_mpp").set_value(0.25)
    app.run()
    assert not app.exception
    assert app.button(key="slide_explain")


def test_a_link_reopens_a_slide_region(slide_folder, monkeypatch):
    monkeypatch.setenv("SEGCAM_SLIDES_DIR", str(slide_folder))
    app = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    app.query_params["slide"] = "big.tif"
    app.query_params["region"] = "9100,9100,256,256"
    run(app)
    record = app.session_state["last_record"]
    assert record["image"]["slide"]["region_level0_xywh"] == [9100, 9100, 256, 256]
    assert app.query_params["region"] in (["9100,9100,256,256"], "9100,9100,256,256")  # and the link stays
    missing = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    missing.query_params["slide"] = "elsewhere.svs"
    missing.query_params["region"] = "0,0,256,256"
    missing.run()
    assert not missing.exception
    assert any("not in this server's slides folder" in w.value for w in missing.warning)


def test_a_slide_region_follows_the_models_resolution(slide_folder, tmp_path, monkeypatch):
    from conftest import tiny_unet

    from ui import compute

    folder = tmp_path / "models" / "tiny20x"
    tiny_unet().save_pretrained(str(folder))
    (folder / "segcam.json").write_text('{"classes": ["background", "alpha", "beta"], "microns_per_pixel": 0.5}')
    monkeypatch.setenv("SEGCAM_MODELS_DIR", str(folder.parent))
    monkeypatch.setenv("SEGCAM_SLIDES_DIR", str(slide_folder))
    compute.reset_model_entries()
    try:
        app = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
        app.query_params["slide"] = "big.tif"
        app.query_params["region"] = "9100,9100,256,256"
        run(app)
        assert app.session_state["slide_region"].image.array.shape[:2] == (256, 256)  # at 0.25 µm/px
        app.selectbox(key="w_sel_model").set_value("tiny20x")
        run(app)
        region = app.session_state["slide_region"]
        assert region.image.array.shape[:2] == (128, 128)  # the same 64 µm square at 0.5 µm/px
        assert region.mpp == 0.5
        assert app.session_state["last_record"]["image"]["microns_per_pixel"] == 0.5
    finally:
        compute.reset_model_entries()


# ---------------------------------------------------------------- #18: the Slide page under faults


def test_slide_page_reads_a_region_again_at_another_slide_resolution(slide_folder):
    """The same box of a slide read at a typed 0.5 and then 0.25 µm/px is two images (main: one
    cache key, so the second got the first one's capture and the overlay failed)."""
    from ui import compute

    path = str(slide_folder / "nores.tif")
    a = compute.slide_region_choice(path, 0.5, (600, 600, 256, 256), 0.25)
    b = compute.slide_region_choice(path, 0.25, (600, 600, 256, 256), 0.25)
    assert a.image.array.shape[:2] == (512, 512)
    assert b.image.array.shape[:2] == (256, 256)
    assert a.sha != b.sha
    again = compute.slide_region_choice(path, 0.5, (600, 600, 256, 256), 0.25)
    assert again.sha == a.sha  # and the same pixels are the same image


def test_slide_page_names_a_model_that_cannot_load(slide_folder, monkeypatch):
    from cam_core.errors import ModelLoadError
    from ui import compute

    app = slide_page(slide_folder, "big.tif", monkeypatch)

    def broken(name):
        raise ModelLoadError(f"{name}: weights are truncated")

    monkeypatch.setattr(compute, "get_model", broken)
    app.run()
    assert not app.exception  # main: the error escaped the page (no handler around get_model)
    assert any("weights are truncated" in e.value for e in app.error)


def test_slide_page_reads_a_batch_geojson_only_when_downloaded(slide_folder, monkeypatch, tmp_path):
    from pathlib import Path

    out = tmp_path / "batch_out" / "big"
    out.mkdir(parents=True)
    (out / "big.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    monkeypatch.setenv("SEGCAM_BATCH_DIR", str(tmp_path / "batch_out"))
    reads = []
    real = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda p: reads.append(p.name) or real(p))
    app = slide_page(slide_folder, "big.tif", monkeypatch)
    run(app)
    run(app)
    from ui.text import plain

    assert any(b.label.startswith(plain("big.geojson")) for b in app.get("download_button"))
    assert "big.geojson" not in reads  # main: read (up to hundreds of MB) on every rerun


# ---------------------------------------------------------------- #19: what a link can do


def opened_link(params: dict[str, str]):
    """The Explore page opened from a link with these parameters (run once, no exception)."""
    from ui import compute

    compute.clear_caches()
    app = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    for k, v in params.items():
        app.query_params[k] = v
    app.run()
    assert not app.exception
    return app


def test_a_link_cannot_put_markdown_in_the_apps_notes():
    app = opened_link(
        {"[**Session expired**](http://evil.example/login)": "1", "slide": "![x](http://127.0.0.1:8629/track.png)"}
    )
    notes = [w.value for w in app.warning]
    assert any("Session expired" in n for n in notes), notes
    for n in notes:  # every markdown special quoted from the link is escaped: text, not a link
        assert "](http" not in n.replace("\\]\\(http", ""), n
        assert "![" not in n.replace("\\!\\[", ""), n


def test_a_non_finite_percentile_in_a_link_is_a_note():
    app = opened_link({"thr": "percentile", "thr_pct": "nan"})  # main: crashed in render.threshold_level
    assert any("nan" in w.value and "percentile" in w.value for w in app.warning)


def test_a_damaged_batch_output_on_the_slide_page_is_a_note(slide_folder, monkeypatch, tmp_path):
    out = tmp_path / "batch_out" / "big"
    out.mkdir(parents=True)
    (out / "cam_lowres.npy").write_bytes(b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order'")  # truncated
    monkeypatch.setenv("SEGCAM_BATCH_DIR", str(tmp_path / "batch_out"))
    app = slide_page(slide_folder, "big.tif", monkeypatch)
    run(app)  # main: the page crashed for everyone (np.load outside any handler)
    assert any("damaged" in c.value for c in app.caption)


def test_an_unexpected_error_shows_an_id_not_the_servers_paths(caplog):
    from ui import compute

    with caplog.at_level("ERROR"):
        text = compute.describe_error(PermissionError(13, "Permission denied", "/srv/lab/segcam/models/x/config.json"))
    assert "/srv/lab" not in text  # main: "PermissionError: [Errno 13] … /srv/lab/…" in the page
    error_id = text.split("error id ")[1].split(";")[0]
    assert any(error_id in r.getMessage() and r.exc_info for r in caplog.records)  # the log has it all


def test_the_shipped_config_shows_no_tracebacks():
    import tomllib

    config = tomllib.loads((REPO / ".streamlit/config.toml").read_text())
    assert config["client"]["showErrorDetails"] == "none"


def test_uploaded_slides_are_private_to_a_session_and_verified(tmp_path):
    import os
    import stat

    from cam_core.wsi import slides

    root = tmp_path / "segcam_slides"
    a, b = slides.upload_folder(root, 3600), slides.upload_folder(root, 3600)
    assert a != b
    assert stat.S_IMODE(a.stat().st_mode) == 0o700  # main: one shared folder, predictable names
    data = b"II*\x00 a slide's bytes"
    mine = slides.store_upload(a, data, ".TIF")
    assert mine.read_bytes() == data
    mine.write_bytes(b"planted: another slide under the same name")
    again = slides.store_upload(a, data, ".tif")
    assert again == mine
    assert again.read_bytes() == data  # main: an existing file was kept, whoever wrote it
    named = slides.store_upload(a, data, ".svs", "../CMU 1 (scan).svs")
    assert named.name == "CMU_1_scan.svs"  # the user's own name, made safe; main: 23c560cef990ec66.svs
    assert named.parent == a
    old = slides.upload_folder(root, 3600)
    os.utime(old, (0, 0))
    slides.upload_folder(root, 3600)
    assert not old.exists()  # an idle session's folder is deleted
    assert a.exists()


def test_two_sessions_uploading_one_slide_get_their_own_files(slide_folder, monkeypatch):
    data = (slide_folder / "nores.tif").read_bytes()
    folders = []
    for _ in range(2):
        app = slide_page(slide_folder, "big.tif", monkeypatch)
        run(app)
        app.file_uploader(key="slide_upload").set_value(("small.tif", data, "image/tiff"))
        app.run()
        assert not app.exception
        assert any("2048×2048 px" in m.value for m in app.markdown)  # the upload is shown, not another file
        folders.append(app.session_state["slide_upload_dir"])
    assert folders[0] != folders[1]
    for folder in folders:
        assert [p.read_bytes() == data for p in Path(folder).iterdir()] == [True]


def test_the_provenance_line_shows_names_as_text():
    from cam_core.engine.result import CamResult
    from ui import compute
    from ui.text import code

    res = CamResult(
        np.zeros((4, 4), np.float32),
        np.zeros((4, 4), np.float32),
        "GradCAM",
        "decoder",
        "predicted",
        "m",
        "cpu",
        0.1,
        "cache",
        1,
    )
    line = compute.provenance_line(res, 0.2, "a`b`[x](http://evil.example).png", ["bg", "[**c**](http://evil.example)"])
    assert "[**c**](http" not in line  # main: a working link in the line under the panels
    assert "\\[\\*\\*c\\*\\*\\]\\(http" in line
    assert code("a`b`[x](http://evil.example).png") in line
    assert code("a`b`x") == "``a`b`x``"  # a code span the name cannot close


def test_class_names_from_a_model_folder_are_shown_as_text(tiny_folder, monkeypatch):
    import json as _json

    from ui import compute

    bad = "[**win**](http://evil.example)"
    (tiny_folder / "segcam.json").write_text(
        _json.dumps({"classes": ["background", bad, "![t](http://e.example/t.png)"]})
    )
    monkeypatch.setenv("SEGCAM_MODELS_DIR", str(tiny_folder.parent))
    compute.reset_model_entries()
    app = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    run(app)
    app.switch_page("pages/2_Model.py")
    run(app)
    listed = [m.value for m in app.markdown if "tiny\\_unet" in m.value]
    assert listed, [m.value for m in app.markdown]
    assert "](http" not in listed[0].replace("\\]\\(http", "")  # main: a working link on the Model page
    assert "![" not in listed[0].replace("\\!\\[", "")
    compute.reset_model_entries()


WEIGHTS_READ = {  # how the Model page says each kind's weights were read
    "state dict": "weights best.pth (state dict, torch.load weights_only)",
    "lightning": "weights epoch=3.ckpt (state dict, torch.load weights_only, prefix 'model.' stripped)",
    "smp segformer": "weights model.safetensors",
    "token layers (DPT)": "weights model.safetensors",
    "transformers": "weights model.safetensors (transformers' own loader)",
    "factory (lab package)": "weights model.pth (state dict, torch.load weights_only)",
    "factory (MONAI)": "weights model.safetensors",
}


@pytest.mark.parametrize("kind", list(WEIGHTS_READ))
def test_each_kind_of_model_folder_is_listed_explained_and_described(kind, tmp_path, monkeypatch, lab_site):
    """#24: a state dict, a Lightning .ckpt, smp's Segformer, a ViT (token layers), a transformers
    SegFormer and factory modules (a lab package, MONAI) dropped into the models folder are models
    like any other: listed, explained on the Explore page, and the Model page says their kind and
    how the weights were read."""
    from conftest import MODEL_KINDS, write_model_folder

    from ui import compute

    write_model_folder(kind, tmp_path / "models" / "lab_model")
    monkeypatch.setenv("SEGCAM_MODELS_DIR", str(tmp_path / "models"))
    compute.reset_model_entries()
    compute.clear_caches()
    try:
        app = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
        run(app)
        assert "lab_model" in app.selectbox(key="w_sel_model").options
        app.selectbox(key="w_sel_model").set_value("lab_model")
        run(app)
        assert not app.error, [e.value for e in app.error]
        record = app.session_state["last_record"]
        assert record["model"] == "lab_model"
        assert record["model_sha256"]
        assert app.session_state["last_render"]["overlay_sum"] > 0  # a map was drawn
        app.switch_page("pages/2_Model.py")
        run(app)
        shown = [c.value.replace("\\", "") for c in app.caption]  # as text: Markdown escapes removed
        assert any(f"kind: {MODEL_KINDS[kind]}" in c and WEIGHTS_READ[kind] in c for c in shown), shown
    finally:
        compute.reset_model_entries()


def test_a_link_with_a_layer_and_no_model_uses_the_layer():
    app = opened_link({"layer": "decoder.blocks.3"})
    assert not app.warning  # main: a false "not available here" note, and the default layer
    assert "`decoder.blocks.3`" in provenance(app)


# ---------------------------------------------------------------- #22: A/B views and the shortcut preset


def _fresh_from_link(at):
    params = {k: at.query_params[k] for k in at.query_params}
    fresh = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    for k, v in params.items():
        fresh.query_params[k] = v[0] if isinstance(v, list) else v
    return run(fresh)


def test_an_ab_view_of_two_methods_is_one_figure_one_link_and_one_record(at):
    from cam_core.output.rebuild import rebuild

    at.selectbox(key="w_ab_what").set_value("method")
    run(at)
    at.selectbox(key="w_ab_method").set_value("HiResCAM")
    run(at)
    record = at.session_state["last_record"]
    assert record["method"] == "GradCAM"
    assert record["compare_kind"] == "method"
    assert record["compare_with"]["method"] == "HiResCAM"
    assert at.query_params["ab"] in ("method", ["method"])
    assert not [m for m in at.markdown if m.value.startswith("**Predicted mask")]  # one A/B figure instead
    shown = at.session_state["last_figure_sha"]
    import hashlib

    assert hashlib.sha256(rebuild(json.loads(json.dumps(record))).figure.tobytes()).hexdigest() == shown
    assert _fresh_from_link(at).session_state["last_figure_sha"] == shown  # the link reproduces it


def test_the_shortcut_preset_shows_the_teaching_model_with_and_without_the_dot(at):
    at.selectbox(key="w_sel_sample").set_value("ink_dot_test_13_014")
    run(at)
    at.button(key="preset_consep-unet-marker-teaching").click()
    run(at)
    record = at.session_state["last_record"]
    assert (record["model"], record["layer"], record["method"]) == (
        "consep-unet-marker-teaching",
        "encoder.model.s1",
        "SegEigenCAM",
    )
    b = record["compare_with"]
    assert record["compare_kind"] == "marker"
    assert b["image"]["name"] == "test_13_014"  # the same tissue without the dot
    assert record["class"] == "epithelial"
    # with the dot the model calls the nuclei epithelial; without it, it does not
    assert record["predicted_area_percent"]["epithelial"] > 20
    assert b["predicted_area_percent"]["epithelial"] < 2
    assert _fresh_from_link(at).session_state["last_figure_sha"] == at.session_state["last_figure_sha"]


def test_the_shortcut_audit_of_this_tile_is_an_ab_view_with_a_planted_mark(at):
    """#23 item 7 in the app: B is this tile with an audit mark planted; the page says what the
    mark moved and how much of B's map lies on it; the record rebuilds (the mark planted again)
    and the link reproduces the figure."""
    import hashlib

    from cam_core.output.rebuild import rebuild
    from cam_core.trust.audit import AUDIT_MARKERS

    at.selectbox(key="w_ab_what").set_value("mark")
    run(at)
    assert at.selectbox(key="w_ab_mark").options == list(AUDIT_MARKERS)
    at.selectbox(key="w_ab_mark").set_value("pen stroke")
    run(at)
    record = at.session_state["last_record"]
    b = record["compare_with"]
    assert record["compare_kind"] == "mark"
    assert b["image"]["planted"] == {
        "mark": "pen stroke",
        "seed": 0,
        "on": {"name": "test_12_002", "sha256": record["image"]["sha256"]},
    }
    assert b["image"]["name"] == "test_12_002 + pen stroke"
    assert b["image"]["sha256"] != record["image"]["sha256"]
    line = [m.value for m in at.markdown if m.value.startswith("Shortcut audit, pen stroke planted on B")]
    assert len(line) == 1, [m.value for m in at.markdown]
    assert "of the pixels of nuclei clear of it change their call of" in line[0]
    assert "B's map puts" in line[0]
    shown = at.session_state["last_figure_sha"]
    assert hashlib.sha256(rebuild(json.loads(json.dumps(record))).figure.tobytes()).hexdigest() == shown
    assert at.query_params["b_mark"] in ("pen stroke", ["pen stroke"])
    assert _fresh_from_link(at).session_state["last_figure_sha"] == shown  # the link reproduces it
    # the teaching model reads the dot: on a clean tile the audit says so
    at.selectbox(key="w_sel_model").set_value("consep-unet-marker-teaching")
    run(at)
    at.selectbox(key="w_ab_mark").set_value("ink dot")
    run(at)
    line = [m.value for m in at.markdown if m.value.startswith("Shortcut audit, ink dot planted on B")]
    assert len(line) == 1
    assert "**the mark matters**" in line[0], line[0]


def test_every_preset_names_a_sample_layer_and_method_that_exist():
    from cam_core.data import samples
    from cam_core.engine.methods import get_method
    from cam_core.model import layers, models
    from cam_core.output.figure import AB_KINDS

    assert models.presets()
    for name, preset in models.presets().items():
        assert preset["sample"] in samples.names()
        assert preset["layer"] in layers.spatial_layers(models.load(name))
        get_method(preset["method"])
        assert preset["compare"] in AB_KINDS
        assert samples.clean_twin(preset["sample"]) in samples.names()
