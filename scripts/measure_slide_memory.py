"""Memory of the Slide page's path on a generated 20000² slide: open, overview, then regions read
at the model's resolution and explained (capture with the kept graph + GradCAM), as the app does.

Prints the process's peak RSS after each stage, against the 1.2 GB a decoded level 0 would take.

    .venv/bin/python scripts/measure_slide_memory.py [--regions 30]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cam_core import engine  # noqa: E402
from cam_core.engine import targets as tg  # noqa: E402
from cam_core.engine.methods import METHODS  # noqa: E402
from cam_core.model import layers, models  # noqa: E402
from cam_core.wsi import slides, synthslide  # noqa: E402


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--regions", type=int, default=30)
    ap.add_argument("--side", type=int, default=1024, help="region side at the model's resolution")
    args = ap.parse_args()
    loaded = models.load(None)
    layer = layers.default_layer(loaded)
    print(f"model loaded: peak {peak_mb():.0f} MB")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "slide.tif"
        synthslide.write_slide(path, synthslide.sample_tiles(), 20_000, (7_000, 7_000, 6_000, 6_000))
        print(f"slide written: peak {peak_mb():.0f} MB (level 0 decoded would be {20_000**2 * 3 / 1e9:.1f} GB)")
        rng = np.random.default_rng(0)
        with slides.Slide(path) as slide:
            thumb = slide.thumbnail()
            tissue = slides.tissue_mask(thumb)
            slide.overview(slides.tissue_box(tissue, 20_000 / thumb.shape[1], slide.info.size_wh))
            print(f"opened, thumbnail and overview: peak {peak_mb():.0f} MB")
            for i in range(args.regions):
                x, y = (int(v) for v in rng.integers(7_000, 13_000 - args.side, size=2))
                region = slide.read_region(x, y, args.side, args.side, loaded.spec.mpp)
                cap = engine.capture(loaded, region, tg.TargetSpec("predicted", None), [layer], keep_graph=True)
                engine.cam_from_capture(cap, METHODS["gradcam"], layer)
                if i in (0, args.regions - 1):
                    print(f"{i + 1} region(s) of {args.side}² explained: peak {peak_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
