"""A shared lab server (#19): memory bounds measured in fresh processes, the heavy-job queue,
the model list from metadata and off the request path, slides read block by block."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from conftest import REPO, tiny_unet, wrap

from cam_core import limits
from cam_core.engine import graph as engine_graph
from cam_core.errors import InputError
from cam_core.gate import JobGate
from cam_core.model import models
from cam_core.wsi import slides, synthslide


def _measure(*args: str, timeout: float = 300) -> dict:
    r = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "measure_hardening.py"), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- memory, in fresh processes


@pytest.mark.slow
def test_a_single_level_slide_is_seen_within_the_memory_bound():
    m = _measure("slide", "--side", "8192")
    assert m["answer"].startswith("overview 1024×1024"), m
    assert m["peak_mb"] - m["peak_mb_before"] < 200, m  # main: +3100 MB (a float32 copy of level 0)


@pytest.mark.slow
def test_a_64_mp_upload_is_refused_before_any_pass_with_what_it_needs():
    m = _measure("upload", "--side", "8000", timeout=120)  # main: ran 381 s, then again per slider move
    assert m["answer"].startswith("refused: "), m
    assert "needs 2,380 MB" in m["answer"], m  # the layer maps and probabilities, before any pass
    assert "may use 512 MB" in m["answer"], m
    assert "region of at most" in m["answer"], m
    assert m["model_passes"]["forward"] == 0, m
    assert m["peak_mb"] - m["peak_mb_before"] < 50, m


@pytest.mark.slow
def test_listing_a_huge_model_folder_costs_no_memory():
    m = _measure("models")
    assert "no model.safetensors" in m["answer"], m
    assert m["peak_mb"] - m["peak_mb_before"] < 100, m  # main: +628 MB and 1.9 s, in a user's request


# ---------------------------------------------------------------- slides block by block


def test_a_view_that_would_scan_a_huge_level_is_refused_with_what_to_do(tmp_path, monkeypatch):
    path = synthslide.write_slide(
        tmp_path / "flat.tif", synthslide.sample_tiles(), 2048, (512, 512, 512, 512), pyramid=False
    )
    monkeypatch.setattr(limits, "SLIDE_SCAN_MAX_PIXELS", 1024 * 1024)
    with slides.Slide(path) as s:
        assert s.info.level_count == 1
        with pytest.raises(InputError) as info:
            s.thumbnail()  # main: "damaged: its overview cannot be read ()" for a 200000² one
        assert s.read_region(512, 512, 256, 256, None).shape == (256, 256, 3)  # small regions still read
    msg = str(info.value)
    assert "no reduced (pyramid) levels" in msg
    assert "2048×2048 px of level 0" in msg
    assert "--pyramid" in msg


def test_a_view_read_block_by_block_equals_one_read(tmp_path, monkeypatch):
    path = synthslide.write_slide(
        tmp_path / "s.tif", synthslide.sample_tiles(), 3000, (700, 900, 1100, 900), pyramid=False
    )
    with slides.Slide(path) as s:
        whole = s.overview((500, 700, 1600, 1200), side=400)
        thumb = s.thumbnail(256)
        monkeypatch.setattr(limits, "SLIDE_READ_BLOCK_PIXELS", 64 * 64)
        blocked = s.overview((500, 700, 1600, 1200), side=400)
        calls = []
        real = s._read_level
        monkeypatch.setattr(s, "_read_level", lambda *a: calls.append(a[3] * a[4]) or real(*a))
        blocked_thumb = s.thumbnail(256)
    assert blocked.shape == whole.shape == (300, 400, 3)
    assert np.abs(blocked.astype(int) - whole.astype(int)).max() == 0  # an integer ratio: exact
    assert thumb.shape == blocked_thumb.shape == (256, 256, 3)
    assert np.abs(blocked_thumb.astype(int) - thumb.astype(int)).mean() < 1.0  # blocks' edges round
    assert len(calls) > 100
    assert max(calls) <= 2 * 64 * 64


# ---------------------------------------------------------------- the heavy-job queue


def _tiny_choices(image: np.ndarray, method: str):
    """A tiny model and the app's choices for class 1 at decoder.blocks.3 with ``method``."""
    from cam_core.data.images import LoadedImage
    from cam_core.engine import targets as tg
    from cam_core.engine.methods import METHODS
    from ui import compute

    loaded = wrap(tiny_unet())
    choice = compute.ImageChoice("t", "sha-t", LoadedImage(image))
    rule = loaded.spec.decision_rule
    return loaded, compute.Choices(
        choice, loaded, 1, "decoder.blocks.3", METHODS[method], tg.TargetSpec("class", 1), rule, False
    )


