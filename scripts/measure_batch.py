"""Batch throughput on this machine: `batch` over a generated 20000² slide with 1 and 2 workers.

Each run is a fresh process (Dask LocalCluster start-up included in the wall time); tiles/s is the
manifest's figure (tiles run ÷ seconds from the first submitted tile to the last finished one).

    .venv/bin/python scripts/measure_batch.py [--tissue 2048] [--workers 1,2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cam_core import synthslide  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=20_000)
    ap.add_argument("--tissue", type=int, default=2_048)
    ap.add_argument("--workers", default="1,2")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        slide = Path(tmp) / "slide.tif"
        c = (args.size - args.tissue) // 2
        synthslide.write_slide(slide, synthslide.sample_tiles(), args.size, (c, c, args.tissue, args.tissue))
        print(f"slide {args.size}² with {args.tissue}² of tissue; 512² tiles, 128 px overlap, GradCAM, every class")
        print("| workers | tiles | tiles/s | wall time (incl. cluster start) |")
        print("|---|---|---|---|")
        for n in (int(v) for v in args.workers.split(",")):
            out = Path(tmp) / f"out{n}"
            t0 = time.perf_counter()
            cmd = [sys.executable, "-m", "cam_core", "batch", str(slide), "--out", str(out), "--workers", str(n)]
            subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
            wall = time.perf_counter() - t0
            m = json.loads((out / "slide" / "manifest.json").read_text())
            print(f"| {n} | {m['run']['tiles_run']} | {m['run']['tiles_per_second']:.2f} | {wall:.1f} s |")
        first = Path(tmp) / f"out{args.workers.split(',')[0]}" / "slide"
        print(f"GeoJSON: {dice(slide, first):.3f} Dice of the detections rasterised back vs the model's own mask")
    return 0


def dice(slide: Path, out: Path) -> float:
    """Per-class Dice, pooled over every tile's owned cell, of the exported detections against
    the model's mask of the same tiles."""
    from cam_core import batch, engine, models, slides
    from cam_core import geojson as gj

    doc = json.loads((out / "slide.geojson").read_text())
    loaded = models.load(None)
    _, jobs = batch.plan(slide, out, batch.BatchParams(None, None, None, None, "GradCAM"))
    inter = total = 0
    with slides.Slide(slide) as s:
        for job in jobs:
            mask = engine.predict(loaded, s.read_region(job.x0, job.y0, job.w0, job.h0, loaded.spec.mpp)).mask
            drawn = gj.rasterize(doc, mask.shape, loaded.spec.classes, job.scale, (job.x0, job.y0))
            x0, y0, x1, y1 = job.own
            a, b = mask[y0:y1, x0:x1], drawn[y0:y1, x0:x1]
            for c in range(1, len(loaded.spec.classes)):
                inter += 2 * int(((a == c) & (b == c)).sum())
                total += int((a == c).sum() + (b == c).sum())
    return inter / max(total, 1)


if __name__ == "__main__":
    raise SystemExit(main())
