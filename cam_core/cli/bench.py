"""``python -m cam_core bench``: the engine against plain grad-cam, in one run, same model and image.

"Plain" is grad-cam's segmentation tutorial: a forward for the mask, then
``with Method(model, [layer]) as cam: cam(x, targets)`` for every method and layer. Each row is
the median of ``--repeats`` runs; the ratio is plain / engine.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cam_core.data.images import load_image
from cam_core.engine import targets as tg

if TYPE_CHECKING:
    import torch

    from cam_core.model.models import LoadedModel

from cam_core.paths import REPO_ROOT as REPO


def _median(fn: Callable[[], Any], repeats: int) -> float:
    import torch

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
    import torch

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

    from cam_core import engine
    from cam_core.engine import methods
    from cam_core.model import layers, models

    loaded = models.load(args.model, args.models_dir)
    layer = args.layer or [n for n in layers.curated_layers(loaded) if n.startswith("encoder")][-1]
    channels = layers.spatial_layers(loaded)[layer].channels
    rows: list[dict[str, Any]] = []
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
        "k": methods.METHODS["scorecam-topk"].channel_cap,
        "device": str(loaded.device),
        "median_spearman": float(np.median([r["spearman"] for r in rows])),
        "min_spearman": min(float(r["spearman"]) for r in rows),
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

    from PIL import Image

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


@dataclass
class _Setup:
    """What every row of the main table shares: one model, one image, its classes and regions."""

    loaded: LoadedModel
    image: np.ndarray
    x: torch.Tensor
    cls: int
    cls2: int
    region: np.ndarray  # predicted region of cls, padded
    ones: np.ndarray  # whole image, padded
    curated: list[str]
    default_layer: str
    other_layer: str
    grid_layers: list[str]
    repeats: int
    held: dict[str, Any] = field(default_factory=dict)

    def plain_cam(self, name: str, layer: str, region: np.ndarray, cls: int) -> np.ndarray:
        """grad-cam's segmentation tutorial: a method object per call, its own forward + backward."""
        from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

        from cam_core.engine.methods import METHODS

        modules = dict(self.loaded.model.named_modules())
        with METHODS[name.lower()].grad_cam_cls()(self.loaded.model, [modules[layer]]) as cam:
            return cam(input_tensor=self.x, targets=[SemanticSegmentationTarget(cls, region)])


def _setup(args: argparse.Namespace) -> _Setup:
    from cam_core import engine
    from cam_core.model import layers, models

    loaded = models.load(args.model, args.models_dir)
    image = _tile_to(load_image(args.image).array, args.size)
    x, _ = models.pad_to_multiple(models.preprocess(image, loaded.spec), loaded.multiple)
    curated = layers.curated_layers(loaded)
    default_layer = layers.default_layer(loaded)
    pred = engine.predict(loaded, image)
    cls = tg.auto_class(pred.mask, loaded.num_classes) or 1
    cls2 = next((int(c) for c in np.argsort(-pred.area_percent()) if c not in (0, cls)), 0)
    region = np.zeros(x.shape[-2:], np.float32)
    region[: image.shape[0], : image.shape[1]] = pred.mask == cls
    ones = np.zeros_like(region)
    ones[: image.shape[0], : image.shape[1]] = 1
    return _Setup(
        loaded=loaded,
        image=image,
        x=x.to(loaded.device),
        cls=cls,
        cls2=cls2,
        region=region,
        ones=ones,
        curated=curated,
        default_layer=default_layer,
        other_layer=next(n for n in reversed(curated) if n != default_layer),
        grid_layers=layers.compare_layers(loaded),
        repeats=args.repeats,
    )


def row_first(s: _Setup, fb: float) -> dict[str, Any]:
    """Mask + first CAM: plain = a forward for the mask then one grad-cam call; engine = one capture."""
    import torch

    from cam_core import engine
    from cam_core.engine.methods import METHODS

    def plain() -> None:
        with torch.no_grad():
            s.loaded.model(s.x)
        s.plain_cam("GradCAM", s.default_layer, s.region, s.cls)

    def ours() -> None:
        s.held["cap"] = engine.capture(s.loaded, s.image, tg.TargetSpec("predicted", s.cls), s.curated, keep_graph=True)
        engine.cam_from_capture(s.held["cap"], METHODS["gradcam"], s.default_layer)

    note = f"engine hooks all {len(s.curated)} curated layers; model fwd+bwd alone {fb:.3f} s"
    return _row("first mask + CAM", _median(plain, s.repeats), _median(ours, s.repeats), note)


