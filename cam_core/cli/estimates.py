"""``python -m cam_core bench --estimates``: estimate ÷ actual for every slow action, as a session meets them.

A fresh process plays a session on the built-in model: the first capture of a tile (it times the
model's forward), then each slow action in the order a user meets them, first with the prior
(nothing of its kind has run yet) and then, for a second one of the same action, with the rate
its first run measured. Every estimate comes from :mod:`cam_core.cost` through the same ``work``
functions the app uses; each actual is the action's wall time in this process.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from cam_core.cost import COSTS, Work


def _row(name: str, model: str, work: Work, run: Callable[[], Any]) -> dict[str, Any]:
    prior = not COSTS.measured(model, work.action)
    estimate = work.seconds(model)
    t0 = time.perf_counter()
    run()
    actual = time.perf_counter() - t0
    work.done(model, actual)
    row = {"action": name, "estimate_s": round(estimate, 2), "actual_s": round(actual, 2)}
    row["ratio"] = round(estimate / actual, 2)
    row["from"] = "prior" if prior else "its measured runs"
    print(f"{name:<58} {estimate:7.1f} s {actual:7.1f} s  {row['ratio']:5.2f}  ({row['from']})", flush=True)
    return row


def _large(tile: np.ndarray, side: int) -> np.ndarray:
    return np.ascontiguousarray(np.pad(tile, ((0, side), (0, side), (0, 0)), mode="symmetric")[:side, :side])


def run(args: argparse.Namespace) -> int:
    """The table (``--json``: also as JSON)."""
    from cam_core import engine, trust
    from cam_core.data import samples
    from cam_core.data.images import load_image
    from cam_core.engine import targets as tg
    from cam_core.engine import tiling
    from cam_core.engine.methods import fast_methods, get_method
    from cam_core.model import layers, models
    from cam_core.runtime import SERVER_THREADS, configure_threads

    configure_threads(SERVER_THREADS)  # as the app's server runs
    loaded = models.load(args.model, args.models_dir)
    name = loaded.name
    image = load_image(samples.file("test_12_002")).array
    pixels = models.padded_pixels(image.shape, loaded.multiple)
    target = tg.TargetSpec("predicted", None)
    every = layers.curated_layers(loaded)
    import pytorch_grad_cam  # noqa: F401  (the server's warm-up imports it, and makes a cold first forward ...)

    engine.capture(loaded, image, target, every)
    cap = engine.capture(loaded, image, target, every)  # ... and a session's first pass: they time the forward
    target = target.with_class(cap.target.class_index)
    rows: list[dict[str, Any]] = []
    print(f"{'action':<58} {'estimate':>9} {'actual':>9}  ratio", flush=True)

    def method(info_name: str, layer: str, cls: int | None = None) -> None:
        info = get_method(info_name)
        spec = target if cls is None else target.with_class(cls)
        rows.append(
            _row(
                f"{info_name} @ {layer}" + ("" if cls is None else f", class {loaded.spec.classes[cls]}"),
                name,
                engine.method_work(loaded, image.shape, info, layer),
                lambda: engine.run_method(loaded, image, spec, info, layer, prediction=cap.prediction),
            )
        )

    refs: dict[str, Any] = {}

    def check(cells: list[tuple[str, str]], label: str) -> None:
        infos = [get_method(m) for m, _ in cells]
        layer_list = list(dict.fromkeys(la for _, la in cells))
        work = trust.work(loaded.model, layer_list, len(cells), refs, True, pixels)
        cams = {(m, la): engine.cam_from_capture(cap, get_method(m), la).cam for m, la in cells}

        def go() -> None:
            trust.trust(loaded, image, target, layer_list, infos, cap=cap, cams=cams, cascade=True, references=refs)

        rows.append(_row(label, name, work, go))

    method("ScoreCAM", "decoder.blocks.2")
    method("ScoreCAM", "decoder.blocks.2", cls=2)
    method("AblationCAM", "decoder.blocks.3")
    check([("GradCAM", "decoder.blocks.2")], "trust check, first map (GradCAM @ decoder.blocks.2)")
    check([("HiResCAM", "decoder.blocks.2")], "trust check, next method at that layer (HiResCAM)")
    cells = [(m, "decoder.blocks.3") for m in ("GradCAM", "HiResCAM", "XGradCAM", "LayerCAM")]
    check(cells, "Compare: check 4 cells at another layer (decoder.blocks.3)")
    grid = [(m.name, la) for la in layers.compare_layers(loaded) for m in fast_methods()]  # the page's defaults
    check(grid, f"Compare: check its default grid ({len(grid)} cells)")
    for side in (2000, 1500):
        big = _large(image, side)

        def tiled(big: np.ndarray = big) -> None:
            tiling.capture_tiled(loaded, big, tg.TargetSpec("predicted", None), [every[-1]])

        rows.append(
            _row(f"tiled capture of a {side}² upload", name, tiling.work(big.shape[:2], loaded.multiple), tiled)
        )
    ratios = [r["ratio"] for r in rows]
    print(f"estimate ÷ actual: {min(ratios):.2f}–{max(ratios):.2f} over {len(rows)} actions", flush=True)
    if args.json:
        print(json.dumps(rows, indent=1))
    return 0 if all(0.5 <= r <= 2 for r in ratios) else 1
