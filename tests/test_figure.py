"""The figure for a room and the record that rebuilds it (#22): legend, ticks, plain caption, type
sizes, one-panel views filling the height, and ``result.json`` → the same pixels."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import explain_args
from PIL import Image

from cam_core import cli
from cam_core.engine import targets as tg
from cam_core.errors import InputError
from cam_core.model.layers import plain_layer
from cam_core.output import figure as fig


def _arrays(h: int = 96, w: int = 128) -> fig.Arrays:
    rng = np.random.default_rng(1)
    mask = np.zeros((h, w), np.uint8)
    mask[10:40, 10:50] = 1
    mask[50:80, 60:100] = 2
    cam = rng.random((h, w)).astype(np.float32)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return fig.Arrays(image, mask, cam, cam - 0.5, mask == 1, ["#000000", "#E69F00", "#56B4E9"], 0.25)


def _record(view: str = "three", **display) -> dict:
    return {
        "class": "alpha",
        "target": "predicted",
        "method": "GradCAM",
        "layer": "decoder.blocks.2",
        "model": "m",
        "device": "cpu",
        "target_description": "x",
        "target_pixels": 1200,
        "image": {"name": "tile"},
        "threshold": {"mode": "none", "level": None},
        "predicted_area_percent": {"background": 70.0, "alpha": 30.0, "beta": 0.0},
        "display": fig.Display(view=view, **display).model_dump(),
    }


@pytest.mark.parametrize("view", list(fig.VIEWS))
def test_every_view_fills_the_box_at_its_density(view):
    picture = fig.figure_from(_record(view), _arrays())
    assert picture.shape == (fig.FIGURE_BOX[1] * fig.FIGURE_DENSITY, fig.FIGURE_BOX[0] * fig.FIGURE_DENSITY, 3)
    # the panels' area: not white (the tissue, the map and the mask are never pure white here)
    rows = np.nonzero((picture != 255).any(axis=2).mean(axis=1) > 0.25)[0]
    if view in ("overlay", "heatmap", "mask"):  # one panel: it fills the height, the text beside it
        assert len(rows) / picture.shape[0] > 0.85, len(rows) / picture.shape[0]


def test_type_reads_at_the_back_of_a_room():
    assert min(fig.TYPE.values()) >= 14  # CSS px at the figure's box, shown 1:1 by the presenter


def test_the_legend_names_the_classes_shown_and_the_caption_is_plain():
    words = fig.words_from(_record(), _arrays().colors)
    assert [label for label, _ in words.legend] == ["background 70.0 %", "alpha 30.0 %"]  # beta: not predicted
    assert words.caption == "Where the model looked to call these nuclei alpha — GradCAM, decoder block 2"
    signed = fig.words_from(_record(values="raw signed", signed_scale=2.0), _arrays().colors)
    assert "blue" in signed.bar_label


def test_every_target_kind_asks_its_question():
    assert set(tg.QUESTIONS) == set(tg.TARGET_KINDS)
    assert plain_layer("encoder.model.s1") == "encoder s1"
    assert plain_layer("decoder.blocks.0") == "decoder block 0"
    assert plain_layer("segmentation_head.0") == "segmentation_head.0"


def test_a_target_is_written_as_the_cli_reads_it():
    shape = (64, 64)
    for text in ("predicted", "class", "point:3,4", "rect:2,3,20,30"):
        assert tg.parse_target(text, 1, shape).written() == text
    blob = np.zeros(shape, bool)
    blob[5:9, 5:9] = True
    blob[20, 20] = True
    assert tg.TargetSpec("mask", 1, mask=blob).written() is None  # its pixels are not in the record


def test_a_display_setting_that_does_not_exist_names_the_valid_ones():
    with pytest.raises(Exception, match="viridis"):
        fig.Display(colormap="rainbow")
    with pytest.raises(Exception, match=r"figure view 'four'.*tissue"):
        fig.Display(view="four")


def test_signed_view_and_zoom_change_the_picture():
    a = _arrays()
    plain = fig.figure_from(_record(), a)
    assert not np.array_equal(plain, fig.figure_from(_record(values="raw signed", signed_scale=1.0), a))
    zoomed = fig.panels(fig.Display(zoom_xyxy=[10, 20, 60, 70]), a)
    assert zoomed.heat.shape[:2] == (50, 50)
    assert zoomed.offset == (10, 20)
    outlines = fig.panels(fig.Display(mask_style="outlines"), a, display_width=None).mask
    assert (outlines[20, 20] == a.image[20, 20]).all()  # inside an object: the tissue, untinted
    assert (outlines[10, 20] == (0xE6, 0x9F, 0x00)).all()  # its edge in the class colour


# ---------------------------------------------------------------- the record rebuilds the figure


def test_cli_figure_is_rebuilt_from_result_json_alone(tmp_path, capsys):
    from cam_core.data import samples

    sample = samples.file("test_8_001")
    out = tmp_path / "out"
    extra = ("--target", "point:120,64", "--opacity", "0.3", "--threshold-mode", "percentile", "--threshold", "70")
    assert cli.main(["explain", str(sample), *extra, "--colormap", "magma", "--out", str(out)]) == 0
    record = json.loads((out / "result.json").read_text())
    assert record["display"]["colormap"] == "magma"
    assert record["display"]["threshold_value"] == 70
    assert len(record["model_sha256"]) == 64
    assert record["target_written"] == "point:120,64"
    again = tmp_path / "again.png"
    assert cli.main(["figure", str(out / "result.json"), "--out", str(again)]) == 0
    a, b = np.asarray(Image.open(out / "figure.png")), np.asarray(Image.open(again))
    assert a.shape == b.shape
    assert (a != b).sum() == 0  # the same pixels
    capsys.readouterr()
    other = tmp_path / "other.png"
    Image.open(samples.file("test_12_002")).save(other)
    changed = dict(record, image={**record["image"], "path": str(other)})
    changed["model_sha256"] = "0" * 64
    (tmp_path / "changed.json").write_text(json.dumps(changed))
    assert cli.main(["figure", str(tmp_path / "changed.json"), "--out", str(tmp_path / "x.png")]) == 2
    assert "weights differ from the record's" in capsys.readouterr().err


def test_a_record_without_its_image_or_mask_says_what_to_give(tiny_folder, tmp_path):
    from cam_core.output.rebuild import inputs

    tile = tmp_path / "tile.png"
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(tile)
    out = tmp_path / "o"
    assert cli.main(explain_args(tile, tiny_folder, "--out", str(out), cls="alpha")) == 0
    record = json.loads((out / "result.json").read_text())
    with pytest.raises(InputError, match="drawn mask"):
        inputs({**record, "target_written": None}, models_dir=tiny_folder.parent)
    tile.unlink()
    with pytest.raises(InputError, match="--image FILE"):
        inputs(record, models_dir=tiny_folder.parent)
    other = tmp_path / "other.png"
    Image.fromarray(np.full((64, 64, 3), 7, np.uint8)).save(other)
    with pytest.raises(InputError, match="not the record's image"):
        inputs(record, image=other, models_dir=tiny_folder.parent)


# ---------------------------------------------------------------- one estimate, from measurement


def test_an_estimate_starts_from_the_forward_rate_and_learns_from_its_runs():
    from cam_core.cost import PRIORS, CostModel, Work

    costs = CostModel()
    costs.observe_forward("m", 0.25, 1.0)  # a cold first forward: 4 s/MP
    costs.observe_forward("m", 0.25, 0.25)  # then 1 s/MP: the fastest recent rate is the base
    work = Work("method:ScoreCAM", units=10.0, prior="batched")
    assert work.seconds("m", costs) == pytest.approx(10.0 * PRIORS["batched"][0])
    work.done("m", 30.0, costs)  # the run took 3 s per unit: the next estimate says so
    assert work.seconds("m", costs) == pytest.approx(30.0)
    assert Work("trust", 2.0).seconds("m", costs) == pytest.approx(2.0)  # another action keeps its prior
    with pytest.raises(Exception, match="cost prior"):
        costs.estimate("m", "x", 1.0, prior="guess")


def test_the_forward_rate_is_the_models_not_a_wait_for_the_lock_or_another_process(tiny, image64, monkeypatch):
    import threading
    import time

    import torch

    from cam_core import engine
    from cam_core.cost import COSTS, CostModel
    from cam_core.engine.targets import TargetSpec

    costs = CostModel()
    costs.observe_forward("m", 1.0, 3.0, cpu_seconds=1.0)  # the cores shared with a browser: CPU 1 s of 3 s
    assert costs.seconds_per_unit("m", "x") == pytest.approx(1.0)
    costs.observe_forward("n", 1.0, 1.0, cpu_seconds=1.5)  # CPU time above wall (not one thread): the wall's
    assert costs.seconds_per_unit("n", "x") == pytest.approx(1.0)

    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # several threads: no CPU time is offered
    target = TargetSpec("class", 1)
    engine.capture(tiny, image64, target, ["decoder.blocks.2"])  # the layer probe, once
    COSTS.forget()
    held = threading.Event()

    def hold() -> None:
        with tiny.lock:
            held.set()
            time.sleep(0.5)

    threading.Thread(target=hold).start()
    held.wait()
    cap = engine.capture(tiny, image64, target, ["decoder.blocks.2"])
    assert cap.seconds["forward"] >= 0.4  # the user waited for the other session's pass ...
    rate = COSTS.seconds_per_unit(tiny.name, "x")
    assert rate * 64 * 64 / 1e6 < 0.2  # ... the model's rate does not include it


# ---------------------------------------------------------------- input quality notes


def test_quality_notes_name_ink_a_border_and_an_unusual_stain():
    from cam_core.data import quality, samples, stain
    from cam_core.data.images import load_image
    from cam_core.model import models
    from cam_core.trust import shortcut

    tile = load_image(samples.file("test_12_002")).array
    expected = quality.stain_range_for(models.builtin_registry()[models.default_model_name()]["path"])
    assert expected is not None
    assert quality.notes(tile, expected) == []  # a training-like tile: nothing to say
    inked, _ = shortcut.plant(tile, (60, 60))
    (ink,) = quality.notes(inked, expected)
    assert ink.startswith("Pen ink or a marker")
    bordered = tile.copy()
    bordered[:, -20:] = 10
    (border,) = quality.notes(bordered, expected)
    assert "along the right edge" in border
    shifted = stain.hed_jitter(tile, np.ones(3), np.array([0.0, 0.0, 0.4]))  # a residual cast
    assert quality.notes(shifted, expected)[0].startswith("This tile is stained unlike")
    assert quality.notes(shifted, None) == []  # no training range known: no stain note


def test_the_ramp_leaves_unattended_tissue_untinted_and_the_signed_view_can_scale_per_class():
    from cam_core.output import render

    a = _arrays()
    a.cam[:] = 0.0
    a.cam[:10, :10] = 1.0
    ramp = fig.panels(fig.Display(), a, display_width=None).over
    uniform = fig.panels(fig.Display(blend="uniform"), a, display_width=None).over
    assert (ramp[50:, 50:] == a.image[50:, 50:]).all()  # a map of 0: the tissue as it is
    assert not (uniform[50:, 50:] == a.image[50:, 50:]).all()  # viridis' dark end veils it
    assert "raw signed, this class" in render.SIGNED_SCALES
    assert fig.Display(values="raw signed, this class", signed_scale=2.0).signed
    assert fig.resolution_words(0.25) == "0.25 µm/px (≈40× objective)"


def test_a_large_region_is_drawn_at_the_size_it_is_shown_with_the_full_maps_threshold():
    a = _arrays(900, 1200)
    d = fig.Display(threshold_mode="percentile", threshold_value=80, outline_target=True)
    full, shown = fig.panels(d, a), fig.panels(d, a, max_side=600)
    assert shown.over.shape[:2] == (450, 600)
    assert shown.scale == pytest.approx(0.5)
    assert shown.level == full.level  # the threshold of the whole map, not of the smaller picture
    assert fig.panels(d, a, max_side=1200).over.shape == full.over.shape  # small enough: as before
    zoomed = fig.panels(d.model_copy(update={"zoom_xyxy": [100, 100, 500, 400]}), a, max_side=600)
    assert zoomed.offset == (100, 100)
    assert zoomed.scale == 1.0  # a zoomed region under the size: full resolution