def test_the_gate_runs_at_most_its_slots_in_arrival_order_and_shows_places():
    gate = JobGate(1)
    release = threading.Event()
    order: list[str] = []
    places: dict[str, list[int]] = {"b": [], "c": []}

    def job(name: str, hold: bool) -> None:
        with gate.slot(lambda p: places[name].append(p.ahead) if name in places else None, poll_s=0.02):
            order.append(name)
            if hold:
                release.wait(10)

    a = threading.Thread(target=job, args=("a", True))
    a.start()
    while gate.running == 0:
        time.sleep(0.01)
    b = threading.Thread(target=job, args=("b", False))
    b.start()
    while gate.waiting < 1:
        time.sleep(0.01)
    c = threading.Thread(target=job, args=("c", False))
    c.start()
    time.sleep(0.2)
    assert order == ["a"]
    assert gate.waiting == 2
    release.set()
    for t in (a, b, c):
        t.join(10)
    assert order == ["a", "b", "c"]
    assert places["b"]
    assert set(places["b"]) == {0}
    assert 1 in places["c"]  # one ahead, then next
    assert gate.running == 0
    assert gate.waiting == 0


def test_a_cancelled_wait_leaves_the_queue_and_a_held_slot_enters_again():
    gate = JobGate(1)
    with gate.slot():
        with gate.slot():  # the same thread: no deadlock behind itself
            pass

        def cancel(place):
            raise KeyboardInterrupt  # what a Streamlit rerun raises through the progress callback

        caught = []

        def waiter():
            try:
                with gate.slot(cancel, poll_s=0.01):
                    pass
            except KeyboardInterrupt:
                caught.append(True)

        t = threading.Thread(target=waiter)
        t.start()
        t.join(5)
        assert caught
        assert gate.waiting == 0
    assert gate.running == 0
    with gate.slot():
        assert gate.running == 1


def test_a_slow_method_waits_for_a_free_slot_and_says_where_it_stands(monkeypatch, image64):
    from cam_core import engine
    from cam_core.engine.methods import METHODS
    from ui import compute

    gate = JobGate(1)
    monkeypatch.setattr(compute, "HEAVY", gate)
    loaded, ch = _tiny_choices(image64, "scorecam")
    cap = engine.capture(loaded, image64, ch.target, ["decoder.blocks.3"])
    texts: list[str] = []
    release = threading.Event()

    def other():
        with gate.slot():
            release.wait(10)

    holder = threading.Thread(target=other)
    holder.start()
    while gate.running == 0:
        time.sleep(0.01)
    runner = threading.Thread(
        target=compute.run_slow,
        args=(ch, METHODS["scorecam"], "decoder.blocks.3", cap, lambda f, t: texts.append(t)),
    )
    runner.start()
    time.sleep(1.2)
    assert texts
    assert all("waiting for a free slot" in t for t in texts)
    assert engine_graph.passes(loaded)["method_runs"] == 0
    release.set()
    runner.join(60)
    holder.join(5)
    assert engine_graph.passes(loaded)["method_runs"] == 1
    assert "next in line" in texts[0]
    assert "at most 1 at once" in texts[0]


# ---------------------------------------------------------------- the model list


