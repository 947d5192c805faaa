"""Torch intra-op threads for the server: one session alone, and four at once, per thread setting.

A "session request" is what the app does for a new tile: one capture (forward + backward over
the curated layers) of a 512² tile, one CAM, one overlay. Sessions are threads of one process
sharing one model, as in the Streamlit server. Each setting runs in a fresh process.

Usage: .venv/bin/python scripts/measure_threads.py [--threads default,1,2] [--requests 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _worker(requests: int, sessions: int) -> dict[str, float]:
    sys.path.insert(0, str(REPO))
    import numpy as np

    from cam_core import engine
    from cam_core.cli.bench import _tile_to
    from cam_core.data.images import load_image
    from cam_core.engine import methods
    from cam_core.engine.targets import TargetSpec
    from cam_core.model import layers, models
    from cam_core.output import render
    from cam_core.runtime import configure_threads

    threads = configure_threads(None)
    loaded = models.load()
    curated = layers.curated_layers(loaded)
    tiles = sorted((REPO / "samples/images").glob("*.png"))
    images = [_tile_to(load_image(p).array, 512) for p in tiles]
    engine.capture(loaded, images[0], TargetSpec("class", 1), curated)  # warm-up
    latencies: list[float] = []

    def session(k: int) -> None:
        for r in range(requests):
            img = np.ascontiguousarray(np.rot90(images[(k + r) % len(images)], k=r % 4))  # a new tile each time
            t0 = time.perf_counter()
            cap = engine.capture(loaded, img, TargetSpec("class", 1 + (k % 3)), curated)
            res = engine.cam_from_capture(cap, methods.METHODS["gradcam"], layers.default_layer(loaded))
            render.overlay(img, res.cam, 0.5, "viridis", render.threshold_level(res.cam, "otsu"))
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    workers = [threading.Thread(target=session, args=(k,)) for k in range(sessions)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wall = time.perf_counter() - t0
    return {"threads": threads, "median_s": statistics.median(latencies), "max_s": max(latencies), "wall_s": wall}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", default="default,1")
    ap.add_argument("--requests", type=int, default=3)
    ap.add_argument("--worker", nargs=2, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(_worker(*args.worker)))
        return 0
    print(f"512² request = capture over every curated layer + CAM + overlay; {os.cpu_count()} CPUs")
    print("| torch threads | sessions | median request | slowest request | wall for all |\n|---|---|---|---|---|")
    for setting in args.threads.split(","):
        env = dict(os.environ)
        env.pop("SEGCAM_TORCH_THREADS", None)
        if setting != "default":
            env["SEGCAM_TORCH_THREADS"] = setting
        for sessions in (1, 4):
            out = subprocess.run(
                [sys.executable, __file__, "--worker", str(args.requests), str(sessions)],
                capture_output=True, text=True, env=env, cwd=REPO, check=True,
            ).stdout  # fmt: skip
            r = json.loads(next(ln for ln in out.splitlines() if ln.startswith("RESULT"))[7:])
            label = f"{r['threads']} ({setting})"
            print(f"| {label} | {sessions} | {r['median_s']:.2f} s | {r['max_s']:.2f} s | {r['wall_s']:.1f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
