"""``python -m cam_core bench``: the engine against plain grad-cam, in one run, same model and image.

"Plain" is grad-cam's segmentation tutorial: a forward for the mask, then
``with Method(model, [layer]) as cam: cam(x, targets)`` for every method and layer. Each row is
the median of ``--repeats`` runs; the ratio is plain / engine.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

from . import engine, layers, methods, models, render
from . import targets as tg
from .images import load_image

REPO = Path(__file__).resolve().parents[1]


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="time the engine against plain grad-cam")
    p.add_argument("--model", default=None)
    p.add_argument("--models-dir", default=None)
    p.add_argument("--image", default=str(REPO / "samples/images/test_12_002.png"))
    p.add_argument("--size", type=int, default=512, help="the image is tiled/resized to SIZE×SIZE")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", action="store_true")
    p.add_argument("--baseline-encoder", default="resnet34", help="also time a Unet with this encoder ('' to skip)")
    p.add_argument(
        "--scorecam", action="store_true", help="only: ScoreCAM-TopK against exact ScoreCAM on the sample tiles"
    )
    p.add_argument("--layer", default=None, help="layer for --scorecam (default: the deepest encoder stage)")
    p.add_argument("--large", action="store_true", help="only: tiled explain at 2048² and 4096² with peak RSS")
    p.add_argument(
        "--latency", action="store_true", help="only: the model's forward+backward against the baseline Unet"
    )


def _median(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _tile_to(image: np.ndarray, size: int) -> np.ndarray:
    """Mirror-tile a sample up to size×size (keeps real tissue statistics and nucleus size)."""
    h, w = image.shape[:2]
    padded = np.pad(image, ((0, max(0, size - h)), (0, max(0, size - w)), (0, 0)), mode="symmetric")
    return np.ascontiguousarray(padded[:size, :size])


def fwd_bwd_seconds(model: torch.nn.Module, size: int, device: torch.device, repeats: int) -> tuple[float, float]:
    """Median (forward+backward, backward alone) of a plain model at size×size, no hooks."""
    x = torch.randn(1, 3, size, size, device=device)
    backward: list[float] = []

    def step():
        model.zero_grad(set_to_none=True)
        out = model(x)
        out = out[0] if isinstance(out, (tuple, list)) else out
        t0 = time.perf_counter()
        out[:, 1].sum().backward()
        backward.append(time.perf_counter() - t0)

    model.eval()
    step()  # warm-up
    backward.clear()
    t = _median(step, repeats)
    model.zero_grad(set_to_none=True)
    return t, statistics.median(backward)


def run_scorecam(args: argparse.Namespace) -> int:
    """Rank agreement and speed of ScoreCAM-TopK against exact ScoreCAM, tile by tile."""
    from scipy.stats import spearmanr

    loaded = models.load(args.model, args.models_dir)
    layer = args.layer or [n for n in layers.curated_layers(loaded) if n.startswith("encoder")][-1]
    channels = layers.spatial_layers(loaded)[layer].channels
    rows = []
    for path in sorted((REPO / "samples/images").glob("*.png")):
        image = load_image(path).array
        target = tg.TargetSpec("class", None)
        t0 = time.perf_counter()
        exact = engine.run_method(loaded, image, target, methods.METHODS["scorecam"], layer)
        t1 = time.perf_counter()
        fast = engine.run_method(loaded, image, target, methods.METHODS["scorecam-topk"], layer)
        t2 = time.perf_counter()
        rho = float(spearmanr(exact.cam.ravel(), fast.cam.ravel()).statistic)
        rows.append(
            {
                "tile": path.stem,
                "spearman": round(rho, 4),
                "exact_s": round(t1 - t0, 2),
                "topk_s": round(t2 - t1, 2),
                "speedup": round((t1 - t0) / (t2 - t1), 1),
            }
        )
    summary = {
        "model": loaded.name,
        "layer": layer,
        "channels": channels,
        "k": engine.FAST_SCORECAM_K,
        "device": str(loaded.device),
        "median_spearman": float(np.median([r["spearman"] for r in rows])),
        "min_spearman": min(r["spearman"] for r in rows),
        "median_speedup": float(np.median([r["speedup"] for r in rows])),
        "rows": rows,
    }
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    print(
        f"ScoreCAM-TopK (k={summary['k']}) vs exact ScoreCAM on {layer} ({channels} channels), {loaded.name}, {summary['device']}"
    )
    print("| tile | Spearman ρ | exact | top-k | speed-up |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['tile']} | {r['spearman']:.3f} | {r['exact_s']:.1f} s | {r['topk_s']:.1f} s | {r['speedup']}× |")
    print(
        f"median ρ {summary['median_spearman']:.3f} (min {summary['min_spearman']:.3f}), median speed-up {summary['median_speedup']:.1f}×"
    )
    return 0


def run_large(args: argparse.Namespace) -> int:
    """Tiled explain of 2048² and 4096² mirror-tiled tissue, each in a fresh process for a clean peak RSS."""
    import subprocess
    import sys
    import tempfile

    results = []
    for size in (2048, 4096):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"tissue_{size}.png"
            Image.fromarray(_tile_to(load_image(args.image).array, size)).save(path)
            code = (
                "import resource, sys, time; from cam_core import cli; t = time.perf_counter(); "
                f"rc = cli.main(['explain', {str(path)!r}, '--out', {str(Path(tmp) / 'out')!r}, '--layer', 'default', "
                "'--method', 'GradCAM'] + sys.argv[1:]); "
                "print('RESULT', rc, round(time.perf_counter() - t, 1), "
                "round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))"
            )
            extra = ["--model", args.model] if args.model else []
            proc = subprocess.run(
                [sys.executable, "-c", code, *extra], capture_output=True, text=True, cwd=REPO, check=False
            )
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")), None)
            if line is None:
                raise RuntimeError(proc.stderr[-2000:])
            _, rc, seconds, rss = line.split()
            results.append({"size": f"{size}²", "exit": int(rc), "seconds": float(seconds), "peak_rss_mb": int(rss)})
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        print("| image | tiled explain (GradCAM) | peak RSS |\n|---|---|---|")
        for r in results:
            print(f"| {r['size']} | {r['seconds']:.1f} s | {r['peak_rss_mb']} MB |")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.scorecam:
        return run_scorecam(args)
    if args.large:
        return run_large(args)
    loaded = models.load(args.model, args.models_dir)
    device = loaded.device
    image = _tile_to(load_image(args.image).array, args.size)
    model = loaded.model
    curated = layers.curated_layers(loaded)
    default_layer = layers.default_layer(loaded)
    other_layer = next(n for n in reversed(curated) if n != default_layer)
    fast = [m for m in methods.METHODS.values() if m.from_cache and not m.slow]
    grid_layers = layers.compare_layers(loaded)
    x, _ = models.pad_to_multiple(models.preprocess(image, loaded.spec), loaded.multiple)
    x = x.to(device)
    R = args.repeats
    rows: list[dict] = []

    def add(name: str, plain: float | None, ours: float, note: str = "") -> None:
        rows.append(
            {
                "row": name,
                "plain_s": None if plain is None else round(plain, 4),
                "engine_s": round(ours, 4),
                "ratio": None if plain is None else round(plain / ours, 1),
                "note": note,
            }
        )

    fb, bwd = fwd_bwd_seconds(model, args.size, device, R)
    baseline = None
    if args.baseline_encoder:
        import segmentation_models_pytorch as smp

        ref = smp.Unet(args.baseline_encoder, encoder_weights=None, classes=loaded.num_classes).to(device)
        baseline = fwd_bwd_seconds(ref, args.size, device, R)[0]
        del ref
    if args.latency:
        print(f"{loaded.name} forward+backward at {args.size}²: {fb:.3f} s (median of {R}) on {device}")
        if baseline:
            print(
                f"Unet-{args.baseline_encoder} (random weights) forward+backward: {baseline:.3f} s; ratio {fb / baseline:.2f}"
            )
        return 0

    pred = engine.predict(loaded, image)
    cls = tg.resolve_auto(tg.TargetSpec("predicted", None), pred.mask, loaded.num_classes).class_index
    cls2 = next((c for c in np.argsort(-pred.area_percent()) if c not in (0, cls)), 0)
    region = np.zeros(x.shape[-2:], np.float32)
    region[: image.shape[0], : image.shape[1]] = pred.mask == cls
    region2 = np.zeros_like(region)
    region2[: image.shape[0], : image.shape[1]] = pred.mask == cls2
    modules = dict(model.named_modules())

    def plain_cam(info, layer, reg, c):
        with info.cls(model, [modules[layer]]) as cam:
            return cam(input_tensor=x, targets=[SemanticSegmentationTarget(c, reg)])

    def plain_first():
        with torch.no_grad():
            model(x)
        return plain_cam(methods.METHODS["gradcam"], default_layer, region, cls)

    target = tg.TargetSpec("predicted", cls)
    holder: dict = {}

    def engine_first():
        holder["cap"] = engine.capture(loaded, image, target, curated, keep_graph=True)
        return engine.cam_from_capture(holder["cap"], methods.METHODS["gradcam"], default_layer)

    add(
        "first mask + CAM",
        _median(plain_first, R),
        _median(engine_first, R),
        f"engine hooks all {len(curated)} curated layers; model fwd+bwd alone {fb:.3f} s",
    )
    cap = holder["cap"]
    add(
        "switch method",
        _median(lambda: plain_cam(methods.METHODS["hirescam"], default_layer, region, cls), R),
        _median(lambda: engine.cam_from_capture(cap, methods.METHODS["hirescam"], default_layer), R),
    )
    add(
        "switch layer",
        _median(lambda: plain_cam(methods.METHODS["gradcam"], other_layer, region, cls), R),
        _median(lambda: engine.cam_from_capture(cap, methods.METHODS["gradcam"], other_layer), R),
    )

    def engine_switch_class():
        # Recapture from the newest capture: the kept graph follows it (an older one would
        # fall back to a full forward + backward, which is not what a class switch costs).
        latest = holder.get("cap2", cap)
        holder["cap2"] = engine.recapture(loaded, latest, tg.TargetSpec("class", cls2), image)
        assert holder["cap2"].seconds["forward"] == 0.0, "recapture fell back to a full pass"
        return engine.cam_from_capture(holder["cap2"], methods.METHODS["gradcam"], default_layer)

    ones = np.zeros_like(region)
    ones[: image.shape[0], : image.shape[1]] = 1
    add(
        "switch class",
        _median(lambda: plain_cam(methods.METHODS["gradcam"], default_layer, ones, cls2), R),
        _median(engine_switch_class, R),
        f"engine: one backward through the kept graph, no forward (the model's own backward: {bwd:.3f} s)",
    )

    # Plain grad-cam's full SVD needs (H·W)² floats: its eigen methods cannot run on large layers
    # (32 GiB at 256²), so both sides time the combinations plain grad-cam can do.
    spatial = layers.spatial_layers(loaded)
    pixels = {n: (x.shape[-1] // spatial[n].stride) * (x.shape[-2] // spatial[n].stride) for n in grid_layers}
    combos = [(n, m) for n in grid_layers for m in fast if not (m.family == "eigen" and pixels[n] > 64 * 64)]
    skipped = len(grid_layers) * len(fast) - len(combos)

    def plain_grid():
        for layer, info in combos:
            plain_cam(info, layer, region, cls)

    def engine_grid():
        c = engine.capture(loaded, image, target, grid_layers)
        for layer, info in combos:
            engine.cam_from_capture(c, info, layer)

    note = f"{skipped} eigen cells on large layers left out: plain grad-cam cannot allocate them" if skipped else ""
    grid_repeats = max(1, R - 2)
    add(
        f"Compare grid ({len(combos)} cells)",
        _median(plain_grid, grid_repeats),
        _median(engine_grid, grid_repeats),
        note,
    )

    cam = engine.cam_from_capture(cap, methods.METHODS["gradcam"], default_layer).cam
    for size in (512, 2048):
        img = _tile_to(image, size)
        c = np.asarray(Image.fromarray(cam).resize((size, size), Image.BILINEAR))

        def render_once(img=img, c=c):
            level = render.threshold_level(c, "otsu")
            render.overlay(img, c, 0.5, "viridis", level)

        add(f"render (opacity/threshold/colormap) {size}²", None, _median(render_once, max(R, 5)))

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    info = {
        "model": loaded.name,
        "image": f"{Path(args.image).name} mirror-tiled to {args.size}²",
        "device": str(device) + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else ""),
        "cpu_threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "model_fwd_bwd_s": round(fb, 4),
        "model_backward_s": round(bwd, 4),
        "baseline": {f"Unet-{args.baseline_encoder}_fwd_bwd_s": round(baseline, 4)} if baseline else None,
        "repeats": R,
        "peak_rss_mb": round(peak_mb, 1),
        "versions": engine.versions(),
        "rows": rows,
    }
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    print(f"model {loaded.name} on {info['device']}, {info['image']}, median of {R}; peak RSS {peak_mb:.0f} MB")
    print(
        f"model forward+backward: {fb:.3f} s"
        + (f"; Unet-{args.baseline_encoder}: {baseline:.3f} s" if baseline else "")
    )
    print(f"| {'row':48s} | {'plain grad-cam':>14s} | {'engine':>9s} | {'ratio':>6s} |")
    print(f"|{'-' * 50}|{'-' * 16}|{'-' * 11}|{'-' * 8}|")
    for r in rows:
        plain = "—" if r["plain_s"] is None else f"{r['plain_s']:.4f} s"
        ratio = "—" if r["ratio"] is None else f"{r['ratio']}×"
        print(f"| {r['row']:48s} | {plain:>14s} | {r['engine_s']:.4f} s | {ratio:>6s} | {r['note']}")
    return 0