def test_the_model_list_reads_metadata_not_weights(tiny_folder, monkeypatch):
    import safetensors.torch

    def no_weights(*a, **k):
        raise AssertionError("weights read while listing")

    monkeypatch.setattr(safetensors.torch, "load_file", no_weights)
    monkeypatch.setattr(models, "_CHECKED", {}, raising=False)
    entries = {e.name: e for e in models.discover(tiny_folder.parent)}
    assert entries["tiny_unet"].error is None  # main: every folder's weights loaded to list it
    assert entries["tiny_unet"].classes == ["background", "alpha", "beta"]


def test_the_model_list_is_refreshed_in_the_background(monkeypatch):
    from ui import compute

    old = [models.ModelEntry("old", REPO, "built-in")]
    new = [models.ModelEntry("new", REPO, "built-in")]
    release, started = threading.Event(), threading.Event()

    def slow_discover():
        started.set()
        release.wait(10)
        return new

    monkeypatch.setattr(compute, "_ENTRIES", (time.monotonic() - 10 * compute.ENTRIES_TTL_S, old))
    monkeypatch.setattr(compute.models, "discover", slow_discover)
    t0 = time.perf_counter()
    assert compute.model_entries() is old  # main: the request itself re-scanned every folder
    assert started.wait(5)
    assert compute.model_entries() is old  # one re-scan at a time, the old list meanwhile
    assert time.perf_counter() - t0 < 2
    release.set()
    for _ in range(100):
        if compute.model_entries() is new:
            break
        time.sleep(0.05)
    assert compute.model_entries() is new


# ---------------------------------------------------------------- estimates and uploads


def test_an_estimate_does_not_follow_a_capture_timed_under_load(image64):
    """The cost model's base is the fastest recent forward: a capture timed while six sessions
    ran, or a recapture with no forward at all, leaves the next estimate where it was."""
    from cam_core import engine
    from cam_core.cost import COSTS
    from cam_core.engine import targets as tg
    from ui import compute

    COSTS.forget()
    loaded, ch = _tiny_choices(image64, "gradcam")
    cap = engine.capture(loaded, image64, ch.target, ["decoder.blocks.3"], keep_graph=True)
    calm = compute.trust_estimate(ch, [(ch.method, ch.layer)], cap)
    megapixels = 64 * 64 / 1e6
    COSTS.observe_forward(loaded.name, megapixels, 5 * cap.seconds["forward"])  # six sessions at once
    assert compute.trust_estimate(ch, [(ch.method, ch.layer)], cap) == pytest.approx(calm, rel=1e-6)
    other = engine.recapture(loaded, cap, tg.TargetSpec("class", 2), image64)  # another class
    assert other.seconds["forward"] == 0  # one backward through the kept graph…
    assert compute.trust_estimate(ch, [(ch.method, ch.layer)], other) == pytest.approx(calm, rel=1e-6)


def test_all_sessions_uploads_are_bounded_in_bytes(tmp_path):
    import os

    from cam_core.wsi.slides import prune_all_uploads

    files = []
    for i, session in enumerate(["a", "b", "c", "a", "b"]):
        (tmp_path / session).mkdir(exist_ok=True)
        p = tmp_path / session / f"s{i}.tif"
        p.write_bytes(b"x" * 100)
        os.utime(p, ns=(i * 10**9, i * 10**9))
        files.append(p)
    gone = prune_all_uploads(tmp_path, keep=files[0], max_bytes=300)
    assert sorted(p.name for p in gone) == ["s1.tif", "s2.tif"]  # the oldest, never the one kept
    assert sorted(p.name for p in tmp_path.glob("*/*")) == ["s0.tif", "s3.tif", "s4.tif"]


def test_warm_up_leaves_the_server_long_lived_objects_out_of_the_collector():
    """After the launcher's warm-up, torch, Streamlit and the model are frozen out of the garbage
    collector, so the full collection Streamlit runs after every script run skips them."""
    import gc

    from ui import compute
    from ui.state import DEFAULT_SAMPLE

    gc.unfreeze()
    try:
        compute.warm_up(DEFAULT_SAMPLE)
        assert gc.get_freeze_count() > 100_000  # the imports alone are several hundred thousand objects
    finally:
        gc.unfreeze()
