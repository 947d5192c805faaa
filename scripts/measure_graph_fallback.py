"""How often a shared server's sessions lose the kept autograd graph to each other.

The model keeps the graph of its newest capture only, so another class or a clicked object
costs one backward for the session whose capture is newest, and a full forward + backward for
the others ("fallback"). This simulates N sessions on one built-in model, each on its own sample
tile, acting in a random order (seeded): most actions re-target the session's tile (another class
or object: a recapture), some open another tile. It prints the share of recaptures that fell back.

    .venv/bin/python scripts/measure_graph_fallback.py [--sessions 1,2,4,8] [--actions 120]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    from cam_core import engine
    from cam_core.engine import graph as engine_graph
    from cam_core.engine.targets import TargetSpec
    from cam_core.model import models

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", default="1,2,4,8")
    ap.add_argument("--actions", type=int, default=120)
    ap.add_argument("--new-image", type=float, default=0.2, help="share of actions that open another tile")
    args = ap.parse_args()
    loaded = models.load(None)
    names = sorted(p.stem for p in (REPO / "samples/images").glob("*.png"))
    images = {n: np.asarray(Image.open(REPO / f"samples/images/{n}.png").convert("RGB")) for n in names}
    layers = ["decoder.blocks.2"]
    print("| sessions | recaptures | fell back to a full pass |")
    print("|---|---|---|")
    for n in (int(v) for v in args.sessions.split(",")):
        rng = np.random.default_rng(n)
        caps = {}
        for s in range(n):
            tile = names[s % len(names)]
            caps[s] = (tile, engine.capture(loaded, images[tile], TargetSpec("class", 1), layers, keep_graph=True))
        before = dict(engine_graph.passes(loaded))
        recaptures = 0
        for _ in range(args.actions):
            s = int(rng.integers(n))
            tile, cap = caps[s]
            if rng.random() < args.new_image:
                tile = names[int(rng.integers(len(names)))]
                caps[s] = (tile, engine.capture(loaded, images[tile], TargetSpec("class", 1), layers, keep_graph=True))
                continue
            cls = int(rng.integers(1, loaded.num_classes))
            caps[s] = (tile, engine.recapture(loaded, cap, TargetSpec("class", cls), images[tile]))
            recaptures += 1
        fell = engine_graph.passes(loaded)["fallback"] - before["fallback"]
        print(f"| {n} | {recaptures} | {fell} ({100 * fell / max(recaptures, 1):.0f} %) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
