"""Input quality notes on CoNSeP (#22): fit the training stain range, then how often each note fires.

    .venv/bin/python scripts/measure_quality.py [--data ../shared/data/consep] [--write]

1. The range of each stain statistic (``cam_core.data.quality.STAIN_STATS``) over the train
   split, its 0.5th–99.5th percentiles; ``--write`` stores them as ``stain_range.json`` beside
   both built-in models' weights (they were trained on these tiles).
2. On every test tile: the rate of each note on the tile as it is (false alarms), re-stained
   (Tellez hed-light, hed-strong), with the teaching model's ink dot, with a pen stroke, and with
   a dark border strip. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cam_core.data import quality, stain  # noqa: E402
from cam_core.model import models  # noqa: E402
from cam_core.trust import shortcut  # noqa: E402


def _tiles(data: Path, split: str) -> list[np.ndarray]:
    names = (data / f"{split}.txt").read_text().split()
    return [np.asarray(Image.open(data / "images" / f"{n}.png").convert("RGB")) for n in names]


def _pen(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = image.copy()
    pts = rng.integers(20, 236, size=(3, 2)).reshape(-1, 1, 2).astype(np.int32)
    cv2.polylines(out, [pts], False, (30, 70, 170), thickness=5)  # a blue felt-tip stroke
    return out


def _border(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = image.copy()
    depth = int(rng.integers(10, 30))
    side = int(rng.integers(4))
    strip = (slice(0, depth), slice(None)) if side == 0 else (slice(-depth, None), slice(None))
    if side >= 2:
        strip = (slice(None), slice(0, depth)) if side == 2 else (slice(None), slice(-depth, None))
    out[strip] = rng.integers(5, 30)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(REPO.parent / "shared/data/consep"))
    ap.add_argument("--write", action="store_true", help="write stain_range.json beside the built-in models")
    args = ap.parse_args()
    data = Path(args.data)
    train = [st for st in (quality.stain_stats(t) for t in _tiles(data, "train")) if st is not None]
    ranges = {
        name: (
            round(float(np.percentile([st[name] for st in train], 0.5)), 3),
            round(float(np.percentile([st[name] for st in train], 99.5)), 3),
        )
        for name in quality.STAIN_STATS
    }
    expected = quality.StainRange(
        ranges=ranges,
        tiles=len(train),
        source="0.5th-99.5th percentiles over the CoNSeP train tiles (scripts/measure_quality.py)",
    )
    print(f"training ranges over {len(train)} tiles: {ranges}")
    if args.write:
        for info in models.builtin_registry().values():
            (Path(info["path"]) / quality.STAIN_RANGE_FILE).write_text(expected.model_dump_json(indent=1) + "\n")
    rng = np.random.default_rng(0)
    conditions = {
        "as it is": lambda t: t,
        "re-stained, hed-light": lambda t: stain.restain(t, "hed-light", rng),
        "re-stained, hed-strong": lambda t: stain.restain(t, "hed-strong", rng),
        "ink dot (teaching marker)": lambda t: shortcut.plant(t, shortcut.place(None, rng))[0],
        "pen stroke (blue)": lambda t: _pen(t, rng),
        "dark border strip": lambda t: _border(t, rng),
    }
    test = _tiles(data, "test")
    print(f"\n| test tiles ({len(test)}) | stain note | ink note | border note |\n|---|---|---|---|")
    rows = {}
    for name, make in conditions.items():
        hits = np.zeros(3)
        for t in test:
            img = make(t)
            hits += [
                quality.stain_note(img, expected) is not None,
                quality.ink_note(img) is not None,
                quality.border_note(img) is not None,
            ]
        rate = hits / len(test)
        rows[name] = rate.round(3).tolist()
        print(f"| {name} | {100 * rate[0]:.1f} % | {100 * rate[1]:.1f} % | {100 * rate[2]:.1f} % |")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
