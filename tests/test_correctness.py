"""Defects found by reading main line by line (issue #10); each test failed on main before the fix."""

from __future__ import annotations

import contextlib
import json
import threading

import numpy as np
import pytest
import torch
from conftest import REPO, explain_args, tiny_unet, wrap
from PIL import Image

from cam_core import cli, engine, limits
from cam_core.cache import LRUCache
from cam_core.engine import graph as engine_graph
from cam_core.engine import tiling
from cam_core.engine.methods import METHODS
from cam_core.engine.targets import TARGET_KINDS, TargetSpec
from cam_core.errors import EmptyTargetError, InputError, ModelLoadError
from cam_core.model import models
from cam_core.model.rules import DecisionRule


def test_recapture_fallback_keeps_the_capture_rule(tiny, image64):
    strict = DecisionRule(type="background_below", threshold=0.2)
    cap = engine.capture(tiny, image64, TargetSpec("class", 1), ["decoder.blocks.3"], rule=strict, keep_graph=True)
    engine.capture(
        tiny, image64 // 2, TargetSpec("class", 1), ["decoder.blocks.3"], keep_graph=True
    )  # replaces the graph
    again = engine.recapture(tiny, cap, TargetSpec("class", 2), image64)
    assert again.seconds["forward"] > 0  # it did fall back to a full pass
    assert again.rule == strict
    assert (again.prediction.mask == cap.prediction.mask).all()
    assert (again.prediction.mask != engine.predict(tiny, image64).mask).any()  # the rule matters here


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({"decision_rule": "argmax"}, "decision_rule must be an object"),
        ({"decision_rule": {"type": "background_below"}}, "needs a threshold"),
        ({"decision_rule": {"type": "vote"}}, "unknown decision rule type"),
        # one schema for the rule (pydantic), inside segcam.json's: a wrong key named with the valid ones
        (
            {"decision_rule": {"type": "argmax", "thresh": 0.5}},
            "valid: type, threshold",
        ),
        ({"decision_rule": {"type": "background_below", "threshold": "0.5"}}, "decision_rule"),
        ({"preprocessing": {"meen": [0, 0, 0]}}, "valid: mean, std"),
        ({"preprocessing": {"mean": 5}}, "preprocessing.mean must be a list of 3 numbers"),
        ({"preprocessing": [1, 2]}, "preprocessing must be an object"),
        ({"colors": ["#000000", "red", "#FFFFFF"]}, "is not #RRGGBB"),
        ({"default_layer": 3}, "default_layer must be a dotted layer name"),
    ],
)
def test_malformed_segcam_json_is_a_load_error(tiny_folder, spec, needle, capsys):
    (tiny_folder / "segcam.json").write_text(json.dumps({"classes": ["background", "alpha", "beta"], **spec}))
    with pytest.raises(ModelLoadError, match=needle):
        models.load_folder(tiny_folder, device=torch.device("cpu"))
    (entry,) = [e for e in models.discover(tiny_folder.parent) if e.name == tiny_folder.name]
    assert needle in (entry.error or "")
    assert cli.main(["models", "--models-dir", str(tiny_folder.parent)]) == 0  # the list still works
    assert "CANNOT LOAD" in capsys.readouterr().out


def test_discovery_survives_any_error(tiny_folder, monkeypatch):
    def boom(folder):
        raise AttributeError("'str' object has no attribute 'get'")

    monkeypatch.setattr(models, "_build_architecture", boom)
    monkeypatch.setattr(models, "_CHECKED", {})  # not the results of folders checked before
    entries = models.discover(tiny_folder.parent)
    assert all(e.error and "AttributeError" in e.error for e in entries)


def test_scorecam_does_not_hold_the_model_lock(tiny, image64):
    free = []

    def progress(frac, msg):
        got = tiny.lock.acquire(timeout=0)
        free.append(got)
        if got:
            tiny.lock.release()

    before = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    engine.run_method(tiny, image64, TargetSpec("class", 1), METHODS["scorecam"], "decoder.blocks.1", progress=progress)
    assert free
    assert all(free)  # another session could take the lock at every step
    assert all(torch.equal(before[k], v) for k, v in tiny.model.state_dict().items())


