"""Tiled against untiled prediction on uploads just above the tiling threshold (#18's probe).

For each size, a sample tile mirror-padded to that size is predicted in one pass and through the
stitched (tiled) capture the app uses above 1 MP; prints the largest difference in predicted area
per class (percentage points) and the share of the last 32 rows and columns where the masks agree.

    .venv/bin/python scripts/measure_tiled_areas.py [--sizes 1100,1300,1537]
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
    from cam_core.engine import tiling
    from cam_core.engine.targets import TargetSpec
    from cam_core.model import models
    from cam_core.model.layers import default_layer

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1100,1300,1537")
    args = ap.parse_args()
    loaded = models.load(None)
    tile = np.asarray(Image.open(REPO / "samples/images/test_12_002.png").convert("RGB"))
    print("| size | tiles | max area difference (pp) | class of the largest | edge agreement |")
    print("|---|---|---|---|---|")
    for side in (int(v) for v in args.sizes.split(",")):
        image = np.pad(tile, ((0, side - 256), (0, side - 256), (0, 0)), mode="symmetric")
        untiled = engine.predict(loaded, image)
        cap = tiling.capture_tiled(loaded, image, TargetSpec("class", 3), [default_layer(loaded)])
        diff = np.abs(cap.prediction.area_percent() - untiled.area_percent())
        k = int(np.argmax(diff))
        edge = np.concatenate(
            [
                (cap.prediction.mask == untiled.mask)[-32:].ravel(),
                (cap.prediction.mask == untiled.mask)[:, -32:].ravel(),
            ]
        )
        print(f"| {side}² | {cap.tiles} | {diff.max():.3f} | {loaded.spec.classes[k]} | {edge.mean() * 100:.1f} % |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
