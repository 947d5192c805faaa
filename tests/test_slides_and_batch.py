"""Whole slides (#13): OpenSlide fixtures made with tifffile, regions at the model's resolution,
batch on an embedded and on a separately started Dask cluster, resume after a kill, QuPath GeoJSON."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

from cam_core import cli
from cam_core.errors import InputError
from cam_core.wsi import geojson as gj
from cam_core.wsi import slides, synthslide

pytestmark = pytest.mark.slow
SIZE = 20_000
TISSUE = (9_000, 9_000, 1_024, 1_024)  # level-0 x, y, w, h of the tissue rectangle


@pytest.fixture(scope="module")
def slide_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("slides")
    tiles = synthslide.sample_tiles()
    synthslide.write_slide(folder / "big.tif", tiles, SIZE, TISSUE, mpp=0.25, kind="tiff")
    synthslide.write_slide(folder / "aperio.svs", tiles, 4_096, (1_024, 1_024, 768, 768), mpp=0.5, kind="svs")
    synthslide.write_slide(folder / "nores.tif", tiles, 4_096, (1_024, 1_024, 768, 768), kind="nores")
    return folder


def test_fixtures_open_with_their_resolution(slide_dir):
    with slides.Slide(slide_dir / "big.tif") as s:
        assert s.info.size_wh == (SIZE, SIZE)
        assert s.info.level_count >= 3
        assert s.info.mpp == pytest.approx(0.25)
    with slides.Slide(slide_dir / "aperio.svs") as s:
        assert s.info.vendor == "aperio"
        assert s.info.mpp == pytest.approx(0.5)
        assert s.info.objective_power == 20
    with slides.Slide(slide_dir / "nores.tif") as s:
        assert s.info.mpp is None
        assert any("does not say its resolution" in n for n in s.info.notes)
    with slides.Slide(slide_dir / "nores.tif", mpp_override=0.25) as s:
        assert s.info.mpp == 0.25


def test_a_region_is_read_at_the_models_resolution_from_the_nearest_level(slide_dir):
    x, y = TISSUE[0] + 100, TISSUE[1] + 100
    with slides.Slide(slide_dir / "big.tif") as s:
        native = s.read_region(x, y, 512, 512, 0.25)
        half = s.read_region(x, y, 512, 512, 0.5)  # a 20× model: half the pixels
        assert native.shape == (512, 512, 3)
        assert half.shape == (256, 256, 3)
        import cv2

        expected = cv2.resize(native, (256, 256), interpolation=cv2.INTER_AREA)
        assert np.abs(half.astype(int) - expected).mean() < 3
        with pytest.raises(InputError, match="reaches outside"):
            s.read_region(SIZE - 10, 0, 512, 512, 0.25)
        with pytest.raises(InputError, match="read at once"):
            s.read_region(0, 0, SIZE, SIZE, 0.25)  # never a whole level 0
        thumb = s.thumbnail()
        assert max(thumb.shape[:2]) <= slides.THUMBNAIL_SIDE
        tissue = slides.tissue_mask(thumb)
        _ys, xs = np.nonzero(tissue)
        k = thumb.shape[1] / SIZE
        assert xs.min() >= TISSUE[0] * k - 2
        assert xs.max() <= (TISSUE[0] + TISSUE[2]) * k + 2


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"not a slide at all", "not a slide OpenSlide can read"),
        (b"II*\x00" + b"\x00" * 64, "not a slide OpenSlide can read"),
    ],
)
def test_files_that_are_not_slides_are_named(tmp_path, content, needle, capsys):
    bad = tmp_path / "bad.svs"
    bad.write_bytes(content)
    with pytest.raises(InputError, match=needle):
        slides.Slide(bad)
    assert cli.main(["slide", str(bad)]) == 2
    assert needle in capsys.readouterr().err


def test_truncated_slide_is_refused(slide_dir, tmp_path, capsys):
    data = (slide_dir / "aperio.svs").read_bytes()
    cut = tmp_path / "cut.svs"
    cut.write_bytes(data[: len(data) // 3])
    rc = cli.main(["explain", str(cut), "--region", "1100,1100,256,256", "--out", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "cut.svs" in err
    assert len(err.strip().splitlines()) == 1


def test_cli_opens_the_slide_and_explains_a_region_with_a_scale_bar(slide_dir, tmp_path, capsys):
    assert cli.main(["slide", str(slide_dir / "big.tif"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["size_wh"] == [SIZE, SIZE]
    assert info["microns_per_pixel"] == 0.25
    out = tmp_path / "region"
    region = f"{TISSUE[0] + 128},{TISSUE[1] + 128},256,256"
    assert cli.main(["explain", str(slide_dir / "big.tif"), "--region", region, "--out", str(out)]) == 0
    rec = json.loads((out / "result.json").read_text())
    assert rec["image"]["region_level0_xywh"] == [TISSUE[0] + 128, TISSUE[1] + 128, 256, 256]
    assert rec["image"]["microns_per_pixel"] == 0.25
    assert rec["image"]["slide"]["name"] == "big.tif"
    from PIL import Image

    overlay = np.asarray(Image.open(out / "overlay.png"))
    assert (overlay[-20:, 4:40] == 0).all(axis=-1).any()  # the black bar of the µm scale bar
    # no resolution: exit 2 with the fix; with --mpp it works
    nores = slide_dir / "nores.tif"
    assert cli.main(["explain", str(nores), "--region", "1100,1100,256,256", "--out", str(tmp_path / "n")]) == 2
    assert "give --mpp" in capsys.readouterr().err
    args = ["explain", str(nores), "--region", "1100,1100,256,256", "--mpp", "0.25", "--out", str(tmp_path / "n")]
    assert cli.main(args) == 0
    # a whole slide without a region: one line saying what to do
    assert cli.main(["explain", str(slide_dir / "aperio.svs"), "--out", str(tmp_path / "w")]) == 2
    assert "--region" in capsys.readouterr().err


# ---------------------------------------------------------------- GeoJSON


def test_geojson_polygons_keep_holes_and_follow_quPaths_rules():
    mask = np.zeros((60, 60), bool)
    mask[10:40, 10:40] = True
    mask[20:30, 20:30] = False  # a hole
    mask[50, 50] = True  # a one-pixel object
    polys = gj.mask_polygons(mask)
    assert sorted(len(p) for p in polys) == [1, 2]  # the ring with its hole, and the pixel
    feats = [
        gj.feature(
            gj.geometry([gj.to_level0(p, (100.0, 200.0), 2.0)]),
            "detection",
            "epithelial",
            (230, 159, 0),
            {"a": 1.0},
            f"k{i}",
        )
        for i, p in enumerate(polys)
    ]
    doc = gj.feature_collection(feats)
    assert gj.validate(doc, 300, 400) == []
    raster = gj.rasterize(doc, (60, 60), ["background", "epithelial"], 2.0, (100.0, 200.0))
    back = raster.labels
    assert raster.hits.max() == 1
    assert raster.duplicated == 0
    twice = gj.feature_collection([*feats, {**feats[0], "id": str(uuid.uuid4())}])
    assert gj.rasterize(twice, (60, 60), ["background", "epithelial"], 2.0, (100.0, 200.0)).duplicated == 2
    assert ((back > 0) == mask).all()  # exact outlines: the drawn pixels are the mask's (main: Dice > 0.97)
    assert back[25, 25] == 0  # the hole is kept
    bad = json.loads(json.dumps(doc))
    bad["features"][0]["properties"]["objectType"] = "blob"
    bad["features"][0]["properties"]["classification"]["color"] = [300, 0, 0]
    bad["features"][0]["properties"]["measurements"]["a"] = "x"
    bad["features"][0]["geometry"]["coordinates"][0][0] = [-5, 0]
    problems = " | ".join(gj.validate(bad, 300, 400))
    for needle in ("objectType", "color", "measurements", "outside", "not closed"):
        assert needle in problems
    # JSON has no NaN: a measurement that cannot be computed is left out, and the writer is strict
    nan = gj.feature(
        gj.geometry([gj.to_level0(polys[0], (0.0, 0.0), 1.0)]),
        "detection",
        "e",
        (1, 2, 3),
        {"a": float("nan"), "b": 1.0},
        "n",
    )
    assert nan["properties"]["measurements"] == {"b": 1.0}
    json.dumps(nan, allow_nan=False)


# ---------------------------------------------------------------- batch


def _batch(slide, out, *extra, env=None, **kw):
    cmd = [sys.executable, "-m", "cam_core", "batch", str(slide), "--out", str(out), *extra]
    return subprocess.run(cmd, cwd=REPO, env={**os.environ, **(env or {})}, capture_output=True, text=True, **kw)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def embedded(slide_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("embedded")
    r = _batch(slide_dir / "big.tif", out, "--workers", "2", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    (out / "stderr.txt").write_text(r.stderr)  # what the terminal showed
    return out / "big"


def test_the_batch_progress_line_says_one_time_left(embedded):
    err = (embedded.parent / "stderr.txt").read_text()
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if "tiles |" in ln and ": 0/" not in ln]
    assert lines, err[-2000:]
    assert all(ln.count(" left") == 1 for ln in lines), lines  # the batch's own figure ...
    assert not [ln for ln in lines if "<" in ln], lines  # ... and not tqdm's elapsed<remaining beside it
    rates = [float(re.search(r"([\d.]+) tiles/s", ln)[1]) for ln in lines]
    assert max(rates) < 100, lines  # timed from the slide's start (tqdm's first read 22429 tiles/s)


def test_batch_writes_valid_geojson_that_matches_the_models_mask(embedded, slide_dir):
    from cam_core.wsi import batch

    doc = json.loads((embedded / "big.geojson").read_text())
    assert gj.validate(doc, SIZE, SIZE) == []
    kinds = {f["properties"]["objectType"] for f in doc["features"]}
    assert kinds == {"detection", "annotation"}
    det = next(f for f in doc["features"] if f["properties"]["objectType"] == "detection")
    assert {"Area µm^2", "GradCAM CAM mean", "GradCAM CAM max", "Class probability mean"} <= set(
        det["properties"]["measurements"]
    )
    manifest = json.loads((embedded / "manifest.json").read_text())
    assert manifest["tiles"]["done"] == manifest["tiles"]["planned"] > 4
    batch.Manifest.model_validate(manifest)  # the schema `schema manifest` prints
    assert set(manifest["run"]["model_loads_per_worker"].values()) == {1}  # loaded once per worker
    assert len(manifest["run"]["model_loads_per_worker"]) == 2
    assert manifest["slide"]["properties_sha256"]
    assert (embedded / "cam_lowres.png").is_file()
    assert (embedded / "mask_lowres.png").is_file()
    # Detections rasterised back agree with the stitched mask (the tiles' owned cells); every
    # object of it is exported once: as many detections as components, no pixel under two.
    params = batch.BatchParams(method="GradCAM")
    agreement = batch.mask_agreement(slide_dir / "big.tif", embedded, params)
    assert agreement.dice == 1.0  # exact outlines (main: 0.977, polygons simplified by 1 px)
    assert agreement.duplicated == 0
    assert agreement.detections == agreement.components > 10


@contextlib.contextmanager
def dask_cluster(workers: int, cwd: Path, env: dict[str, str]):
    """``dask scheduler`` and ``dask worker``s started as the README's multi-machine lines do."""
    port = _free_port()
    dask = str(Path(sys.executable).parent / "dask")
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    scheduler = [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"]
    procs = [subprocess.Popen(scheduler, cwd=cwd, env=env, **quiet)]
    address = f"tcp://127.0.0.1:{port}"
    try:
        time.sleep(2)
        for _ in range(workers):
            worker = [dask, "worker", address, "--nthreads", "1", "--nworkers", "1", "--no-dashboard"]
            procs.append(subprocess.Popen(worker, cwd=cwd, env=env, **quiet))
        from distributed import Client

        with Client(address, timeout="30s") as client:
            client.wait_for_workers(workers, timeout=60)
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


def test_a_separate_dask_cluster_gives_the_same_geojson(embedded, slide_dir, tmp_path):
    with dask_cluster(2, REPO, {**os.environ, "PYTHONPATH": str(REPO)}) as address:
        r = _batch(slide_dir / "big.tif", tmp_path, env={"DASK_SCHEDULER_ADDRESS": address}, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"Dask: {address}" in r.stderr
    assert (tmp_path / "big" / "big.geojson").read_bytes() == (embedded / "big.geojson").read_bytes()
    manifest = json.loads((tmp_path / "big" / "manifest.json").read_text())
    assert len(manifest["run"]["model_loads_per_worker"]) == 2  # both workers took tiles


def test_workers_that_cannot_import_the_project_are_named(slide_dir, tmp_path):
    """Workers started elsewhere without PYTHONPATH: main printed '0/49 tiles … 1316 tiles/s',
    wrote an empty but valid-looking GeoJSON and gave no reason."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    with dask_cluster(1, tmp_path, env) as address:
        r = _batch(slide_dir / "aperio.svs", tmp_path / "out", "--scheduler", address, timeout=600)
    assert r.returncode == 2, r.stderr[-3000:]
    assert "cannot import cam_core" in r.stderr
    assert "PYTHONPATH" in r.stderr
    assert not (tmp_path / "out" / "aperio" / "aperio.geojson").exists()  # nothing pretends success
    manifest = json.loads((tmp_path / "out" / "aperio" / "manifest.json").read_text())
    assert manifest["running"] is False
    assert "cannot import cam_core" in manifest["failed"]


def test_a_killed_run_resumes_without_redoing_finished_tiles(embedded, slide_dir, tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "cam_core",
        "batch",
        str(slide_dir / "big.tif"),
        "--out",
        str(tmp_path),
        "--workers",
        "1",
    ]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    tiles = tmp_path / "big" / "tiles"
    deadline = time.time() + 300
    while time.time() < deadline and len(list(tiles.glob("*.json"))) < 3:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its Dask workers, mid-run
    proc.wait(timeout=30)
    done = {p.name: p.stat().st_mtime_ns for p in tiles.glob("*.json")}
    planned = json.loads((embedded / "manifest.json").read_text())["tiles"]["planned"]
    assert 3 <= len(done) < planned
    damaged = sorted(done)[0]  # a tile file cut short (a full disk, a copy that stopped): run again
    (tiles / damaged).write_bytes((tiles / damaged).read_bytes()[:100])
    done.pop(damaged)
    r = _batch(slide_dir / "big.tif", tmp_path, "--workers", "1", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]  # main: counted as done, then a traceback (exit 1)
    manifest = json.loads((tmp_path / "big" / "manifest.json").read_text())
    assert manifest["run"]["tiles_skipped_done_before"] == len(done)
    assert manifest["run"]["tiles_damaged_and_run_again"] == 1
    assert manifest["run"]["tiles_run"] == planned - len(done)
    assert {p.name: p.stat().st_mtime_ns for p in tiles.glob("*.json") if p.name in done} == done  # not redone
    assert (tmp_path / "big" / "big.geojson").read_bytes() == (embedded / "big.geojson").read_bytes()


def test_batch_refuses_what_it_cannot_do(slide_dir, tmp_path):
    r = _batch(slide_dir / "nores.tif", tmp_path, "--workers", "1", timeout=120)
    assert r.returncode == 2
    assert "give --mpp" in r.stderr
    r = _batch(slide_dir / "big.tif", tmp_path, "--method", "ScoreCAM", timeout=120)
    assert r.returncode == 2
    assert "one-pass methods" in r.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    r = _batch(empty, tmp_path, timeout=120)
    assert r.returncode == 2
    assert "no slides" in r.stderr


def test_a_batch_folder_resumes_only_the_run_that_made_it(tmp_path):
    """One schema for the parameters (pydantic): a re-run names what differs; a folder from the
    previous tile grid (manifest 1) or with a damaged manifest is refused, never mixed."""
    from cam_core.wsi import batch

    params = batch.BatchParams(method="GradCAM")
    manifest = tmp_path / "manifest.json"

    def write(**change):
        record = {"manifest": batch.MANIFEST_VERSION, "slide": {"properties_sha256": "abc"}, "params": params.record()}
        manifest.write_text(json.dumps({**record, **change}))

    write()
    batch._check_resumable(manifest, params, "abc")  # the same run: resumes
    with pytest.raises(InputError, match=r"other parameters \(tile, threshold\)"):
        batch._check_resumable(manifest, params.model_copy(update={"threshold": 0.7, "tile": 256}), "abc")
    with pytest.raises(InputError, match="another slide"):
        batch._check_resumable(manifest, params, "def")
    write(manifest=1)
    with pytest.raises(InputError, match=r"another version of batch \(manifest 1, now 2"):
        batch._check_resumable(manifest, params, "abc")
    write(params={**params.record(), "tile": "big"})
    with pytest.raises(InputError, match="cannot read"):
        batch._check_resumable(manifest, params, "abc")
    with pytest.raises(InputError, match=r"--threshold: Input should be less than or equal to 1"):
        batch.BatchParams.checked(threshold=1.5)
    with pytest.raises(InputError, match=r"--mpp: Input should be greater than 0"):
        batch.BatchParams.checked(mpp_override=-1)
    with pytest.raises(InputError, match="overlap 64 must be smaller than the tile 64"):
        batch.BatchParams.checked(tile=64, overlap=64)


def test_an_output_folder_that_refuses_writes_is_named_before_any_tile(slide_dir, tmp_path):
    (tmp_path / "aperio").mkdir()
    (tmp_path / "aperio" / "tiles").write_text("not a folder")  # what root cannot write either
    r = _batch(slide_dir / "aperio.svs", tmp_path, "--workers", "1", timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "cannot write to" in r.stderr
    assert "give --out a folder" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "aperio" / "manifest.json").exists()  # refused before the run started
