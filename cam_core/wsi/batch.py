"""``python -m cam_core batch``: predictions and CAMs over whole slides, on Dask, to QuPath GeoJSON.

A slide is cut into a grid of tiles at the model's resolution, with overlap, over the tissue found
on its thumbnail. Each tile is one task: it reads its own region from the slide path (tasks carry
a path and a box, never pixels), predicts, explains each predicted class through the kept graph
(one forward+backward, then one backward per further class), and writes its objects to
``OUT/<slide>/tiles/r<row>_c<col>.json`` (atomically, last), returning a few numbers. A re-run
skips tiles whose file exists, so killing a run loses nothing. The model is loaded once per
worker process and kept there.

Objects are owned through a partition: each tile's owned cell is the tile minus half the overlap
on sides that have a neighbour, the owned cells tile the slide, and each tile exports only what it
predicts inside its own cell (the stitched mask is that mosaic). Objects inside a cell are
written whole by its tile; an object that reaches a side shared with another cell is written as a
fragment, and the fragments of neighbouring tiles are joined when the slide is assembled. So
every object of the stitched mask is exported exactly once, however large, and the GeoJSON is the
same however the tiles are scheduled, on one machine or many.

Runs on Dask distributed: an embedded ``LocalCluster`` (one single-threaded worker per core, or
one per GPU) or an existing cluster (``--scheduler tcp://host:8786`` or
``$DASK_SCHEDULER_ADDRESS``), whose workers must import this repository (``PYTHONPATH``) and see
the slides and the output folder at the same paths (shared storage).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cam_core.errors import InputError
from cam_core.grid import grid
from cam_core.progress import Line

SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"
DEFAULT_TILE = 512
DEFAULT_OVERLAP = 128  # 32 µm at 0.25 µm/px: a nucleus cut by one tile's edge is whole in its neighbour
LOWRES = 16  # model pixels per pixel of the stitched overview maps
MANIFEST_VERSION = 2  # 2: the one tile grid (cam_core.grid), whose last tiles sit at the edge


class BatchParams(BaseModel):
    """What every tile is computed with (the manifest records it; a re-run must match it)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str | None = None
    models_dir: str | None = None
    classes: tuple[int, ...] | None = Field(None, description="None: every nucleus class the tile predicts")
    layer: str | None = None
    method: str = "GradCAM"
    tile: int = Field(DEFAULT_TILE, gt=0, description="tile side in model pixels")
    overlap: int = Field(DEFAULT_OVERLAP, ge=0, description="pixels shared by neighbouring tiles (< tile)")
    threshold: float = Field(0.5, ge=0, le=1, description="CAM level of the annotation regions")
    mpp_override: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _overlap_below_tile(self) -> BatchParams:
        if self.overlap >= self.tile:
            raise ValueError(f"overlap {self.overlap} must be smaller than the tile {self.tile}")
        return self

    def record(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def checked(cls, **values: Any) -> BatchParams:
        """Parameters from a user, or an InputError naming each wrong one and its valid range."""
        try:
            return cls(**values)
        except ValidationError as exc:
            flags = {"mpp_override": "mpp", "classes": "class"}  # the CLI's names where they differ
            raise InputError(
                "; ".join(
                    f"--{flags.get(str(e['loc'][0]), str(e['loc'][0])) if e['loc'] else 'overlap'}: {e['msg']}"
                    for e in exc.errors()
                )
            ) from None


class Manifest(BaseModel):
    """``manifest.json`` of one slide's output folder; ``python -m cam_core schema manifest``.

    Written when a run starts (``running``), when it stops early (``interrupted`` or ``failed``),
    and once the slide is assembled (every other field)."""

    model_config = ConfigDict(extra="forbid")

    manifest: int = Field(MANIFEST_VERSION, description="this schema's version (2: the tile grid of cam_core.grid)")
    slide: dict[str, Any] = Field(description="name, size, levels, µm/px, vendor, SHA-256 of its properties")
    params: BatchParams
    running: bool | None = Field(None, description="true while a run goes on; false when it stopped early")
    interrupted: str | None = Field(None, description="what stopped the run (Ctrl-C, a lost scheduler)")
    tiles_finished: int | None = None
    failed: str | None = Field(None, description="the one cause every tile failed for")
    tiles_failed: int | None = None
    model: str | None = None
    versions: dict[str, str] | None = None
    tiles: dict[str, Any] | None = Field(None, description="planned, done and each tile's status")
    features: dict[str, int] | None = Field(None, description="detections and annotations in the GeoJSON")
    geojson: str | None = None
    coordinates: str | None = None
    cam_note: str | None = None
    run: dict[str, Any] | None = Field(None, description="this run: tiles run, skipped, repaired, tiles/s, loads")


def _write_manifest(out_dir: Path, **fields: Any) -> dict[str, Any]:
    """The manifest, checked against its schema and written atomically; unset fields left out."""
    record = {k: v for k, v in Manifest(**fields).model_dump(mode="json").items() if v is not None}
    _atomic_write(out_dir / "manifest.json", json.dumps(record, indent=1, allow_nan=False).encode())
    return record


@dataclass(frozen=True)
class TileJob:
    """One task: where to read, what it owns, where to write. Small and picklable."""

    slide: str
    slide_key: str
    row: int
    col: int
    x0: int  # level-0 box read (origin top-left of the slide)
    y0: int
    w0: int
    h0: int
    scale: float  # level-0 pixels per model pixel
    own: tuple[int, int, int, int]  # owned cell x0, y0, x1, y1 in model pixels of this tile
    neighbours: tuple[bool, bool, bool, bool]  # left, top, right, bottom edges have a tile beyond
    out_dir: str
    params: BatchParams
    grid_xy: tuple[int, int] = (0, 0)  # top-left on the slide's grid of model pixels

    @property
    def name(self) -> str:
        return f"r{self.row:04d}_c{self.col:04d}"

    @property
    def done_file(self) -> Path:
        return Path(self.out_dir) / "tiles" / f"{self.name}.json"


# ---------------------------------------------------------------- planning


def _spec(params: BatchParams, spec: Any) -> Any:
    """The model's spec: the one the caller has, else loaded (the driver loads the model once)."""
    from cam_core.model import models

    return spec if spec is not None else models.load(params.model, params.models_dir).spec


def plan(
    slide_path: str | Path, out_dir: str | Path, params: BatchParams, spec: Any = None
) -> tuple[Any, list[TileJob]]:
    """The slide's info and the tile grid over its tissue, at the model's resolution."""
    from cam_core.wsi import slides

    model_mpp = _spec(params, spec).mpp
    with slides.Slide(slide_path, params.mpp_override) as slide:
        info = slide.info
        if info.mpp is None:
            raise InputError(
                f"'{info.name}' does not say its resolution, so regions cannot be read at the model's "
                f"{model_mpp} µm/px; give --mpp (e.g. 0.25 for a 40× scan, 0.5 for 20×)"
            )
        if model_mpp is None:
            raise InputError("the model does not declare microns_per_pixel in its segcam.json; add it to run on slides")
        thumb = slide.thumbnail()
        tissue = slides.tissue_mask(thumb)
        scale = slide.scale_for(model_mpp)
    W, H = info.size_wh
    wm, hm = int(W / scale), int(H / scale)
    t_scale = thumb.shape[1] / W  # thumbnail pixels per level-0 pixel
    import cv2

    tissue = cv2.dilate(tissue.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    key = f"{info.name}:{info.properties_sha256[:16]}"
    jobs = []
    for cell in grid(wm, hm, params.tile, params.overlap):
        x0, y0 = round(cell.x * scale), round(cell.y * scale)
        w0, h0 = min(round(cell.w * scale), W - x0), min(round(cell.h * scale), H - y0)
        tx0, ty0 = int(x0 * t_scale), int(y0 * t_scale)
        tx1, ty1 = int(np.ceil((x0 + w0) * t_scale)), int(np.ceil((y0 + h0) * t_scale))
        if not tissue[ty0 : max(ty1, ty0 + 1), tx0 : max(tx1, tx0 + 1)].any():
            continue
        jobs.append(
            TileJob(
                str(Path(slide_path).resolve()),
                key,
                cell.row,
                cell.col,
                x0,
                y0,
                w0,
                h0,
                scale,
                cell.own,
                cell.neighbours,
                str(out_dir),
                params,
                (cell.x, cell.y),
            )
        )
    return info, jobs


# ---------------------------------------------------------------- one tile (runs on a worker)

_WORKER: dict[str, Any] = {"loads": 0}


def _worker_model(params: BatchParams) -> Any:
    """The model of this worker process, loaded on its first tile and kept (never shipped)."""
    from cam_core.model import models
    from cam_core.runtime import configure_threads

    key = f"{params.model}|{params.models_dir}"
    if _WORKER.get("key") != key:
        configure_threads(1)  # one thread per worker: workers are one per core
        _WORKER["model"] = models.load(params.model, params.models_dir)
        _WORKER["key"] = key
        _WORKER["loads"] += 1
    return _WORKER["model"]


SLIDES_PER_WORKER = 4  # open slides a worker keeps (file handles and OpenSlide's tile cache each)


def _slide(path: str, mpp_override: float | None) -> Any:
    """This worker's open slide for (path, resolution override, file version), least recently
    used ones closed beyond :data:`SLIDES_PER_WORKER` (a worker serves many slides and runs)."""
    from collections import OrderedDict

    from cam_core.wsi import slides

    cache: OrderedDict[tuple[Any, ...], Any] = _WORKER.setdefault("slides", OrderedDict())
    st = os.stat(path)
    key = (path, mpp_override, st.st_size, st.st_mtime_ns)
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    cache[key] = slides.Slide(path, mpp_override)
    while len(cache) > SLIDES_PER_WORKER:
        cache.popitem(last=False)[1].close()
    return cache[key]


def style(params: BatchParams, spec: Any) -> Any:
    """How every tile of a run names and measures its objects."""
    from cam_core.engine.methods import get_method
    from cam_core.wsi import geojson as gj

    return gj.Style(spec.classes, spec.colors, spec.mpp, get_method(params.method).name, params.threshold)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def process_tile(job: TileJob) -> dict[str, Any]:
    """Predict and explain one tile; write its objects; return a summary (no arrays)."""
    from cam_core import engine
    from cam_core.engine import targets as tg
    from cam_core.engine.graph import drop_graph
    from cam_core.engine.methods import get_method
    from cam_core.errors import NothingPredictedError
    from cam_core.model import layers
    from cam_core.wsi import geojson as gj

    t0 = time.perf_counter()
    params = job.params
    loaded = _worker_model(params)
    spec = loaded.spec
    info = get_method(params.method)
    if not info.from_cache:
        raise InputError(f"batch runs one-pass methods; {info.name} has passes of its own")
    layer = params.layer or layers.default_layer(loaded)
    image = _slide(job.slide, params.mpp_override).read_region(job.x0, job.y0, job.w0, job.h0, spec.mpp)
    h, w = image.shape[:2]
    ox0, oy0, ox1, oy1 = job.own
    ox1, oy1 = min(ox1, w), min(oy1, h)
    cams: dict[int, np.ndarray] = {}
    try:  # one forward+backward gives the mask and the most predicted class's map
        cap = engine.capture(loaded, image, tg.TargetSpec("predicted", None), [layer], keep_graph=True)
        pred = cap.prediction
    except NothingPredictedError as exc:
        cap, pred = None, exc.prediction
    mask, probs = pred.mask, pred.probs
    present = [int(c) for c in np.unique(mask) if c > 0]
    wanted = [c for c in present if params.classes is None or c in params.classes]
    if cap is not None:
        latest = cap  # the kept graph serves the newest capture of the image: continue from it
        for c in wanted:  # every further class: one backward through the kept graph
            this = cap
            if c != cap.target.class_index:
                this = latest = engine.recapture(loaded, latest, tg.TargetSpec("predicted", c), image)
            cams[c] = engine.cam_from_capture(this, info, layer).cam
        drop_graph(loaded)
    objects = gj.tile_objects(
        gj.TileGeometry((job.x0, job.y0), job.scale, (ox0, oy0, ox1, oy1), job.neighbours, job.grid_xy),
        mask,
        probs,
        cams,
        style(params, spec),
        f"{job.slide_key}:{job.name}",
    )
    features = objects.features
    # Overview maps of the owned cell: CAM of each pixel's own predicted class, and the mask.
    own_cam = np.zeros((h, w), np.float32)
    for c, cam in cams.items():
        own_cam[mask == c] = cam[mask == c]
    cell = (slice(oy0, oy1), slice(ox0, ox1))
    lo_cam = _downsample(own_cam[cell], LOWRES)
    lo_mask = mask[cell][LOWRES // 2 :: LOWRES, LOWRES // 2 :: LOWRES]
    tiles = Path(job.out_dir) / "tiles"
    tiles.mkdir(parents=True, exist_ok=True)
    import io

    buf = io.BytesIO()
    np.savez_compressed(buf, cam=lo_cam, mask=lo_mask)
    _atomic_write(tiles / f"{job.name}.npz", buf.getvalue())
    summary = {
        "tile": job.name,
        "detections": sum(f["properties"]["objectType"] == "detection" for f in features),
        "annotations": sum(f["properties"]["objectType"] == "annotation" for f in features),
        "seconds": round(time.perf_counter() - t0, 3),
        "worker_pid": os.getpid(),
        "model_loads": _WORKER["loads"],
    }
    record = {"summary": summary, "features": features, "fragments": [f.to_json() for f in objects.fragments]}
    _atomic_write(job.done_file, json.dumps(record, allow_nan=False).encode())
    return summary


def _downsample(a: np.ndarray, f: int) -> np.ndarray:
    h, w = a.shape[:2]
    hh, ww = max(1, -(-h // f)), max(1, -(-w // f))
    import cv2

    return cv2.resize(a, (ww, hh), interpolation=cv2.INTER_AREA) if a.size else np.zeros((hh, ww), a.dtype)


# ---------------------------------------------------------------- driver


def _client(workers: int | None, scheduler: str | None) -> tuple[Any, Any, str]:
    """A Dask client: the given scheduler, $DASK_SCHEDULER_ADDRESS, or an embedded LocalCluster."""
    import logging

    from distributed import Client, LocalCluster

    address = scheduler or os.environ.get(SCHEDULER_ENV)
    if address:
        try:
            return Client(address, timeout="20s"), None, address
        except OSError as exc:
            raise InputError(
                f"no Dask scheduler answers at {address} ({exc}); start one with `dask scheduler` or leave --scheduler out"
            ) from None
    import torch

    n = workers or (torch.cuda.device_count() if torch.cuda.is_available() else os.cpu_count() or 1)
    cluster = LocalCluster(
        n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=logging.ERROR
    )
    return Client(cluster), cluster, f"LocalCluster({n} workers)"


def assemble(
    info: Any, jobs: list[TileJob], out_dir: Path, params: BatchParams, extra: dict[str, Any], spec: Any = None
) -> dict[str, Any]:
    """The slide's GeoJSON, overview maps and manifest from the finished tile files."""
    from cam_core.engine.result import versions
    from cam_core.output import render
    from cam_core.wsi import geojson as gj

    features: list[dict[str, Any]] = []
    fragments: list[gj.Fragment] = []
    status = []
    records = {job.name: tile_record(job) for job in jobs}  # each tile's files read once
    for job in sorted(jobs, key=lambda j: (j.row, j.col)):
        data = records[job.name]
        if data is not None:
            features.extend(data["features"])
            fragments += [gj.Fragment.from_json(f) for f in data.get("fragments", [])]
            status.append(
                {"tile": job.name, "status": "done", **{k: data["summary"][k] for k in ("detections", "seconds")}}
            )
        else:
            status.append({"tile": job.name, "status": "missing"})
    stem = Path(info.name).stem
    spec = _spec(params, spec)
    key = f"{info.name}:{info.properties_sha256[:16]}"
    features += gj.join_fragments(fragments, jobs[0].scale if jobs else 1.0, style(params, spec), key)
    doc = gj.feature_collection(features)
    _atomic_write(out_dir / f"{stem}.geojson", json.dumps(doc, allow_nan=False, separators=(",", ":")).encode())
    # Stitched overviews, one pixel per LOWRES model pixels.
    if jobs:
        scale = jobs[0].scale
        wm, hm = int(info.size_wh[0] / scale), int(info.size_wh[1] / scale)
        cam = np.zeros((-(-hm // LOWRES), -(-wm // LOWRES)), np.float32)
        mask = np.zeros(cam.shape, np.uint8)
        for job in jobs:
            npz = job.done_file.with_suffix(".npz")
            if records[job.name] is None:
                continue
            with np.load(npz) as z:
                y = (job.grid_xy[1] + job.own[1]) // LOWRES  # the owned cell's place on the slide's grid
                x = (job.grid_xy[0] + job.own[0]) // LOWRES
                for arr, dst in ((z["cam"], cam), (z["mask"], mask)):
                    hh, ww = min(arr.shape[0], dst.shape[0] - y), min(arr.shape[1], dst.shape[1] - x)
                    dst[y : y + hh, x : x + ww] = arr[:hh, :ww]
        _save_npy(out_dir / "cam_lowres.npy", cam)
        _save_npy(out_dir / "mask_lowres.npy", mask)
        _png(render.heatmap(np.clip(cam, 0, 1)), out_dir / "cam_lowres.png")
        _png(render.colorize_mask(mask, spec.colors), out_dir / "mask_lowres.png")
    done = sum(s["status"] == "done" for s in status)
    return _write_manifest(
        out_dir,
        slide=info.record(),
        model=params.model,
        params=params,
        versions=versions(),
        tiles={"planned": len(jobs), "done": done, "status": status},
        features={
            "detections": sum(f["properties"]["objectType"] == "detection" for f in features),
            "annotations": sum(f["properties"]["objectType"] == "annotation" for f in features),
        },
        geojson=f"{stem}.geojson",
        coordinates="level-0 pixels, origin at the top-left of the slide",
        cam_note="CAM values are min-max normalised per tile (as grad-cam returns them); 'CAM ≥ t' regions use that scale",
        **extra,
    )


def tile_record(job: TileJob) -> dict[str, Any] | None:
    """A finished tile's record, or None when its files are missing or damaged (a truncated
    write, a disk error): such a tile counts as not done and is computed again."""
    import zipfile

    try:
        data = json.loads(job.done_file.read_text())
        with np.load(job.done_file.with_suffix(".npz")) as z:
            if z["cam"].ndim != 2 or z["mask"].ndim != 2:  # reading them is the check
                return None
        if not isinstance(data["summary"], dict) or not isinstance(data["features"], list):
            return None
        return data
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile):
        return None


def _save_npy(path: Path, arr: np.ndarray) -> None:
    import io

    buf = io.BytesIO()
    np.save(buf, arr)
    _atomic_write(path, buf.getvalue())


def _png(arr: np.ndarray, path: Path) -> None:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    _atomic_write(path, buf.getvalue())


def _check_writable(folder: Path) -> None:
    """Create ``folder`` and write a probe file there, or say why not (InputError)."""
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe"):
            pass
    except OSError as exc:
        raise InputError(
            f"cannot write to {folder} ({exc.strerror or exc}); give --out a folder this user "
            f"(uid {os.getuid() if hasattr(os, 'getuid') else '?'}) can write, or fix its permissions (finished tiles "
            'in it are kept); in a container, run as the folder\'s owner: docker run --user "$(id -u):$(id -g)" …'
        ) from None


def _check_resumable(manifest: Path, params: BatchParams, slide_sha256: str) -> None:
    """Refuse to mix tiles: an output folder resumes only the run that made it (same manifest
    version, i.e. the same tile grid; same parameters; same slide)."""
    where = manifest.parent
    try:
        old = json.loads(manifest.read_text())
        version, old_params = old.get("manifest"), BatchParams.model_validate(old.get("params"))
        old_sha = old.get("slide", {}).get("properties_sha256")
    except (OSError, ValueError, AttributeError, ValidationError):  # damaged, or not our manifest
        raise InputError(
            f"{where} holds a manifest.json this version cannot read; use another --out or delete it"
        ) from None
    if version != MANIFEST_VERSION:
        raise InputError(
            f"{where} was written by another version of batch (manifest {version}, now {MANIFEST_VERSION}: "
            "tiles differ); use another --out or delete it"
        )
    changed = [k for k in BatchParams.model_fields if getattr(old_params, k) != getattr(params, k)]
    if changed or old_sha != slide_sha256:
        what = f"other parameters ({', '.join(changed)})" if changed else "another slide"
        raise InputError(f"{where} holds a run with {what}; use another --out or delete it")


def run_slide(
    slide_path: Path, out_root: Path, params: BatchParams, client: Any, progress: Any = None, spec: Any = None
) -> dict[str, Any]:
    """Every not-yet-done tile of one slide through the client, then the slide's outputs."""
    from distributed import as_completed

    out_dir = out_root / Path(slide_path).stem
    info, jobs = plan(slide_path, out_dir, params, spec)
    for folder in (out_dir, out_dir / "tiles"):  # before any tile: a folder refusing writes fails them all
        _check_writable(folder)
    previous = out_dir / "manifest.json"
    if previous.is_file():
        _check_resumable(previous, params, info.properties_sha256)
    _write_manifest(out_dir, slide=info.record(), params=params, running=True)
    todo = [j for j in jobs if tile_record(j) is None]
    repaired = sum(j.done_file.is_file() for j in todo)  # written once, damaged since: run again
    skipped = len(jobs) - len(todo)
    t0 = time.perf_counter()
    failures: list[str] = []
    loads: dict[int, int] = {}
    done = 0

    def final(state: dict[str, Any]) -> None:  # the manifest never stays at "running"
        _write_manifest(out_dir, slide=info.record(), params=params, running=False, **state)

    try:
        if todo:
            futures = client.map(process_tile, todo, pure=False)
            for fut in as_completed(futures):
                try:
                    s = fut.result()
                    loads[s["worker_pid"]] = s["model_loads"]
                except Exception as exc:  # one bad tile does not stop the slide
                    failures.append(failure_cause(exc))
                done += 1
                if progress:
                    rate = done / max(time.perf_counter() - t0, 1e-9)
                    progress(done, len(todo), rate, (len(todo) - done) / max(rate, 1e-9), info.name)
    except BaseException as exc:  # Ctrl-C, a lost scheduler: say so in the manifest, then stop
        final({"interrupted": f"{type(exc).__name__}: {exc}"[:300], "tiles_finished": done})
        raise
    if todo and len(failures) == len(todo) and len(set(failures)) == 1:
        final({"failed": failures[0], "tiles_failed": len(failures)})
        raise InputError(f"every tile of {info.name} failed ({len(failures)}), for one cause: {failures[0]}")
    seconds = time.perf_counter() - t0
    extra = {
        "run": {
            "tiles_run": len(todo),
            "tiles_skipped_done_before": skipped,
            "tiles_damaged_and_run_again": repaired,
            "seconds": round(seconds, 2),
            "tiles_per_second": round(len(todo) / seconds, 3) if todo and seconds > 0 else None,
            "model_loads_per_worker": {str(k): v for k, v in sorted(loads.items())},
            "failures": failures,
        }
    }
    return assemble(info, jobs, out_dir, params, extra, spec)


def failure_cause(exc: BaseException) -> str:
    """A tile's failure in one line, with what to do where the cause is known."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    # Dask reports a worker that cannot import the task's module only as a deserialisation error.
    if ("cam_core" in text and "No module named" in text) or "deserialization of the task" in text:
        return (
            f"the Dask workers cannot import cam_core ({text[:120]}…): start each `dask worker` with "
            "PYTHONPATH=/path/to/this/repository (README, 'On several machines'), or install the project and "
            "the same package versions there"
        )
    return text[:500]


@dataclass(frozen=True)
class Agreement:
    """How faithful a slide's GeoJSON is to the stitched mask (the mosaic of the tiles' owned cells)."""

    dice: float  # per-class Dice, pooled, of the detections rasterised back vs the stitched mask
    duplicated: int  # detections mostly under another detection (an object exported twice)
    detections: int
    components: int  # connected objects (8-connected, per class) of the stitched mask


def stitched_mask(slide_path: str | Path, params: BatchParams, loaded: Any) -> tuple[np.ndarray, tuple[int, int]]:
    """The model's mask of every planned tile's owned cell, pasted on the model-pixel grid over
    the planned tiles' bounding box, and that box's top-left (x, y) on the grid."""
    from cam_core import engine
    from cam_core.wsi import slides

    _, jobs = plan(slide_path, Path("."), params, loaded.spec)
    if not jobs:
        return np.zeros((0, 0), np.uint8), (0, 0)
    gx0, gy0 = min(j.grid_xy[0] for j in jobs), min(j.grid_xy[1] for j in jobs)
    gx1 = max(j.grid_xy[0] + j.own[2] for j in jobs)
    gy1 = max(j.grid_xy[1] + j.own[3] for j in jobs)
    out = np.zeros((gy1 - gy0, gx1 - gx0), np.uint8)
    with slides.Slide(slide_path, params.mpp_override) as slide:
        for job in jobs:
            mask = engine.predict(loaded, slide.read_region(job.x0, job.y0, job.w0, job.h0, loaded.spec.mpp)).mask
            x0, y0, x1, y1 = job.own
            x1, y1 = min(x1, mask.shape[1]), min(y1, mask.shape[0])
            gx, gy = job.grid_xy[0] - gx0, job.grid_xy[1] - gy0
            out[gy + y0 : gy + y1, gx + x0 : gx + x1] = mask[y0:y1, x0:x1]
    return out, (gx0, gy0)


def mask_agreement(slide_path: str | Path, out_dir: Path, params: BatchParams) -> Agreement:
    """The exported detections rasterised back against the stitched mask of the same tiles."""
    from scipy import ndimage

    from cam_core.data.metrics import Overlap, overlap
    from cam_core.model import models
    from cam_core.wsi import geojson as gj

    doc = json.loads((out_dir / f"{Path(slide_path).stem}.geojson").read_text())
    loaded = models.load(params.model, params.models_dir)
    mask, (gx0, gy0) = stitched_mask(slide_path, params, loaded)
    _, jobs = plan(slide_path, out_dir, params, loaded.spec)
    scale = jobs[0].scale if jobs else 1.0
    raster = gj.rasterize(doc, mask.shape, loaded.spec.classes, scale, (gx0 * scale, gy0 * scale))
    drawn = raster.labels
    pooled, components = Overlap(), 0
    for c in range(1, len(loaded.spec.classes)):
        if params.classes is not None and c not in params.classes:
            continue
        pooled += overlap(drawn == c, mask == c)
        components += ndimage.label(mask == c, structure=gj.EIGHT)[1]
    detections = sum(f["properties"]["objectType"] == "detection" for f in doc["features"])
    return Agreement(0.0 if pooled.empty else pooled.dice, raster.duplicated, detections, components)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("batch", help="whole slides: prediction, CAMs and QuPath GeoJSON, on Dask")
    p.set_defaults(run=run)
    p.add_argument("slides", help="a slide file or a folder of slides")
    p.add_argument("--out", required=True, help="output folder (one subfolder per slide; re-runs resume)")
    p.add_argument("--model", default=None)
    p.add_argument("--models-dir", default=None)
    p.add_argument("--class", dest="cls", default=None, help="class name or index (default: every nucleus class)")
    p.add_argument("--layer", default=None, help="layer (default: the model's)")
    p.add_argument("--method", default="GradCAM", help="a one-pass method (default GradCAM)")
    p.add_argument("--threshold", type=float, default=0.5, help="CAM level of the annotation regions (0–1)")
    p.add_argument("--tile", type=int, default=DEFAULT_TILE)
    p.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP)
    p.add_argument("--mpp", type=float, default=None, help="the slides' µm/px when their metadata lacks it")
    p.add_argument("--workers", type=int, default=None, help="embedded cluster: workers (default one per core/GPU)")
    p.add_argument("--scheduler", default=None, help=f"an existing Dask scheduler (or ${SCHEDULER_ENV})")


def run(args: argparse.Namespace) -> int:
    from cam_core.engine import targets as tg
    from cam_core.engine.methods import get_method
    from cam_core.model import layers, models
    from cam_core.wsi import slides

    src = Path(args.slides)
    paths = slides.list_slides(src) if src.is_dir() else [src]
    if not paths:
        raise InputError(f"no slides in {src} (looked for {', '.join(slides.SLIDE_SUFFIXES)})")
    loaded = models.load(args.model, args.models_dir)
    info = get_method(args.method)
    if not info.from_cache:
        raise InputError(f"batch runs one-pass methods (GradCAM, HiResCAM, ...); {info.name} has passes of its own")
    layer = args.layer
    if layer is not None:
        layers.resolve_layers(loaded, layer)
    classes = None if args.cls is None else (tg.class_index(args.cls, loaded.spec.classes),)
    params = BatchParams.checked(
        model=args.model,
        models_dir=args.models_dir,
        classes=classes,
        layer=layer,
        method=info.name,
        tile=args.tile,
        overlap=args.overlap,
        threshold=args.threshold,
        mpp_override=args.mpp,
    )
    for p in paths:  # open every slide first: a bad one is reported before any work
        slides.Slide(p, args.mpp).close()

    lines: dict[str, Line] = {}

    def progress(done: int, total: int, rate: float, left: float, name: str) -> None:
        if name not in lines:
            lines[name] = Line(name, total, "tiles", own_rate=True)  # timed from the slide's start
        lines[name].count(done, total, f"{rate:.2f} tiles/s, about {left:.0f} s left")

    client, cluster, where = _client(args.workers, args.scheduler)
    failed = 0
    try:
        print(f"Dask: {where}", file=sys.stderr)
        for p in paths:
            try:
                m = run_slide(p, Path(args.out), params, client, progress, loaded.spec)
            finally:
                if p.name in lines:
                    lines.pop(p.name).close()
            r = m["run"]
            failed += len(r["failures"])
            print(
                f"{p.name}: {m['tiles']['done']}/{m['tiles']['planned']} tiles ({r['tiles_skipped_done_before']} done before), "
                f"{m['features']['detections']} nuclei, {m['features']['annotations']} CAM regions, "
                f"{r['tiles_per_second'] or 0:.2f} tiles/s → {Path(args.out) / p.stem / m['geojson']}"
            )
            for f in r["failures"][:5]:
                print(f"  failed tile: {f}", file=sys.stderr)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return 2 if failed else 0
