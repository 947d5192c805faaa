"""The shared server's memory bounds, measured one per process (README "Hardening"; the tests run it).

Each case runs in a fresh process and prints one JSON line: the case, its peak RSS (MB), the
seconds it took and what the explorer answered.

    .venv/bin/python scripts/measure_hardening.py slide --side 16384   # single-level slide overview
    .venv/bin/python scripts/measure_hardening.py upload --side 8000   # a 64 MP upload on the built-in model
    .venv/bin/python scripts/measure_hardening.py models               # listing a huge config-only model folder
    .venv/bin/python scripts/measure_hardening.py all                  # each of them, in its own process
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measured(case: str, before: float, t0: float, answer: str, **extra: object) -> dict:
    """One case's line: its peak RSS before and after the work (MB), seconds and the answer."""
    return {
        "case": case,
        "peak_mb_before": round(before),
        "peak_mb": round(peak_mb()),
        "seconds": round(time.perf_counter() - t0, 2),
        "answer": answer,
        **extra,
    }


def slide(side: int) -> dict:
    """Open a single-level (no pyramid) tiled TIFF of side² and draw what the Slide page draws:
    the thumbnail, its tissue, the view around the tissue and the whole slide's view."""
    from cam_core.errors import InputError
    from cam_core.wsi import slides, synthslide

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "flat.tif"
        synthslide.write_slide(path, synthslide.sample_tiles(), side, (side // 3, side // 3, 1536, 1536), pyramid=False)
        before = peak_mb()
        t0 = time.perf_counter()
        try:
            with slides.Slide(path) as s:
                thumb = s.thumbnail()
                tissue = slides.tissue_mask(thumb)
                s.overview(slides.tissue_box(tissue, side / thumb.shape[1], s.info.size_wh))
                s.overview((0, 0, side, side))
                answer = f"overview {thumb.shape[1]}×{thumb.shape[0]}, tissue {100 * tissue.mean():.2f} %"
        except InputError as exc:
            answer = f"refused: {exc}"
        return _measured(f"single-level slide {side}² ({path.stat().st_size / 1e6:.1f} MB file)", before, t0, answer)


def upload(side: int) -> dict:
    """A side² upload explained on the built-in model with the app's defaults (ui.compute)."""
    import numpy as np

    from cam_core.data.images import LoadedImage
    from cam_core.engine import graph as engine_graph
    from cam_core.engine import methods
    from cam_core.engine import targets as tg
    from cam_core.errors import SegCamError
    from cam_core.model import layers
    from ui import compute

    loaded = compute.get_model(compute.models.default_model_name())
    array = np.full((side, side, 3), 200, np.uint8)
    image = compute.ImageChoice("upload.png", "sha-upload", LoadedImage(array))
    layer = layers.default_layer(loaded)
    info = methods.METHODS[methods.DEFAULT_METHOD.lower()]
    ch = compute.Choices(
        image, loaded, None, layer, info, tg.TargetSpec("predicted", None), loaded.spec.decision_rule, False
    )
    before = peak_mb()
    t0 = time.perf_counter()
    try:
        compute.get_capture(ch)
        answer = "explained"
    except SegCamError as exc:
        answer = f"refused: {exc}"
    return _measured(f"{side}² upload, {layer}", before, t0, answer, model_passes=dict(engine_graph.passes(loaded)))


def models_list() -> dict:
    """The model list with a config.json-only folder describing a very large Unet decoder."""
    import segmentation_models_pytorch  # noqa: F401  (imported before the clock: every list needs it)

    from cam_core.model import models

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "huge_decoder"
        folder.mkdir()
        config = {
            "_model_class": "Unet",
            "encoder_name": "resnet50",
            "classes": 5,
            "decoder_channels": [2048, 1024, 512, 256, 128],
        }
        (folder / "config.json").write_text(json.dumps(config))
        before = peak_mb()
        t0 = time.perf_counter()
        entries = {e.name: e for e in models.discover(tmp)}
        case = "model list with a config-only Unet(resnet50, decoder 2048…128) folder"
        return _measured(case, before, t0, entries["huge_decoder"].error or "listed")


CASES = {
    "slide": lambda a: slide(a.side or 16384),
    "upload": lambda a: upload(a.side or 8000),
    "models": lambda a: models_list(),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("case", choices=[*CASES, "all"])
    ap.add_argument("--side", type=int, default=None, help="slide or upload side in pixels")
    args = ap.parse_args(argv)
    if args.case == "all":
        for case in CASES:
            subprocess.run([sys.executable, __file__, case], check=True)
        return 0
    print(json.dumps(CASES[args.case](args), ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
