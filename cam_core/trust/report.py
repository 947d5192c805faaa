"""``python -m cam_core trust``: faithfulness and sanity for one image, or a table over a folder.

One image::

    python -m cam_core trust IMAGE [--model M] [--class C] [--target T] --layer L[,L...] --method M[,M...] [--json]

prints one line per layer × method (or, with ``--json``, one object whose ``results`` list holds
:meth:`cam_core.trust.TrustReport.record` entries). A folder (``--data DIR``: ``DIR/images`` or
``DIR`` itself) gives the per-model report: per method × layer the mean faithfulness, its random
and target-mask references, how often it beats them, the sanity pass rate and the cost. ``--out
FILE`` keeps that report (the Model page and the model card read ``trust.json`` beside a model's
weights, and the app suggests a method and layer from it).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from cam_core.errors import InputError, NothingPredictedError
from cam_core.progress import Line

REPORT_FILE = "trust.json"  # beside a model's weights: its measured per-model report
REPORT_SCHEMA = 2  # 2: sanity on raw, |raw| and shown maps (#23); a schema-1 report is not read


def add_parser(sub: Any) -> None:
    p = sub.add_parser("trust", help="faithfulness vs random and the sanity check, for an image or a folder")
    p.set_defaults(run=run)
    p.add_argument("image", nargs="?", help="one image (or use --data for a folder)")
    p.add_argument("--data", default=None, help="folder of tiles (DIR/images/*.png or DIR/*.png): the per-model report")
    p.add_argument("--limit", type=int, default=None, help="at most this many tiles of --data")
    p.add_argument("--model", default=None)
    p.add_argument("--models-dir", default=None)
    p.add_argument(
        "--class", dest="cls", default=None, help="class name or index (default: most predicted nucleus class)"
    )
    p.add_argument("--target", default="predicted", help="predicted | class | mask:PATH | rect:x0,y0,x1,y1")
    p.add_argument("--layer", default=None, help="layer, comma list, 'all' (curated) or 'compare' (the Compare rows)")
    p.add_argument("--method", default=None, help="method, comma list or group (default GradCAM)")
    p.add_argument("--rule", default=None, help="decision rule: argmax or bg:T (default: the model's)")
    p.add_argument(
        "--no-cascade", action="store_true", help="randomise everything at once (one step, not one per block)"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--out", default=None, help="write the JSON report to this file (e.g. MODEL_DIR/trust.json)")


def _images(args: argparse.Namespace) -> list[Path]:
    if args.data is None:
        if args.image is None:
            raise InputError("give an IMAGE or --data DIR (a folder of tiles)")
        return [Path(args.image)]
    root = Path(args.data)
    folder = root / "images" if (root / "images").is_dir() else root
    from cam_core.data.images import TILE_SUFFIXES

    found = sorted(p for p in folder.glob("*") if p.suffix.lower() in TILE_SUFFIXES)
    if not found:
        raise InputError(f"no images in {folder}; --data needs a folder of PNG/JPEG/TIFF tiles (or DIR/images)")
    return found[: args.limit] if args.limit else found


def _truth_of(args: argparse.Namespace, path: Path, classes: list[str], shape: tuple[int, int]) -> Any:
    """The tile's truth for --data DIR with DIR/masks/ (as ``evaluate`` reads them), else None."""
    if args.data is None:
        return None
    from cam_core.data.images import TILE_SUFFIXES
    from cam_core.data.truth import load_truth

    folder = Path(args.data) / "masks"
    found = [folder / f"{path.stem}{ext}" for ext in TILE_SUFFIXES if (folder / f"{path.stem}{ext}").is_file()]
    return load_truth(found[0], classes, shape) if found else None


def run(args: argparse.Namespace) -> int:
    from cam_core import trust
    from cam_core.data.images import load_image
    from cam_core.engine import methods
    from cam_core.engine import targets as tg
    from cam_core.engine.targets import parse_target
    from cam_core.model import layers, models
    from cam_core.model.rules import parse as parse_rule
    from cam_core.runtime import CLI_THREADS, configure_threads

    configure_threads(CLI_THREADS)
    paths = _images(args)
    loaded = models.load(args.model, args.models_dir)
    layer_names = layers.resolve_layers(loaded, args.layer)
    method_list = methods.resolve_methods(args.method)
    rule = parse_rule(args.rule) if args.rule else None
    cls = None if args.cls is None else tg.class_index(args.cls, loaded.spec.classes)
    per_image: list[dict[str, Any]] = []
    skipped: list[str] = []
    t_start = time.perf_counter()
    for n, path in enumerate(paths, 1):
        image = load_image(path)
        target = parse_target(args.target, cls, image.array.shape[:2])
        label = f"{path.name} ({n}/{len(paths)})"

        line = Line(label)
        truth = _truth_of(args, path, loaded.spec.classes, image.array.shape[:2])
        try:
            reports = trust.trust(
                loaded,
                image.array,
                target,
                layer_names,
                method_list,
                rule=rule,
                cascade=not args.no_cascade,
                progress=line.fraction,
                truth=truth,
            )
        except NothingPredictedError as exc:
            if args.data is None:
                raise
            skipped.append(f"{path.name}: {exc}")
            continue
        finally:
            line.close()
        per_image.append({"image": path.name, "results": [r.record() for r in reports]})
    if not per_image:
        raise InputError("no tile could be checked: " + "; ".join(skipped))
    seconds = time.perf_counter() - t_start
    meta = _meta(args, loaded, layer_names, [m.name for m in method_list], seconds)
    if args.data is None:
        out: dict[str, Any] = {**meta, "image": str(paths[0]), "results": per_image[0]["results"]}
    else:
        out = {**meta, "data": str(args.data), "tiles": len(per_image), "skipped": skipped}
        out["results"] = aggregate(per_image)
        out["per_image"] = per_image
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        print(table(out["results"], folder=args.data is not None))
        for s in skipped:
            print(f"skipped {s}")
    return 0


