"""How long the page's PNG encoding of a large image's three panels takes: Pillow's per-row
filter choice (what the app used) against ``render.to_png`` (OpenCV, one "up" filter), both at
zlib level 1, on the panels of a 2000² view downscaled to the size sent. Same pixels (checked).

    .venv/bin/python scripts/measure_png.py
"""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cam_core.output import render
from cam_core.paths import REPO_ROOT


def _pillow(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def main() -> None:
    import cv2

    tile = np.asarray(Image.open(REPO_ROOT / "samples/images/test_12_002.png").convert("RGB"))
    big = np.pad(tile, ((0, 1744), (0, 1744), (0, 0)), mode="symmetric")[:2000, :2000]
    image = cv2.resize(big, (1024, 1024), interpolation=cv2.INTER_AREA)
    cam = cv2.GaussianBlur(image[..., 0].astype(np.float32) / 255, (0, 0), 15)
    cam = (cam - cam.min()) / (np.ptp(cam) or 1)
    panels = {
        "mask": np.where(image[..., :1] < 150, np.uint8([230, 159, 0]), np.uint8([0, 0, 0])).astype(np.uint8),
        "heatmap": render.heatmap(cam, "viridis"),
        "overlay": render.overlay(image, cam, 0.5, "viridis"),
    }
    total = {"pillow": 0.0, "to_png": 0.0}
    for name, a in panels.items():
        row = []
        for label, fn in (("pillow", _pillow), ("to_png", lambda x: render.to_png(x, compress_level=1))):
            data = fn(a)
            assert (np.asarray(Image.open(io.BytesIO(data)).convert("RGB")) == a).all(), "pixels differ"
            t0 = time.perf_counter()
            for _ in range(5):
                fn(a)
            ms = (time.perf_counter() - t0) / 5 * 1000
            total[label] += ms
            row.append(f"{label} {ms:.0f} ms, {len(data) // 1024} KB")
        print(f"{name:8s} " + " · ".join(row))
    print(
        f"three panels: pillow {total['pillow']:.0f} ms, to_png {total['to_png']:.0f} ms "
        f"({total['to_png'] / total['pillow']:.2f}×)"
    )


if __name__ == "__main__":
    main()
