"""How stable is "beats random" (#23 item 2)? The verdict against other draws of the random maps.

A map "beats random" when its faithfulness exceeds the mean of ``RANDOM_SEEDS`` RandomCAM maps
by more than their spread (``trust.FaithfulnessVerdict.beats_random``). Per sample tile and
method at one layer, this draws ``--pool`` random maps (seeds 0…pool−1, the check's own draw being
the first ``RANDOM_SEEDS``), scores them all once, then re-judges every map against disjoint sets
of n of them (n = 3, 5, 10): how often the verdict differs from the majority over the sets, and
how much the random mean moves between sets. Prints one table and, with ``--json``, the figures.

    .venv/bin/python scripts/measure_random_seeds.py [--layer decoder.blocks.2] [--pool 30]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _beats(score: float, ref: np.ndarray, target: float, verdict: type) -> bool:
    """The check's rule against one set of random references."""
    return verdict(score, float(ref.mean()), float(ref.std()), target).beats_random


def main() -> int:
    # Long on purpose: one measurement read top to bottom (draw, score once, re-judge per set size,
    # print); its per-tile pool and curves would be passed between parts that only run in order.
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--layer", default="decoder.blocks.2")
    ap.add_argument("--methods", default="GradCAM,GradCAMPlusPlus,XGradCAM,HiResCAM,EigenCAM,FEM")
    ap.add_argument("--pool", type=int, default=30, help="random maps drawn per tile (sets are cut from them)")
    ap.add_argument("--sizes", default="3,5,10")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from cam_core import engine, trust
    from cam_core.data import samples
    from cam_core.data.images import load_image
    from cam_core.engine import methods
    from cam_core.engine.capturing import target_region
    from cam_core.engine.targets import TargetSpec
    from cam_core.model import models
    from cam_core.runtime import CLI_THREADS, configure_threads
    from cam_core.trust.deletion import FaithfulnessVerdict
    from cam_core.trust.protocol import RANDOM_SEEDS

    configure_threads(CLI_THREADS)  # SEGCAM_TORCH_THREADS=N to share the machine

    loaded = models.load(args.model)
    infos = [methods.get_method(m) for m in args.methods.split(",")]
    sizes = [int(n) for n in args.sizes.split(",")]
    t0 = time.perf_counter()
    rows: dict[int, dict[str, list[float]]] = {n: {"flips": [], "mean_sd": [], "own_differs": []} for n in sizes}
    for name in [n for n in samples.names() if not n.startswith("ink_dot")]:
        image = load_image(samples.file(name)).array
        cap = engine.capture(loaded, image, TargetSpec("predicted", None), [args.layer])
        h, w = image.shape[:2]
        pool = trust.random_maps(cap.activations[args.layer], (h, w), cap.padded_shape, seeds=args.pool)
        maps = {m.name: engine.cam_from_capture(cap, m, args.layer).cam for m in infos}
        maps |= {f"random{i}": m for i, m in enumerate(pool)}
        maps["target mask"] = target_region(loaded, cap.target, cap.prediction)[1]  # as the check's reference
        curves = trust.faithfulness(loaded, image, cap.target, cap.prediction, maps)
        target_score = curves["target mask"].score
        random_scores = np.array([curves[f"random{i}"].score for i in range(args.pool)])
        for n in sizes:
            sets = [random_scores[k * n : (k + 1) * n] for k in range(args.pool // n)]
            own = random_scores[:RANDOM_SEEDS]
            for m in infos:
                score = curves[m.name].score
                votes = [_beats(score, s, target_score, FaithfulnessVerdict) for s in sets]
                majority = sum(votes) * 2 >= len(votes)
                rows[n]["flips"].append(float(np.mean([v != majority for v in votes])))
                rows[n]["own_differs"].append(float(_beats(score, own, target_score, FaithfulnessVerdict) != majority))
            rows[n]["mean_sd"].append(float(np.std([s.mean() for s in sets])))
        print(f"{name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    out = {
        "measured": time.strftime("%Y-%m-%d"),
        "model": loaded.name,
        "layer": args.layer,
        "methods": [m.name for m in infos],
        "pool": args.pool,
        "check_uses": RANDOM_SEEDS,
        "seconds": round(time.perf_counter() - t0, 1),
        "by_set_size": {
            n: {
                "verdicts_unlike_majority": round(float(np.mean(r["flips"])), 4),
                "maps_whose_verdict_moves": round(float(np.mean([f > 0 for f in r["flips"]])), 4),
                "random_mean_sd_between_sets": round(float(np.mean(r["mean_sd"])), 4),
            }
            for n, r in rows.items()
        },
        "check_draw_unlike_majority_of_5_sets": round(float(np.mean(rows[5]["own_differs"])), 4) if 5 in rows else None,
    }
    print(
        "| random maps per reference | verdicts unlike the majority of sets | maps whose verdict moves | sd of the random mean between sets |"
    )
    print("|---|---|---|---|")
    for n, r in out["by_set_size"].items():
        print(
            f"| {n} | {r['verdicts_unlike_majority']:.1%} | {r['maps_whose_verdict_moves']:.1%} | "
            f"{r['random_mean_sd_between_sets']:.3f} |"
        )
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
