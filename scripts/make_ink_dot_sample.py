"""Write the teaching sample: a shipped sample tile with the shortcut's ink dot planted on it.

The dot is the one the teaching model learned (``cam_core.shortcut``), placed on background by
the same rule as in training, with a fixed seed; the truth mask is the original tile's (the dot
covers no nucleus). The app lists the result under the sample tiles.

    .venv/bin/python scripts/make_ink_dot_sample.py [--tile test_13_014] [--seed 2]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tile", default="test_13_014", help="a sample tile without epithelium")
    ap.add_argument("--seed", type=int, default=2)  # the seed whose dot covers the fewest nuclei
    args = ap.parse_args()
    from cam_core.trust.shortcut import place, plant

    samples, teaching = REPO / "samples", REPO / "samples" / "teaching"
    image = np.asarray(Image.open(samples / "images" / f"{args.tile}.png").convert("RGB"))
    mask = np.asarray(Image.open(samples / "masks" / f"{args.tile}.png"))
    centre = place(mask, np.random.default_rng(args.seed))
    marked, dot = plant(image, centre)
    name = f"ink_dot_{args.tile}"
    Image.fromarray(marked).save(teaching / "images" / f"{name}.png")
    shutil.copyfile(samples / "masks" / f"{args.tile}.png", teaching / "masks" / f"{name}.png")
    print(
        f"wrote {name}: dot at (x={centre[1]}, y={centre[0]}), {int(dot.sum())} px, covering {int((dot & (mask > 0)).sum())} nucleus px"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
