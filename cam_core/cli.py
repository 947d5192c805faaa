"""``python -m cam_core``: the same API as the app, from a shell.

Bad input exits with code 2 and one line naming the problem and the valid options.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from . import engine, layers, methods, models, render, tiling
from . import targets as tg
from .errors import SegCamError
from .images import load_image


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="built-in name, models-folder name or folder path (default: built-in)")
    p.add_argument(
        "--models-dir", default=None, help=f"models folder (default: ${models.MODELS_DIR_ENV} or models/user)"
    )


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m cam_core", description="CAM explanations of segmentation models")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list built-in and models-folder models")
    p.add_argument("--models-dir", default=None)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("layers", help="candidate target layers of a model")
    _add_model_args(p)
    p.add_argument("--all", action="store_true", help="every spatial layer, not just the curated list")

    sub.add_parser("methods", help="the CAM methods and their capabilities")

    p = sub.add_parser("explain", help="mask, CAM heatmap and overlay for one image")
    p.add_argument("image")
    _add_model_args(p)
    p.add_argument(
        "--class", dest="cls", default=None, help="class name or index (default: most predicted nucleus class)"
    )
    p.add_argument("--layer", default=None, help="dotted layer name, comma list, or 'all' (curated list)")
    p.add_argument(
        "--method", default=None, help="grad-cam class name, comma list, 'all' (one-pass methods), 'fast' or 'every'"
    )
    p.add_argument("--target", default="predicted", help="predicted | class | mask:PATH | rect:x0,y0,x1,y1")
    p.add_argument("--eigen-smooth", action="store_true")
    p.add_argument("--aug-smooth", action="store_true")
    p.add_argument("--colormap", default=render.DEFAULT_COLORMAP, choices=list(render.COLORMAPS))
    p.add_argument("--opacity", type=float, default=0.5)
    p.add_argument("--threshold-mode", default="none", choices=list(render.THRESHOLD_MODES))
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--out", default="out", help="output folder")

    from . import bench
    from . import evaluate as ev

    ev.add_parser(sub)
    bench.add_parser(sub)
    return ap


def _print_models(args) -> int:
    entries = models.discover(args.models_dir)
    if args.json:
        print(json.dumps([{**e.__dict__, "path": str(e.path)} for e in entries], indent=1))
        return 0
    default = models.default_model_name()
    for e in entries:
        flag = " (default)" if e.name == default else ""
        status = f"classes: {', '.join(e.classes)}" if not e.error else f"CANNOT LOAD: {e.error}"
        print(f"{e.name}{flag} [{e.source}] {e.path}\n    {status}")
    print(f"models folder: {models.models_dir(args.models_dir)}")
    return 0


def _print_layers(args) -> int:
    loaded = models.load(args.model, args.models_dir)
    spatial = layers.spatial_layers(loaded)
    default = layers.default_layer(loaded)
    names = list(spatial) if args.all else layers.curated_layers(loaded)
    for n in names:
        info = spatial[n]
        mark = "  <- default" if n == default else ""
        print(f"{n:40s} {info.channels:5d} ch  1/{info.stride:<3d} {info.kind}{mark}")
    return 0


def _print_methods() -> int:
    for m in methods.METHODS.values():
        flags = (
            [
                "one-pass" if m.from_cache else "own passes",
                "gradients" if m.needs_gradients else "no gradients",
            ]
            + (["slow"] if m.slow else [])
            + (["eigen_smooth"] if m.eigen_smooth else [])
            + (["baseline"] if m.baseline else [])
        )
        print(f"{m.name:20s} {m.family:12s} {', '.join(flags):55s} {m.summary}")
    return 0


def parse_target(text: str, class_index: int, shape: tuple[int, int]) -> tg.TargetSpec:
    """``predicted`` | ``class`` | ``mask:PATH`` | ``rect:x0,y0,x1,y1``."""
    if text in ("predicted", "class"):
        return tg.TargetSpec(text, class_index)
    if text.startswith("rect:"):
        try:
            x0, y0, x1, y1 = (int(v) for v in text[5:].split(","))
        except ValueError:
            raise SegCamError(f"bad rectangle {text!r}; write rect:x0,y0,x1,y1 in pixels") from None
        return tg.TargetSpec("mask", class_index, tg.rectangle_mask(shape, x0, y0, x1, y1))
    if text.startswith("mask:"):
        path = Path(text[5:])
        loaded = load_image(path, name=f"target mask {path}")
        mask = loaded.array.max(axis=2) > 0
        return tg.TargetSpec("mask", class_index, mask)
    raise SegCamError(f"unknown target {text!r}; valid: predicted, class, mask:PATH, rect:x0,y0,x1,y1")


def write_result(
    out: Path, image: np.ndarray, prediction: engine.Prediction, res: engine.CamResult, spec, args, extra: dict
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    level = render.threshold_level(res.cam, args.threshold_mode, args.threshold)
    Image.fromarray(render.colorize_mask(prediction.mask, spec.colors)).save(out / "mask.png")
    Image.fromarray(render.heatmap(res.cam, args.colormap)).save(out / "heatmap.png")
    Image.fromarray(render.overlay(image, res.cam, args.opacity, args.colormap, level)).save(out / "overlay.png")
    np.save(out / "cam.npy", res.cam.astype(np.float32))
    np.save(out / "cam_raw.npy", res.cam_raw.astype(np.float32))
    info = {**res.provenance(), **extra, "threshold": {"mode": args.threshold_mode, "level": level}}
    (out / "result.json").write_text(json.dumps(info, indent=1))


def _explain(args) -> int:
    t_start = time.perf_counter()
    image = load_image(args.image)
    loaded = models.load(args.model, args.models_dir)
    layer_names = layers.resolve_layers(loaded, args.layer)
    method_list = methods.resolve_methods(args.method)
    cls = None if args.cls is None else tg.class_index(args.cls, loaded.spec.classes)
    target = parse_target(args.target, cls, image.array.shape[:2])
    failures: list[str] = []

    def on_error(info, layer, exc):
        failures.append(f"{info.name} @ {layer}: {exc}")
        print(f"skipped {info.name} @ {layer}: {exc}", file=sys.stderr)

    def progress(frac, msg):
        print(f"\r[{frac * 100:5.1f}%] {msg:60s}", end="", file=sys.stderr, flush=True)

    multi = len(layer_names) * len(method_list) > 1
    h, w = image.array.shape[:2]
    cap = None
    if h * w > tiling.TILE_ABOVE_PIXELS:
        print(f"note: {w}×{h} is above {tiling.TILE_ABOVE_PIXELS / 1e6:.1f} MP: tiled inference", file=sys.stderr)
        results, pred = [], None
        for layer in layer_names:
            usable = [m for m in method_list if m.from_cache and m.family != "eigen"]
            for m in method_list:
                if m not in usable:
                    exc = SegCamError(f"{m.name} cannot run on a tiled image; use a gradient method")
                    if not multi:
                        raise exc
                    on_error(m, layer, exc)
            if usable:
                pred, res = tiling.explain_tiled(
                    loaded,
                    image.array,
                    target,
                    layer,
                    usable,
                    tile=tiling.DEFAULT_TILE,
                    overlap=tiling.DEFAULT_OVERLAP,
                    eigen_smooth=args.eigen_smooth,
                    progress=progress,
                )
                results += res
    else:
        cap, results = engine.explain(
            loaded,
            image.array,
            target,
            layer_names,
            method_list,
            eigen_smooth=args.eigen_smooth,
            aug_smooth=args.aug_smooth,
            progress=progress,
            on_error=on_error if multi else None,
        )
        pred = None
    print(file=sys.stderr)
    if pred is None:
        pred = cap.prediction if cap else engine.predict(loaded, image.array)
    cls = results[0].class_index if results else tg.resolve_auto(target, pred.mask, loaded.num_classes).class_index
    target = tg.TargetSpec(target.kind, cls, target.mask)
    out = Path(args.out)
    extra = {
        "image": str(args.image),
        "image_size": list(image.array.shape[:2]),
        "image_notes": image.notes,
        "class": loaded.spec.classes[cls],
        "class_index": cls,
        "target_description": target.describe(loaded.spec.classes),
        "model_path": str(loaded.path),
        "predicted_area_percent": {c: round(float(a), 3) for c, a in zip(loaded.spec.classes, pred.area_percent())},
        "capture_seconds": {k: round(v, 4) for k, v in cap.seconds.items()} if cap else None,
    }
    for res in results:
        folder = out / res.layer / res.method if multi else out
        write_result(folder, image.array, pred, res, loaded.spec, args, extra)
    summary = {
        "out": str(out),
        "results": len(results),
        "skipped": failures,
        "forward_passes_for_one_pass_methods": 1 if cap else None,
        "tiled": cap is None and bool(results) and "tiled" in " ".join(results[0].notes),
        "total_seconds": round(time.perf_counter() - t_start, 3),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    for note in image.notes:
        print(f"note: {note}", file=sys.stderr)
    print(
        f"wrote {len(results)} CAM(s) for class '{loaded.spec.classes[cls]}' to {out} in {summary['total_seconds']} s"
    )
    return 0 if results else 2


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "models":
            return _print_models(args)
        if args.command == "layers":
            return _print_layers(args)
        if args.command == "methods":
            return _print_methods()
        if args.command == "explain":
            return _explain(args)
        if args.command == "bench":
            from . import bench

            return bench.run(args)
        if args.command == "evaluate":
            from . import evaluate as ev

            return ev.run(args)
    except SegCamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2
    return 2
