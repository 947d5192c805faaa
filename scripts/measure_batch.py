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

from cam_core.wsi import batch, synthslide  # noqa: E402


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
        params = batch.BatchParams(method="GradCAM")
        a = batch.mask_agreement(slide, first, params)
        print(
            f"GeoJSON: {a.dice:.3f} Dice of the detections rasterised back vs the stitched mask; "
            f"{a.detections} detections for {a.components} objects of the stitched mask; "
            f"{a.duplicated} detections exported twice"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
