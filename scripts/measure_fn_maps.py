"""What a missed-pixel (FN) map shows, and what a click costs, on the seven sample tiles.

For every tile and class with at least 200 missed pixels: the FN-targeted map of GradCAM and
HiResCAM at the default layer, its Pearson correlation with the map of the predicted region (TP
target), and the share of its mass on the missed region (against that region's share of the tile).
Then the time to explain a clicked object through the kept graph (one backward).

    .venv/bin/python scripts/measure_fn_maps.py [--out artifacts/fn_maps.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cam_core import engine  # noqa: E402
from cam_core.data.objects import find_objects  # noqa: E402
from cam_core.data.truth import FN, compare, load_truth  # noqa: E402
from cam_core.engine import targets as tg  # noqa: E402
from cam_core.engine.methods import METHODS  # noqa: E402
from cam_core.model import layers, models  # noqa: E402

METHOD_NAMES = ("gradcam", "hirescam")
MIN_FN = 200


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "artifacts" / "fn_maps.json"))
    args = ap.parse_args()
    loaded = models.load(None)
    layer = layers.default_layer(loaded)
    classes = loaded.spec.classes
    rows, clicks = [], []
    for path in sorted((REPO / "samples" / "images").glob("*.png")):
        image = np.asarray(Image.open(path).convert("RGB"))
        truth = load_truth(REPO / "samples" / "masks" / path.name, classes, image.shape[:2])
        # The kept graph serves the newest capture of the image: each recapture continues from the last.
        base = engine.capture(loaded, image, tg.TargetSpec("class", 1), [layer], keep_graph=True)
        pred = base.prediction.mask
        for c in range(1, len(classes)):
            missed = compare(pred, truth, c) == FN
            if missed.sum() < MIN_FN or not (pred == c).any():
                continue
            tp_cap = base = engine.recapture(loaded, base, tg.TargetSpec("predicted", c), image)
            fn_cap = base = engine.recapture(loaded, base, tg.TargetSpec("fn", c, truth=truth), image)
            for name in METHOD_NAMES:
                info = METHODS[name]
                tp_map = engine.cam_from_capture(tp_cap, info, layer).cam
                fn_map = engine.cam_from_capture(fn_cap, info, layer).cam
                r = float(np.corrcoef(tp_map.ravel(), fn_map.ravel())[0, 1]) if fn_map.std() > 0 else float("nan")
                share = float(fn_map[missed].sum() / max(fn_map.sum(), 1e-12))
                rows.append(
                    {
                        "tile": path.stem,
                        "class": classes[c],
                        "missed_px": int(missed.sum()),
                        "missed_share_of_tile": round(float(missed.mean()), 4),
                        "method": info.name,
                        "r_fn_vs_tp": round(r, 3),
                        "fn_map_mass_on_missed": round(share, 4),
                    }
                )
        for obj in find_objects(pred)[:5]:  # a click: one backward through the kept graph
            t0 = time.perf_counter()
            base = engine.recapture(loaded, base, tg.TargetSpec("point", None, point=obj.centroid_xy), image)
            engine.cam_from_capture(base, METHODS["gradcam"], layer)
            clicks.append(time.perf_counter() - t0)
    print(f"{loaded.name} @ {layer}, {len(rows) // len(METHOD_NAMES)} tile × class cells with ≥ {MIN_FN} missed px")
    print("| method | median r(FN map, TP map) | median mass on missed | median missed share of tile |")
    print("|---|---|---|---|")
    summary = {}
    for name in METHOD_NAMES:
        sel = [r for r in rows if r["method"] == METHODS[name].name]
        med = {
            k: statistics.median(r[k] for r in sel)
            for k in ("r_fn_vs_tp", "fn_map_mass_on_missed", "missed_share_of_tile")
        }
        summary[METHODS[name].name] = med
        print(
            f"| {METHODS[name].name} | {med['r_fn_vs_tp']:.2f} | {100 * med['fn_map_mass_on_missed']:.1f} % "
            f"| {100 * med['missed_share_of_tile']:.1f} % |"
        )
    click_ms = 1000 * statistics.median(clicks)
    print(f"explain a clicked object (recapture + GradCAM), median of {len(clicks)}: {click_ms:.0f} ms")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "summary": summary, "click_ms_median": click_ms}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
