"""What the teaching model learned from the ink dot, and which CAMs show it (its model card's figures).

1. **Effect on the prediction.** Every CoNSeP test tile, as it is and with the dot planted on
   background (``cam_core.shortcut``), through the teaching model and the built-in model: the
   predicted epithelial area, and the epithelial Dice against the truth.
2. **Where the CAMs look.** On test tiles with the dot planted (up to ``--cam-tiles`` with
   epithelium in the truth and as many without), the teaching model's epithelial predictions are
   explained ("predicted region" target) by every one-pass method at every curated layer: the
   share of each CAM's mass inside the dot (its footprint covers about 1 % of a 256² tile).
3. **Do the trust checks agree?** On ``--trust-tiles`` dotted tiles without epithelium, the
   faithfulness and sanity of every one-pass method at four layers, against its share on the dot
   (Spearman over method × layer cells).

    .venv/bin/python scripts/measure_shortcut.py [--data ../shared/data/consep] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TEACHING = "consep-unet-marker-teaching"
BUILTIN = "consep-unet-regnetx004"


def main() -> int:
    # Long on purpose: one measurement read top to bottom in the order of the module docstring's
    # three questions (parts 1–3), each printing its figures; split, its shared tiles and models
    # would be passed between parts that only ever run in this order.
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "consep")
    ap.add_argument("--split", default="test")
    ap.add_argument("--cam-tiles", type=int, default=30, help="epithelium-free tiles explained in part 2")
    ap.add_argument("--trust-tiles", type=int, default=5, help="dotted tiles without epithelium for part 3")
    ap.add_argument(
        "--trust-layers",
        default="encoder.model.stem,encoder.model.s1,encoder.model.s2,decoder.blocks.2",
        help="layers of part 3",
    )
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from cam_core import engine
    from cam_core.data.metrics import Overlap, overlap
    from cam_core.engine import methods
    from cam_core.engine import targets as tg
    from cam_core.errors import EmptyTargetError
    from cam_core.model import layers, models
    from cam_core.trust.shortcut import MARKER, place, plant

    names = (args.data / f"{args.split}.txt").read_text().split()
    cls = MARKER.cls
    teaching, builtin = models.load(TEACHING), models.load(BUILTIN)
    stats: dict[str, dict[str, list[float]]] = {}
    planted: dict[bool, list[tuple[np.ndarray, np.ndarray]]] = {True: [], False: []}
    t0 = time.perf_counter()
    for i, name in enumerate(names):
        image = np.asarray(Image.open(args.data / "images" / f"{name}.png").convert("RGB"))
        truth = np.asarray(Image.open(args.data / "masks" / f"{name}.png"))
        centre = place(truth, np.random.default_rng(i))
        marked, dot = plant(image, centre)
        has = bool((truth == cls).any())
        for label, loaded in (("teaching", teaching), ("built-in", builtin)):
            s = stats.setdefault(label, {})
            for variant, img in (("as is", image), ("with dot", marked)):
                pred = engine.predict(loaded, img).mask
                area = float((pred == cls).sum())
                nuclei = float((pred > 0).sum())
                key = f"{variant} / {'with' if has else 'without'} epithelium"
                s.setdefault(f"area {key}", []).append(area)
                s.setdefault(f"share {key}", []).append(area / nuclei if nuclei else 0.0)
                s.setdefault(f"overlap {variant}", []).append(overlap(pred == cls, truth == cls))
        planted[has].append((marked, dot))
        print(f"\r{i + 1}/{len(names)} tiles, {time.perf_counter() - t0:.0f} s", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    effect: dict[str, dict[str, float]] = {}
    for label, s in stats.items():
        row = {k: round(float(np.mean(v)), 4) for k, v in s.items() if not k.startswith("overlap ")}
        for variant in ("as is", "with dot"):
            pooled = sum(s[f"overlap {variant}"], Overlap())
            row[f"epithelial Dice {variant}"] = 0.0 if pooled.empty else round(pooled.dice, 4)
        effect[label] = row

    # Part 2: CAM mass on the dot, where the dot made the teaching model see epithelium.
    fast = [m for m in methods.fast_methods() if not m.baseline]
    layer_names = layers.curated_layers(teaching)
    cams: dict[str, dict[str, dict[str, float]]] = {}
    explained: dict[str, int] = {}
    for has, group in planted.items():
        label = "with epithelium" if has else "without epithelium"
        mass: dict[str, list[float]] = {}
        explained[label] = 0
        for marked, dot in group[: args.cam_tiles]:
            try:
                cap = engine.capture(teaching, marked, tg.TargetSpec("predicted", cls), layer_names)
            except EmptyTargetError:
                continue  # nothing predicted epithelial on this tile
            explained[label] += 1
            for layer in layer_names:
                for info in fast:
                    cam = engine.cam_from_capture(cap, info, layer).cam
                    total = float(cam.sum())
                    share = float(cam[dot].sum()) / total if total > 0 else 0.0
                    mass.setdefault(f"{info.name}@{layer}", []).append(share)
        cams[label] = {
            k: {
                "mean_share": round(float(np.mean(v)), 4),
                "tiles_over_half": round(float(np.mean(np.array(v) > 0.5)), 4),
            }
            for k, v in sorted(mass.items(), key=lambda kv: -np.mean(kv[1]))
        }
    # Part 3: faithfulness and sanity against the ground truth of the shortcut.
    from scipy.stats import spearmanr

    from cam_core import trust

    trust_layers = layers.resolve_layers(teaching, args.trust_layers)
    cells: dict[str, dict[str, list[float]]] = {}
    for k, (marked, dot) in enumerate(planted[False][: args.trust_tiles]):
        try:
            reports = trust.trust(teaching, marked, tg.TargetSpec("predicted", cls), trust_layers, fast)
        except EmptyTargetError:
            continue
        cap = engine.capture(teaching, marked, tg.TargetSpec("predicted", cls), trust_layers)
        for r in reports:
            cam = engine.cam_from_capture(cap, methods.get_method(r.method), r.layer).cam
            c = cells.setdefault(f"{r.method}@{r.layer}", {"share": [], "faith": [], "above": [], "rho": []})
            c["share"].append(float(cam[dot].sum()) / max(float(cam.sum()), 1e-12))
            c["faith"].append(r.faithfulness.score)
            c["above"].append(r.faithfulness.above_random)
            c["rho"].append(abs(r.sanity.final_rho))
        print(f"\rtrust {k + 1}/{args.trust_tiles}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    table = {
        k: {m: round(float(np.mean(v)), 4) for m, v in c.items()}
        for k, c in sorted(cells.items(), key=lambda kv: -np.mean(kv[1]["share"]))
    }
    shares = [t["share"] for t in table.values()]
    agreement = {
        "spearman_share_vs_faithfulness": round(
            float(spearmanr(shares, [t["faith"] for t in table.values()]).statistic), 3
        ),
        "spearman_share_vs_above_random": round(
            float(spearmanr(shares, [t["above"] for t in table.values()]).statistic), 3
        ),
        "spearman_share_vs_sanity_abs_rho": round(
            float(spearmanr(shares, [t["rho"] for t in table.values()]).statistic), 3
        ),
    }
    out = {
        "measured": time.strftime("%Y-%m-%d"),
        "split": args.split,
        "tiles": len(names),
        "marker": {"class": cls, "radius_px": MARKER.radius, "rgb": MARKER.rgb},
        "dot_area_percent_of_256": round(100 * np.pi * MARKER.radius**2 / 256**2, 2),
        "effect": effect,
        "cam_tiles_explained": explained,
        "cam_share_on_dot": cams,
        "trust_vs_dot": {"layers": trust_layers, "agreement": agreement, "cells": table},
    }
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