def _meta(
    args: argparse.Namespace, loaded: Any, layer_names: list[str], method_names: list[str], seconds: float
) -> dict[str, Any]:
    """What produced a trust report: model, target, layers, methods, device, time, versions and the
    checks' constants."""
    from cam_core import trust
    from cam_core.engine.result import versions

    return {
        "schema": REPORT_SCHEMA,
        "model": loaded.name,
        "target": args.target,
        "class": args.cls,
        "layers": layer_names,
        "methods": method_names,
        "device": str(loaded.device),
        "seconds": round(seconds, 1),
        "measured": time.strftime("%Y-%m-%d"),
        "versions": versions(),
        "constants": {
            "steps": trust.FAITHFULNESS_STEPS,
            "random_seeds": trust.RANDOM_SEEDS,
            "blur_sigma_px": trust.BLUR_SIGMA,
            "sanity_max_rho": trust.SANITY_MAX_RHO,
        },
    }


def aggregate(per_image: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per method × layer over the tiles: means, pass rates and cost."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for entry in per_image:
        for r in entry["results"]:
            groups.setdefault((r["method"], r["layer"]), []).append(r)
    rows = []
    for (method, layer), rs in groups.items():

        def mean(key: str, rs: list[dict[str, Any]] = rs) -> float:
            return round(float(np.mean([r[key] for r in rs])), 4)

        rows.append(
            {
                "method": method,
                "layer": layer,
                "tiles": len(rs),
                "faithfulness": mean("faithfulness"),
                "random_faithfulness": mean("random_faithfulness"),
                "target_mask_faithfulness": mean("target_mask_faithfulness"),
                "beats_random_rate": mean("beats_random"),
                "beats_target_mask_rate": mean("beats_target_mask"),
                "sanity_rho_median": _median(rs, "sanity_rho"),
                "sanity_raw_rho_median": _median(rs, "sanity_raw_rho"),
                "sanity_abs_rho_median": _median(rs, "sanity_abs_rho"),
                "sanity_pass_rate": mean("sanity_pass"),
                "sanity_collapsed_rate": round(float(np.mean([r["sanity_collapsed_at"] is not None for r in rs])), 4),
                "believe_rate": round(float(np.mean([r["verdict"] == "believe" for r in rs])), 4),
                "seconds": mean("seconds"),
            }
        )
    return rows


def _median(rs: list[dict[str, Any]], key: str) -> float | None:
    """The median of a correlation over tiles, leaving out tiles where it does not exist (a
    constant map has no ρ); None when it exists on none."""
    values = [r[key] for r in rs if r[key] is not None]
    return round(float(np.median(values)), 4) if values else None


def _rho(x: float | None) -> str:
    return "constant" if x is None else f"{x:+.2f}"


def table(rows: list[dict[str, Any]], folder: bool) -> str:
    """Markdown: one row per method × layer."""
    if folder:
        head = (
            "| method | layer | faithfulness | random | target mask | beats random | sanity ρ raw / |raw| / shown "
            "(median) | sanity pass | believe | s / map |"
        )
        lines = [head, "|" + "---|" * 10]
        for r in rows:
            rhos = " / ".join(
                _rho(r[k]) for k in ("sanity_raw_rho_median", "sanity_abs_rho_median", "sanity_rho_median")
            )
            lines.append(
                f"| {r['method']} | {r['layer']} | {r['faithfulness']:+.3f} | {r['random_faithfulness']:+.3f} | "
                f"{r['target_mask_faithfulness']:+.3f} | {r['beats_random_rate'] * 100:.0f} % | {rhos} | "
                f"{r['sanity_pass_rate'] * 100:.0f} % | {r['believe_rate'] * 100:.0f} % | {r['seconds']:.1f} |"
            )
        return "\n".join(lines)
    head = "| method | layer | faithfulness | random | target mask | sanity ρ raw / |raw| / shown | sanity | verdict |"
    lines = [head, "|" + "---|" * 8]
    for r in rows:
        rhos = " / ".join(_rho(r[k]) for k in ("sanity_raw_rho", "sanity_abs_rho", "sanity_rho"))
        lines.append(
            f"| {r['method']} | {r['layer']} | {r['faithfulness']:+.3f} | {r['random_faithfulness']:+.3f} ± "
            f"{r['random_faithfulness_sd']:.3f} | {r['target_mask_faithfulness']:+.3f} | {rhos} | "
            f"{r['sanity_verdict']} | {r['verdict_sentence']} |"
        )
    return "\n".join(lines)


def load_report(model_folder: Path) -> dict[str, Any] | None:
    """A model's measured report (``trust.json`` beside its weights), or None."""
    path = Path(model_folder) / REPORT_FILE
    if not path.is_file():
        return None
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) and report.get("schema") == REPORT_SCHEMA else None


def suggest(report: dict[str, Any]) -> dict[str, Any] | None:
    """The measured best method × layer: passes sanity on most tiles, beats random, most faithful
    (never a baseline: :func:`cam_core.trust.checks.explains`)."""
    from cam_core.trust.checks import explains

    rows = [
        r
        for r in report.get("results", [])
        if r.get("sanity_pass_rate", 0) >= 0.5 and r.get("beats_random_rate", 0) >= 0.5 and explains(r["method"])
    ]
    return max(rows, key=lambda r: r["faithfulness"]) if rows else None