def row_switch_method(s: _Setup) -> dict[str, Any]:
    from cam_core import engine
    from cam_core.engine.methods import METHODS

    cap = s.held["cap"]
    return _row(
        "switch method",
        _median(lambda: s.plain_cam("HiResCAM", s.default_layer, s.region, s.cls), s.repeats),
        _median(lambda: engine.cam_from_capture(cap, METHODS["hirescam"], s.default_layer), s.repeats),
    )


def row_switch_layer(s: _Setup) -> dict[str, Any]:
    from cam_core import engine
    from cam_core.engine.methods import METHODS

    cap = s.held["cap"]
    return _row(
        "switch layer",
        _median(lambda: s.plain_cam("GradCAM", s.other_layer, s.region, s.cls), s.repeats),
        _median(lambda: engine.cam_from_capture(cap, METHODS["gradcam"], s.other_layer), s.repeats),
    )


def row_switch_class(s: _Setup, bwd: float) -> dict[str, Any]:
    from cam_core import engine
    from cam_core.engine.methods import METHODS

    def ours() -> None:
        # From the newest capture: the kept graph follows it (an older one would fall back to a
        # full forward + backward, which is not what a class switch costs).
        latest = s.held.get("cap2", s.held["cap"])
        s.held["cap2"] = engine.recapture(s.loaded, latest, tg.TargetSpec("class", s.cls2), s.image)
        assert s.held["cap2"].seconds["forward"] == 0.0, "recapture fell back to a full pass"
        engine.cam_from_capture(s.held["cap2"], METHODS["gradcam"], s.default_layer)

    note = f"engine: one backward through the kept graph, no forward (the model's own backward: {bwd:.3f} s)"
    return _row(
        "switch class",
        _median(lambda: s.plain_cam("GradCAM", s.default_layer, s.ones, s.cls2), s.repeats),
        _median(ours, s.repeats),
        note,
    )


def row_grid(s: _Setup) -> dict[str, Any]:
    """The Compare page's default grid: every fast method × the compare layers."""
    from cam_core import engine
    from cam_core.engine.methods import fast_methods
    from cam_core.model import layers

    fast = fast_methods()
    # Plain grad-cam's full SVD needs (H·W)² floats: its eigen methods cannot run on large layers
    # (32 GiB at 256²), so both sides time the combinations plain grad-cam can do.
    spatial = layers.spatial_layers(s.loaded)
    px = {n: (s.x.shape[-1] // spatial[n].stride) * (s.x.shape[-2] // spatial[n].stride) for n in s.grid_layers}
    combos = [(n, m) for n in s.grid_layers for m in fast if not (m.family == "eigen" and px[n] > 64 * 64)]
    skipped = len(s.grid_layers) * len(fast) - len(combos)
    target = tg.TargetSpec("predicted", s.cls)

    def plain() -> None:
        for layer, info in combos:
            s.plain_cam(info.name, layer, s.region, s.cls)

    def ours() -> None:
        c = engine.capture(s.loaded, s.image, target, s.grid_layers)
        for layer, info in combos:
            engine.cam_from_capture(c, info, layer)

    note = f"{skipped} eigen cells on large layers left out: plain grad-cam cannot allocate them" if skipped else ""
    reps = max(1, s.repeats - 2)
    return _row(f"Compare grid ({len(combos)} cells)", _median(plain, reps), _median(ours, reps), note)


def row_render(s: _Setup, size: int) -> dict[str, Any]:
    from PIL import Image

    from cam_core import engine
    from cam_core.engine.methods import METHODS
    from cam_core.output import render

    cam = engine.cam_from_capture(s.held["cap"], METHODS["gradcam"], s.default_layer).cam
    img = _tile_to(s.image, size)
    c = np.asarray(Image.fromarray(cam).resize((size, size), Image.Resampling.BILINEAR))

    def once() -> None:
        render.overlay(img, c, 0.5, "viridis", render.threshold_level(c, "otsu"))

    return _row(f"render (opacity/threshold/colormap) {size}²", None, _median(once, max(s.repeats, 5)))


def _row(name: str, plain: float | None, ours: float, note: str = "") -> dict[str, Any]:
    return {
        "row": name,
        "plain_s": None if plain is None else round(plain, 4),
        "engine_s": round(ours, 4),
        "ratio": None if plain is None else round(plain / ours, 1),
        "note": note,
    }


# The plain-grad-cam program for `bench --cli`: what a user writes without this project (the
# model loaded the same way, then one grad-cam call per method × layer), in its own process.
_PLAIN_PROGRAM = """
import sys, time, numpy as np
t0 = time.perf_counter()
import torch
from PIL import Image
from pytorch_grad_cam import {classes}
from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget
from cam_core.model import models
loaded = models.load({model!r})
model = loaded.model.eval()
img = np.asarray(Image.open({image!r}).convert("RGB"))
x, _ = models.pad_to_multiple(models.preprocess(img, loaded.spec), loaded.multiple)
with torch.no_grad():
    mask = torch.softmax(model(x), 1)[0].argmax(0).numpy()
cls = int(np.bincount(mask.ravel(), minlength=2)[1:].argmax() + 1)
region = np.float32(mask == cls)
modules = dict(model.named_modules())
for layer in {layers!r}:
    for method in [{classes}]:
        with method(model, [modules[layer]]) as cam:
            out = cam(input_tensor=x, targets=[SemanticSegmentationTarget(cls, region)])
        np.save(f"{out}/{{layer}}_{{method.__name__}}.npy", out[0])
print("PLAIN", time.perf_counter() - t0)
"""


def _process_seconds(cmd: list[str], repeats: int) -> float:
    """Median wall time of a whole process, start to exit."""
    import subprocess

    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False)
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:4])}... exited {proc.returncode}: {proc.stderr[-1500:]}")
    return statistics.median(times)


