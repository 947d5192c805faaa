"""What the optional model kinds cost (#24): each extra package's installed size (its files and
those of the dependencies it alone brings) and the seconds its import adds to torch + smp's, in
fresh interpreters (median of three).

    .venv/bin/python scripts/measure_extras.py
"""

from __future__ import annotations

import importlib.metadata as md
import json
import statistics
import subprocess
import sys

BASE = "import torch, segmentation_models_pytorch"
EXTRAS = {  # distribution: (what a folder of that kind imports, the dependencies only it brings here)
    "transformers": (
        "from transformers import AutoModelForSemanticSegmentation, SegformerConfig",
        ["tokenizers", "regex", "typer", "rich", "markdown-it-py", "mdurl", "shellingham", "annotated-doc"],
    ),
    "monai": ("from monai.networks.nets import UNet", []),
}


def _mb(dist: str) -> float:
    files = md.distribution(dist).files or []
    return sum((f.size or 0) for f in files) / 1e6


def _seconds(code: str) -> float:
    runs = []
    for _ in range(3):
        out = subprocess.run(
            [sys.executable, "-c", f"import time; t = time.perf_counter(); {code}; print(time.perf_counter() - t)"],
            capture_output=True,
            text=True,
            check=True,
        )
        runs.append(float(out.stdout.strip().splitlines()[-1]))
    return statistics.median(runs)


def main() -> None:
    base = _seconds(BASE)
    rows = {"torch + smp import, s": round(base, 2)}
    for dist, (code, own_deps) in EXTRAS.items():
        size = _mb(dist) + sum(_mb(d) for d in own_deps)
        rows[f"{dist} {md.version(dist)}: MB installed"] = round(size, 1)
        rows[f"{dist}: import adds, s"] = round(_seconds(f"{BASE}; {code}") - base, 2)
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