def test_kept_graph_is_measured_and_counted(tiny, image64):
    engine.capture(tiny, image64, TargetSpec("class", 1), ["decoder.blocks.3"], keep_graph=True)
    assert engine_graph.kept(tiny) is not None
    assert engine_graph.kept(tiny).nbytes > 64 * 64 * 4  # at least the saved activations of a 64² input
    from ui import compute

    graph = engine_graph.kept(tiny).nbytes
    cache = LRUCache(max_entries=10, max_bytes=2 * graph + 1000)
    cache.put("a", np.zeros(graph // 4 + 300, np.float32))  # together with the graph: over budget
    cache.put("b", np.zeros(100, np.float32))
    compute_cache, compute.CAPTURES = compute.CAPTURES, cache
    try:
        compute._keep_graph_budget(tiny)  # the app's own accounting of the kept graph
    finally:
        compute.CAPTURES = compute_cache
    assert cache._reserved == {("graph", tiny.name): graph}
    assert cache.total_bytes <= cache.max_bytes
    assert cache.get("a") is None  # the oldest entry made room for the graph
    assert cache.get("b") is not None


def _background_only(tmp_path):
    model = tiny_unet()
    with torch.no_grad():
        model.segmentation_head[0].bias[0] += 100.0  # background everywhere
    folder = tmp_path / "bg_only"
    model.save_pretrained(str(folder))
    (folder / "segcam.json").write_text('{"classes": ["background", "alpha", "beta"]}')
    return folder


def test_auto_class_with_nothing_predicted_gives_the_mask(tmp_path, capsys):
    folder = _background_only(tmp_path)
    tile = tmp_path / "grey.png"
    Image.fromarray(np.full((64, 64), 180, np.uint8), mode="L").save(tile)
    out = tmp_path / "out"
    rc = cli.main(["explain", str(tile), "--model", str(folder), "--out", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0
    assert (out / "mask.png").is_file()
    assert "predicts only 'background'" in printed
    assert TARGET_KINDS["class"] in printed


def test_forward_errors_name_the_real_problem(tiny, image64):
    class OOM(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    broken = wrap(tiny_unet())
    broken.model.forward = OOM().forward
    with pytest.raises(InputError) as info:
        engine.predict(broken, image64)
    assert "out of memory" in str(info.value)
    assert "larger image" not in str(info.value)


def test_loading_a_model_changes_no_process_settings(tiny_folder):
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    with contextlib.suppress(RuntimeError, AssertionError):  # no GPU here: what matters happens before .to()
        models.load_folder(tiny_folder, device=torch.device("cuda"))
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


def test_evaluate_ignores_255_and_refuses_other_labels(tiny_folder, tmp_path):
    from cam_core.trust import evaluate as ev

    loaded = models.load_folder(tiny_folder, device=torch.device("cpu"))
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(data / "images/a.png")
    gt = np.zeros((64, 64), np.uint8)
    gt[20:30] = 1  # an index mask with an ignore band
    gt[:8] = 255
    Image.fromarray(gt).save(data / "masks/a.png")
    r = ev.evaluate(loaded, data, ["a"], "none", 0, loaded.spec.decision_rule, ["alpha"])
    assert r["ignored_pixels"] == 8 * 64
    assert sum(v["gt_pixels"] for v in r["per_class"].values()) == 56 * 64  # not clipped into 'beta'
    assert r["per_class"]["alpha"]["gt_pixels"] == 10 * 64
    gt[:8] = 7
    Image.fromarray(gt).save(data / "masks/a.png")
    with pytest.raises(InputError, match=r"values 7 that are not classes"):
        ev.evaluate(loaded, data, ["a"], "none", 0, loaded.spec.decision_rule, ["alpha"])


def test_slow_method_estimates_come_from_one_place():
    """The app's warning and its method label show the registry's estimate, not their own."""
    import re

    from streamlit.testing.v1 import AppTest

    from cam_core.model import layers
    from ui import compute

    compute.clear_caches()
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.run()
    at.selectbox(key="w_sel_layer").set_value("decoder.blocks.1")
    at.run()
    at.selectbox(key="w_sel_method").set_value("ScoreCAM")
    at.run()
    assert not at.exception
    from cam_core.cost import COSTS

    loaded = compute.get_model(models.default_model_name())
    channels = layers.spatial_layers(loaded)["decoder.blocks.1"].channels
    work = METHODS["scorecam"].work(channels, 256 * 256)
    want = round(max(COSTS.estimate(loaded.name, "method:ScoreCAM", work.units, "batched"), 1))
    (warning,) = [w.value for w in at.warning if "runs the model many times" in w.value]
    assert int(re.search(r"about (\d+) s", warning).group(1)) == want
    label = at.selectbox(key="w_sel_method").format_func("ScoreCAM")
    assert f"~{want} s" in label


def test_threads_are_chosen_and_overridable(monkeypatch):
    from cam_core.runtime import SERVER_THREADS, THREADS_ENV, configure_threads

    before = torch.get_num_threads()
    try:
        assert configure_threads(SERVER_THREADS) == SERVER_THREADS
        monkeypatch.setenv(THREADS_ENV, "2")
        assert configure_threads(SERVER_THREADS) == 2
        monkeypatch.setenv(THREADS_ENV, "many")
        assert configure_threads(SERVER_THREADS) == SERVER_THREADS
    finally:
        torch.set_num_threads(before)


def test_spare_cores_raise_threads_only_while_idle_and_put_them_back(monkeypatch, tmp_path):
    """A click's one-tile pass takes the cores no other task wants, then gives them back (also
    after an error); a busy machine or an explicit thread count leaves the setting alone."""
    import os

    from cam_core import runtime

    cores = len(os.sched_getaffinity(0))
    loadavg = tmp_path / "loadavg"
    loadavg.write_text("0.50 0.40 0.30 1/80 4242\n")  # only the reader runs
    assert runtime.idle_cores(loadavg) == cores
    loadavg.write_text(f"3.0 2.0 1.0 {cores + 1}/80 4242\n")  # every core busy besides the reader
    assert runtime.idle_cores(loadavg) == 0
    loadavg.write_text("garbage")
    assert runtime.idle_cores(loadavg) == 0  # unknown: no extra threads
    assert runtime.idle_cores(tmp_path / "absent") == 0

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        monkeypatch.setattr(runtime, "idle_cores", lambda: 2)
        with runtime.spare_cores() as n:
            assert n == 2 == torch.get_num_threads()
        assert torch.get_num_threads() == 1
        with pytest.raises(RuntimeError), runtime.spare_cores():
            raise RuntimeError("the pass failed")
        assert torch.get_num_threads() == 1
        monkeypatch.setattr(runtime, "idle_cores", lambda: 0)  # busy: stays as it was
        with runtime.spare_cores() as n:
            assert n == 1 == torch.get_num_threads()
        monkeypatch.setattr(runtime, "idle_cores", lambda: 2)
        monkeypatch.setenv(runtime.THREADS_ENV, "1")  # the operator's choice wins
        with runtime.spare_cores() as n:
            assert n == 1 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def test_server_sets_its_threads():
    """A fresh process that imports the app's compute layer runs torch on the server's thread count."""
    import os
    import subprocess
    import sys

    from cam_core.runtime import SERVER_THREADS, THREADS_ENV

    env = {k: v for k, v in os.environ.items() if k != THREADS_ENV}
    probe = "import torch, ui.compute; print(torch.get_num_threads())"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    assert int(out.stdout.split()[-1]) == SERVER_THREADS
    env[THREADS_ENV] = "3"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    assert int(out.stdout.split()[-1]) == 3


@pytest.fixture
def tissue():
    img = np.asarray(Image.open(REPO / "samples/images/test_12_002.png").convert("RGB"))
    return np.pad(img, ((0, 128), (0, 128), (0, 0)), mode="symmetric")


def test_tiled_capture_honours_eigen_smooth_and_eigen_methods(tiny, tissue, monkeypatch):
    from ui import compute

    monkeypatch.setattr(limits, "TILE_ABOVE_PIXELS", 300 * 300)
    monkeypatch.setattr(tiling, "DEFAULT_TILE", 256)
    choice = compute.ImageChoice("big", "sha-big", __import__("cam_core").LoadedImage(tissue))
    assert choice.large
    ch = compute.Choices(
        choice, tiny, 1, "decoder.blocks.1", METHODS["gradcam"], TargetSpec("class", 1), DecisionRule(), False
    )
    compute.clear_caches()
    cap = compute.get_capture(ch)
    assert cap.tiles > 1
    plain = compute.cam_for(ch, METHODS["gradcam"], "decoder.blocks.1", cap)
    ch.eigen_smooth = True
    smooth = compute.cam_for(ch, METHODS["gradcam"], "decoder.blocks.1", cap)
    assert np.abs(plain.cam - smooth.cam).max() > 0.05  # eigen_smooth is not lost on large images
    eigen = compute.cam_for(ch, METHODS["eigencam"], "decoder.blocks.1", cap)
    assert eigen.source == "tiled"
    assert "stitched tiled pass" in eigen.cost()
    assert "ms from the cached pass" not in eigen.cost()
    compute.clear_caches()


def test_model_spec_decision_rule_is_typed(tiny_folder):
    (tiny_folder / "segcam.json").write_text(
        json.dumps(
            {
                "classes": ["background", "alpha", "beta"],
                "decision_rule": {"type": "background_below", "threshold": 0.4},
            }
        )
    )
    loaded = models.load_folder(tiny_folder, device=torch.device("cpu"))
    assert loaded.spec.decision_rule == DecisionRule(type="background_below", threshold=0.4)


def test_capture_in_threads_while_scorecam_runs(tiny, image64):
    """With ScoreCAM on its own copy, a capture in another thread finishes during the run."""
    done = threading.Event()

    def other():
        engine.capture(tiny, image64, TargetSpec("class", 2), ["decoder.blocks.3"])
        done.set()

    seen = []

    def progress(frac, msg):
        if not seen:
            t = threading.Thread(target=other)
            t.start()
            t.join(timeout=30)
        seen.append(done.is_set())

    engine.run_method(tiny, image64, TargetSpec("class", 1), METHODS["scorecam"], "decoder.blocks.1", progress=progress)
    assert seen[0]


def test_tiled_cli_refuses_own_pass_methods_in_one_line(tiny_folder, tissue, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(limits, "TILE_ABOVE_PIXELS", 300 * 300)
    monkeypatch.setattr(tiling, "DEFAULT_TILE", 256)
    path = tmp_path / "big.png"
    Image.fromarray(tissue).save(path)
    rc = cli.main(explain_args(path, tiny_folder, "--method", "ScoreCAM", "--out", str(tmp_path / "o")))
    assert rc == 2
    assert "cannot run on a tiled image" in capsys.readouterr().err


def test_empty_target_error_carries_the_mask(tmp_path, image64):
    loaded = models.load_folder(_background_only(tmp_path), device=torch.device("cpu"))
    with pytest.raises(EmptyTargetError) as info:
        engine.capture(loaded, image64, TargetSpec("predicted", 1))
    assert info.value.prediction is not None
    assert TARGET_KINDS["class"] in str(info.value)


def test_a_replaced_kept_graph_is_freed(tiny, image64):
    """Measuring the kept graph once made a node → tensor → node cycle: every kept graph leaked
    (~290 MB per 512² capture; 50 uploads grew the server to 14.7 GB)."""
    import gc
    import weakref

    from cam_core.engine.capturing import capture

    capture(tiny, image64, TargetSpec("class", 1), None, keep_graph=True)
    graph = engine_graph.kept(tiny)
    refs = [weakref.ref(t) for t in [graph.logits, *graph.outputs.values()]]
    del graph
    capture(tiny, image64[::-1].copy(), TargetSpec("class", 1), None, keep_graph=True)
    gc.collect()
    alive = [r for r in refs if r() is not None]
    assert not alive, f"{len(alive)} tensors of the replaced graph are still alive"