def run_cli(args: argparse.Namespace) -> int:
    """Whole-process `explain` against the plain grad-cam loop, each in its own fresh process."""
    import sys
    import tempfile

    from PIL import Image

    from cam_core.engine.methods import fast_methods
    from cam_core.model import layers, models

    loaded = models.load(args.model, args.models_dir)
    grid_layers = layers.compare_layers(loaded)
    gradient = [m.name for m in fast_methods() if m.family == "gradient"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / f"tile_{args.size}.png"
        Image.fromarray(_tile_to(load_image(args.image).array, args.size)).save(big)
        small = Path(tmp) / "tile_256.png"
        Image.fromarray(_tile_to(load_image(args.image).array, 256)).save(small)
        model_args = ["--model", args.model] if args.model else []
        explain = [sys.executable, "-m", "cam_core", "explain", str(big), *model_args]
        ours = _process_seconds(
            [*explain, "--layer", ",".join(grid_layers), "--method", ",".join(gradient), "--out", f"{tmp}/ours"],
            args.repeats,
        )
        plain_dir = Path(tmp) / "plain"
        plain_dir.mkdir()
        program = _PLAIN_PROGRAM.format(
            classes=", ".join(gradient),
            model=args.model or models.default_model_name(),
            image=str(big),
            layers=grid_layers,
            out=str(plain_dir),
        )
        plain = _process_seconds([sys.executable, "-c", program], args.repeats)
        n = len(grid_layers) * len(gradient)
        rows.append(
            _row(
                f"explain {len(grid_layers)} layers × {len(gradient)} methods, {args.size}², whole process",
                plain,
                ours,
                f"{n} CAMs, {3 * n} PNGs + arrays written by ours; plain saves {n} arrays",
            )
        )
        one = [sys.executable, "-m", "cam_core", "explain", str(small), *model_args, "--out", f"{tmp}/one"]
        rows.append(_row("explain one 256² tile (GradCAM), whole process", None, _process_seconds(one, args.repeats)))
        floor = [sys.executable, "-c", "import torch, segmentation_models_pytorch"]
        rows.append(_row("floor: a process that only imports torch + smp", None, _process_seconds(floor, args.repeats)))
    info = {"model": loaded.name, "layers": grid_layers, "methods": gradient, "repeats": args.repeats, "rows": rows}
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    print(f"whole-process timings, median of {args.repeats}, model {loaded.name}")
    _print_rows(rows)
    return 0


def _print_rows(rows: list[dict[str, Any]]) -> None:
    print(f"| {'row':60s} | {'plain grad-cam':>14s} | {'engine':>9s} | {'ratio':>6s} |")
    print(f"|{'-' * 62}|{'-' * 16}|{'-' * 11}|{'-' * 8}|")
    for r in rows:
        plain = "—" if r["plain_s"] is None else f"{r['plain_s']:.4f} s"
        ratio = "—" if r["ratio"] is None else f"{r['ratio']}×"
        print(f"| {r['row']:60s} | {plain:>14s} | {r['engine_s']:.4f} s | {ratio:>6s} | {r['note']}")


def run_trust(args: argparse.Namespace) -> int:
    """What the trust checks cost at the sample tile's size: each part timed on its own."""
    from cam_core import engine, trust
    from cam_core.engine import methods
    from cam_core.model import layers, models

    loaded = models.load(args.model, args.models_dir)
    image = load_image(args.image).array
    layer = layers.default_layer(loaded)
    info = methods.get_method("GradCAM")
    target = tg.TargetSpec("predicted", None)
    cap = engine.capture(loaded, image, target, [layer])
    cam = engine.cam_from_capture(cap, info, layer).cam
    refs = {"target mask": trust.target_explainer(loaded, image, cap.target, cap.prediction)}
    refs.update(
        {
            f"random{i}": m
            for i, m in enumerate(trust.random_maps(cap.activations[layer], cap.image_shape, cap.padded_shape))
        }
    )
    explainer = {(info.name, layer): trust.method_explainer(info, layer)}
    rows = {
        "faithfulness of one map (38 forwards)": _median(
            lambda: trust.faithfulness(loaded, image, cap.target, cap.prediction, {"m": cam}), args.repeats
        ),
        f"its references ({len(refs)} maps, once per image, target and layer)": _median(
            lambda: trust.faithfulness(loaded, image, cap.target, cap.prediction, refs), args.repeats
        ),
        f"sanity of one method × layer, full cascade ({trust.count_blocks(loaded.model)} steps)": _median(
            lambda: trust.sanity(loaded, image, cap.target, explainer), args.repeats
        ),
        "sanity of one method × layer, one step (everything randomised)": _median(
            lambda: trust.sanity(loaded, image, cap.target, explainer, cascade=False), args.repeats
        ),
        "the whole check of one map in the app (all of the above, cascade)": _median(
            lambda: trust.trust(loaded, image, target, [layer], [info]), args.repeats
        ),
    }
    h, w = image.shape[:2]
    out = {"image": f"{Path(args.image).name} {w}×{h}", "device": str(loaded.device), "rows": rows}
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"trust checks on {out['image']}, {loaded.name}, {layer}, GradCAM, median of {args.repeats}, {out['device']}")
    for name, secs in rows.items():
        print(f"| {name} | {secs:.2f} s |")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.estimates:
        from cam_core.cli import estimates

        return estimates.run(args)
    if args.trust:
        return run_trust(args)
    if args.scorecam:
        return run_scorecam(args)
    if args.large:
        return run_large(args)
    if args.cli:
        return run_cli(args)
    import torch

    from cam_core.engine.result import versions

    s = _setup(args)
    device = s.loaded.device
    fb, bwd = fwd_bwd_seconds(s.loaded.model, args.size, device, s.repeats)
    baseline = None
    if args.baseline_encoder:
        import segmentation_models_pytorch as smp

        ref = smp.Unet(args.baseline_encoder, encoder_weights=None, classes=s.loaded.num_classes).to(device)
        baseline = fwd_bwd_seconds(ref, args.size, device, s.repeats)[0]
        del ref
    if args.latency:
        print(f"{s.loaded.name} forward+backward at {args.size}²: {fb:.3f} s (median of {s.repeats}) on {device}")
        if baseline:
            print(
                f"Unet-{args.baseline_encoder} (random weights) forward+backward: {baseline:.3f} s; ratio {fb / baseline:.2f}"
            )
        return 0
    rows = [
        row_first(s, fb),
        row_switch_method(s),
        row_switch_layer(s),
        row_switch_class(s, bwd),
        row_grid(s),
        row_render(s, 512),
        row_render(s, 2048),
    ]
    import resource  # POSIX only: imported here, so every other command (and this module) works on Windows

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    info = {
        "model": s.loaded.name,
        "image": f"{Path(args.image).name} mirror-tiled to {args.size}²",
        "device": str(device) + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else ""),
        "cpu_threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "model_fwd_bwd_s": round(fb, 4),
        "model_backward_s": round(bwd, 4),
        "baseline": {f"Unet-{args.baseline_encoder}_fwd_bwd_s": round(baseline, 4)} if baseline else None,
        "repeats": s.repeats,
        "peak_rss_mb": round(peak_mb, 1),
        "versions": versions(),
        "rows": rows,
    }
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    print(
        f"model {s.loaded.name} on {info['device']}, {info['image']}, median of {s.repeats}; peak RSS {peak_mb:.0f} MB"
    )
    print(
        f"model forward+backward: {fb:.3f} s"
        + (f"; Unet-{args.baseline_encoder}: {baseline:.3f} s" if baseline else "")
    )
    _print_rows(rows)
    return 0
