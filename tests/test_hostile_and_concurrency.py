"""Broken and hostile inputs through the engine, the CLI and the app; concurrent sessions."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch
from conftest import explain_args
from hostile_corpus import build

from cam_core import cli, engine
from cam_core.data.images import load_image
from cam_core.engine.methods import METHODS
from cam_core.engine.targets import TargetSpec
from cam_core.errors import InputError
from cam_core.model import models
from cam_core.model.state import hook_count


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    return folder, build(folder)


def test_corpus_through_engine(corpus, tiny):
    folder, cases = corpus
    assert len(cases) >= 20
    for case in cases:
        path = folder / case.name
        if case.expect == "error":
            with pytest.raises(InputError) as err:
                load_image(path)
            assert case.needle in str(err.value), (case.name, str(err.value))
            continue
        img = load_image(path)
        assert img.array.dtype == np.uint8
        assert img.array.ndim == 3
        assert img.array.shape[2] == 3
        if case.needle:
            assert any(case.needle in n for n in img.notes), (case.name, img.notes)
        cap = engine.capture(tiny, img.array, TargetSpec("class", 1), ["decoder.blocks.3"])
        res = engine.cam_from_capture(cap, METHODS["gradcam"], "decoder.blocks.3")
        assert res.cam.shape == img.array.shape[:2], case.name
        assert np.isfinite(res.cam).all()
    assert hook_count(tiny.model) == 0


def test_corpus_through_cli(corpus, tiny_folder, tmp_path, capsys):
    folder, cases = corpus
    for case in cases:
        rc = cli.main(explain_args(folder / case.name, tiny_folder, "--out", str(tmp_path / case.name)))
        captured = capsys.readouterr()
        if case.expect == "error":
            lines = [ln for ln in captured.err.strip().splitlines() if ln]
            assert rc == 2, case.name
            assert len(lines) == 1, (case.name, lines)
            assert case.needle in lines[0], (case.name, lines[0])
        else:
            assert rc == 0, (case.name, captured.err)
            info = json.loads((tmp_path / case.name / "result.json").read_text())
            if case.needle:
                assert any(case.needle in n for n in info["image"]["notes"]), case.name


@pytest.mark.slow
def test_corpus_through_app(corpus):
    from conftest import REPO
    from streamlit.testing.v1 import AppTest

    folder, cases = corpus
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.run()
    at.radio(key="w_sel_source").set_value("Upload")
    at.run()
    for case in cases:
        at.file_uploader(key="upload").set_value(
            (case.name, (folder / case.name).read_bytes(), "application/octet-stream")
        )
        at.run()
        assert not at.exception, case.name
        errors = [e.value for e in at.error]
        if case.expect == "error":
            assert any(case.needle in e for e in errors), (case.name, errors)
        else:
            assert not errors, (case.name, errors)
            assert any(" on `" in m.value for m in at.markdown), case.name


def _broken_models(root):
    import segmentation_models_pytorch as smp

    good = root / "good"
    smp.Unet("resnet18", encoder_weights=None, classes=2, decoder_channels=(16, 8, 8, 8, 8)).save_pretrained(str(good))
    cases = {}
    (root / "no_files").mkdir()
    cases["no_files"] = "no config.json"
    bad_cfg = root / "bad_config"
    bad_cfg.mkdir()
    (bad_cfg / "config.json").write_text("{oops")
    cases["bad_config"] = "not valid JSON"
    missing = root / "missing_weights"
    missing.mkdir()
    (missing / "config.json").write_text((good / "config.json").read_text())
    cases["missing_weights"] = "no model.safetensors"
    wrong = root / "wrong_shapes"
    smp.Unet("resnet18", encoder_weights=None, classes=3, decoder_channels=(16, 8, 8, 8, 8)).save_pretrained(str(wrong))
    (wrong / "config.json").write_text((good / "config.json").read_text())
    cases["wrong_shapes"] = "wrong shape"
    names = root / "class_mismatch"
    smp.Unet("resnet18", encoder_weights=None, classes=2, decoder_channels=(16, 8, 8, 8, 8)).save_pretrained(str(names))
    (names / "segcam.json").write_text(json.dumps({"classes": ["a", "b", "c"]}))
    cases["class_mismatch"] = "names 3 classes"
    garbage = root / "garbage_weights"
    garbage.mkdir()
    (garbage / "config.json").write_text((good / "config.json").read_text())
    (garbage / "model.safetensors").write_bytes(b"\x00" * 100)
    cases["garbage_weights"] = "unreadable"
    return cases


def test_broken_model_folders_are_listed_with_reasons(tmp_path):
    cases = _broken_models(tmp_path)
    entries = {e.name: e for e in models.discover(tmp_path)}
    assert entries["good"].error is None
    for name, needle in cases.items():
        assert entries[name].error, name
        assert needle in entries[name].error, (name, entries[name].error)
    assert models.load("good", tmp_path).num_classes == 2  # the others do not hide it


def test_app_keeps_serving_with_broken_models(tmp_path, monkeypatch):
    from conftest import REPO
    from streamlit.testing.v1 import AppTest

    from ui import compute

    _broken_models(tmp_path)
    monkeypatch.setenv("SEGCAM_MODELS_DIR", str(tmp_path))
    compute.reset_model_entries()
    try:
        at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
        at.run()
        assert not at.exception
        assert not at.error
        assert any("cannot load" in e.label for e in at.expander)
        at.selectbox(key="w_sel_model").set_value("good")
        at.run()
        assert not at.exception
        assert any("model `good`" in m.value for m in at.markdown)
    finally:
        compute.reset_model_entries()


def test_concurrent_sessions_match_serial(tiny):
    """Eight threads, different images, classes, targets and methods, on one shared model."""
    rng = np.random.default_rng(0)
    jobs = []
    for i in range(8):
        img = rng.integers(0, 256, (64 + 8 * (i % 3), 64, 3), dtype=np.uint8)
        method = ["gradcam", "hirescam", "layercam", "eigencam", "scorecam", "gradcamplusplus", "fem", "ablationcam"][i]
        jobs.append((img, TargetSpec("class", 1 + i % 2), METHODS[method]))

    def one(img, target, info):
        if info.from_cache:
            cap = engine.capture(tiny, img, target, ["decoder.blocks.3", "encoder.layer3"])
            return engine.cam_from_capture(cap, info, "decoder.blocks.3").cam
        return engine.run_method(tiny, img, target, info, "decoder.blocks.3", batch_size=4).cam

    serial = [one(*job) for job in jobs]
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(jobs))

    def worker(i):
        try:
            barrier.wait()
            results[i] = one(*jobs[i])
        except BaseException as exc:  # report in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i, expected in enumerate(serial):
        np.testing.assert_array_equal(results[i], expected)
    assert hook_count(tiny.model) == 0
    assert not tiny.model.training
    assert all(p.grad is None for p in tiny.model.parameters())
    assert torch.is_grad_enabled()
