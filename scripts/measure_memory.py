"""Server memory under 50 different uploads in a row (the README's memory figure).

Drives the real app script through Streamlit's AppTest in this process (the same caches a
server holds) and prints the process's RSS every 10 uploads. Each upload is a different
512×512 tile (mirror-tiled CoNSeP sample, shifted), so nothing is served from a cache.

    .venv/bin/python scripts/measure_memory.py [--uploads 50]
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--uploads", type=int, default=50)
    ap.add_argument("--size", type=int, default=512)
    args = ap.parse_args()
    from streamlit.testing.v1 import AppTest

    from ui import compute

    samples = [np.asarray(Image.open(p).convert("RGB")) for p in sorted((REPO / "samples/images").glob("*.png"))]
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=300)
    at.run()
    at.radio(key="w_sel_source").set_value("Upload")
    at.run()
    start = rss_mb()
    print(f"after start-up: RSS {start:.0f} MB")
    peak = start
    for i in range(args.uploads):
        base = samples[i % len(samples)]
        tile = np.pad(base, ((0, args.size), (0, args.size), (0, 0)), mode="symmetric")
        shift = (i * 7) % 64
        tile = np.ascontiguousarray(tile[shift : shift + args.size, shift : shift + args.size])
        buf = io.BytesIO()
        Image.fromarray(tile).save(buf, format="PNG")
        at.file_uploader(key="upload").set_value((f"upload_{i}.png", buf.getvalue(), "image/png"))
        at.run()
        if at.exception:
            print(at.exception)
            return 1
        peak = max(peak, rss_mb())
        if (i + 1) % 10 == 0:
            cache = compute.CAPTURES
            print(
                f"after {i + 1:3d} uploads: RSS {rss_mb():.0f} MB (peak {peak:.0f} MB); capture cache "
                f"{len(cache)} entries, {cache.total_bytes / 2**20:.0f} MB"
            )
    print(
        f"RESULT uploads={args.uploads} size={args.size} start_mb={start:.0f} peak_mb={peak:.0f} end_mb={rss_mb():.0f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
