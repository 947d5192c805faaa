"""``python -m cam_core``: the same API as the app, from a shell.

Bad input exits with code 2 and one line naming the problem and the valid options. Each command
imports what it uses when it runs: ``explain`` never imports grad-cam unless a method with
passes of its own (or ``--aug-smooth``) is asked for.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cam_core import limits
from cam_core.data.masks import MASK_KINDS
from cam_core.errors import InputError, NothingPredictedError, SegCamError
from cam_core.paths import SAMPLES_DIR
from cam_core.progress import Line

if TYPE_CHECKING:
    from cam_core.data.images import LoadedImage
    from cam_core.engine.capturing import Prediction
    from cam_core.engine.result import CamResult
    from cam_core.engine.targets import TargetSpec
    from cam_core.model.models import LoadedModel

# zlib level 1: a 512² heatmap PNG encodes ~6× faster than at Pillow's default level 6, for
# files ~20 % larger; the pixels are identical (PNG is lossless).
PNG_LEVEL = 1
COLORMAP_DEFAULT = "viridis"


# Every JSON file the tool reads or writes, by name: the pydantic model that is its schema.
SCHEMAS = {
    "segcam": ("cam_core.model.spec_file:SpecFile", "a model folder's segcam.json"),
    "result": ("cam_core.engine.result:ResultRecord", "result.json of an explained map (CLI folder, app ZIP)"),
    "trust": ("cam_core.trust.checks:TrustRecord", "one map's trust check (trust --json, result.json's trust)"),
    "manifest": ("cam_core.wsi.batch:Manifest", "manifest.json of a slide's batch output"),
}


def schema_of(name: str) -> dict[str, Any]:
    """The JSON Schema of one of :data:`SCHEMAS` (by its JSON names, as the files spell them)."""
    import importlib

    from cam_core.errors import unknown

    if name not in SCHEMAS:
        raise unknown("schema", name, list(SCHEMAS))
    module, _, cls = SCHEMAS[name][0].partition(":")
    schema: dict[str, Any] = getattr(importlib.import_module(module), cls).model_json_schema(by_alias=True)
    return schema


def _print_schema(args: argparse.Namespace) -> int:
    print(json.dumps(schema_of(args.name), indent=1))
    return 0


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="built-in name, models-folder name or folder path (default: built-in)")
    p.add_argument("--models-dir", default=None, help="models folder (default: $SEGCAM_MODELS_DIR or models/user)")


def _explain_parser(sub: Any) -> None:
    from cam_core.engine.targets import NAMED_KINDS, TRUTH_KINDS, WRITTEN_AS
    from cam_core.output.render import BLENDS, COLORMAPS, DEFAULT_BLEND, DEFAULT_COLORMAP, THRESHOLD_MODES

    p = sub.add_parser("explain", help="mask, CAM heatmap and overlay for one image")
    p.set_defaults(run=_explain)
    p.add_argument("image")
    _add_model_args(p)
    p.add_argument(
        "--class", dest="cls", default=None, help="class name or index (default: most predicted nucleus class)"
    )
    p.add_argument(
        "--layer",
        default=None,
        help="dotted layer name, comma list, 'all' (curated list) or 'compare' (the Compare rows)",
    )
    p.add_argument(
        "--method", default=None, help="method name, comma list, or a group: 'all' (one-pass), 'fast', 'every'"
    )
    p.add_argument(
        "--target",
        default="predicted",
        help=f"{' | '.join([*NAMED_KINDS, *WRITTEN_AS.values()])} (point: the predicted object under it); "
        f"{' and '.join(TRUTH_KINDS)} need --gt",
    )
    p.add_argument(
        "--gt",
        default=None,
        metavar="MASK",
        help="ground-truth mask (class indices of the model, or binary 0/255): Dice, TP/FP/FN map, fn/fp targets",
    )
    p.add_argument(
        "--gt-kind",
        default="auto",
        choices=list(MASK_KINDS),
        help="; ".join(f"{k}: {v}" for k, v in MASK_KINDS.items()),
    )
    p.add_argument("--rule", default=None, help="decision rule: argmax or bg:T (default: the model's)")
    p.add_argument("--eigen-smooth", action="store_true")
    p.add_argument("--aug-smooth", action="store_true")
    p.add_argument("--colormap", default=DEFAULT_COLORMAP, choices=list(COLORMAPS))
    p.add_argument("--opacity", type=float, default=0.5)
    p.add_argument(
        "--blend", default=DEFAULT_BLEND, choices=list(BLENDS), help="; ".join(f"{k}: {v}" for k, v in BLENDS.items())
    )
    p.add_argument("--threshold-mode", default="none", choices=list(THRESHOLD_MODES))
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--out", default="out", help="output folder")
    p.add_argument(
        "--region",
        default=None,
        metavar="X,Y,W,H",
        help="IMAGE is a whole slide: explain this level-0 box, read at the model's resolution",
    )
    p.add_argument("--mpp", type=float, default=None, help="a slide's µm/px when its metadata lacks it")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m cam_core", description="CAM explanations of segmentation models")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list built-in and models-folder models")
    p.set_defaults(run=_print_models)
    p.add_argument("--models-dir", default=None)
    p.add_argument("--json", action="store_true")
    p.add_argument("--schema", action="store_true", help="print the JSON Schema of a model folder's segcam.json")
    p.add_argument("--check", default=None, metavar="DIR", help="check a model folder: one line per problem")

    p = sub.add_parser("convert", help="a state-dict checkpoint's folder as a safetensors folder (save_pretrained)")
    p.set_defaults(run=_convert)
    p.add_argument("folder", help="a model folder (e.g. model.pth + segcam.json with its architecture)")
    p.add_argument("--out", required=True, help="the new folder (config.json + model.safetensors + segcam.json)")

    p = sub.add_parser("layers", help="candidate target layers of a model")
    p.set_defaults(run=_print_layers)
    _add_model_args(p)
    p.add_argument("--all", action="store_true", help="every spatial layer, not just the curated list")

    p = sub.add_parser("schema", help="the JSON Schema of a file this tool reads or writes")
    p.set_defaults(run=_print_schema)
    p.add_argument("name", choices=list(SCHEMAS), help="; ".join(f"{k}: {v[1]}" for k, v in SCHEMAS.items()))

    sub.add_parser("methods", help="the CAM methods and their capabilities").set_defaults(
        run=lambda _: _print_methods()
    )

    _explain_parser(sub)

    p = sub.add_parser("figure", help="rebuild a result's figure.png from its result.json alone")
    p.set_defaults(run=_figure)
    p.add_argument("record", help="a result.json (the CLI's or the app's ZIP)")
    p.add_argument("--image", default=None, help="the image, when the record names an upload (checked by SHA-256)")
    p.add_argument("--gt", default=None, metavar="MASK", help="the truth mask, for a missed/false-positive target")
    p.add_argument("--models-dir", default=None)
    p.add_argument("--out", default="figure.png")

    p = sub.add_parser("slide", help="what a slide says about itself: size, levels, resolution, tissue")
    p.set_defaults(run=_print_slide)
    p.add_argument("slide")
    p.add_argument("--mpp", type=float, default=None, help="the slide's µm/px when its metadata lacks it")
    p.add_argument("--thumbnail", default=None, metavar="PNG", help="write the thumbnail with the tissue outlined")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("make-slide", help="a pyramidal demo/test slide tiled from the sample tiles")
    p.set_defaults(run=_make_slide)
    p.add_argument("out", help="output file (.tif, or .svs for an Aperio-style slide)")
    p.add_argument("--size", type=int, default=20_000, help="side in level-0 pixels (default 20000)")
    p.add_argument("--tissue", type=int, default=1_536, help="side of the tissue square (default 1536)")
    p.add_argument("--mpp", type=float, default=0.25)
    p.add_argument("--no-resolution", action="store_true", help="write no resolution metadata")

    from cam_core.trust import audit
    from cam_core.trust import evaluate as ev
    from cam_core.trust import report as trust_report
    from cam_core.wsi import batch

    ev.add_parser(sub)
    _bench_parser(sub)
    trust_report.add_parser(sub)
    audit.add_parser(sub)
    batch.add_parser(sub)
    return ap


def _figure(args: argparse.Namespace) -> int:
    from cam_core.output.rebuild import rebuild

    try:
        record = json.loads(Path(args.record).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read {args.record} as result.json: {exc}") from None
    built = rebuild(record, args.image, args.models_dir, args.gt)
    _save_png(built.figure, Path(args.out))
    print(f"wrote {args.out}: {record['method']} @ {record['layer']}, class {record['class']}, from {args.record}")
    return 0


def _print_slide(args: argparse.Namespace) -> int:
    from cam_core.output import render
    from cam_core.wsi import slides

    with slides.Slide(args.slide, args.mpp) as slide:
        info = slide.info
        thumb = slide.thumbnail()
        tissue = slides.tissue_mask(thumb)
        record = {**info.record(), "tissue_fraction": round(float(tissue.mean()), 4)}
        if args.thumbnail:
            _save_png(render.outline(thumb, tissue, "#00A000"), Path(args.thumbnail))
    if args.json:
        print(json.dumps(record, indent=1))
        return 0
    w, h = info.size_wh
    mpp = f"{info.mpp:g} µm/px" if info.mpp else "unknown resolution"
    power = f", {info.objective_power:g}×" if info.objective_power else ""
    print(f"{info.name}: {w}×{h} px, {info.level_count} levels, {mpp}{power}, {info.vendor}")
    print(f"tissue on {100 * record['tissue_fraction']:.1f} % of the thumbnail")
    for note in info.notes:
        print(f"note: {note}")
    return 0


def _make_slide(args: argparse.Namespace) -> int:
    from cam_core.wsi import synthslide

    out = Path(args.out)
    kind = "nores" if args.no_resolution else "svs" if out.suffix.lower() == ".svs" else "tiff"
    if not 256 <= args.tissue <= args.size:
        raise InputError(f"--tissue {args.tissue} must be between 256 and --size {args.size}")
    out.parent.mkdir(parents=True, exist_ok=True)
    c = (args.size - args.tissue) // 2
    synthslide.write_slide(out, synthslide.sample_tiles(), args.size, (c, c, args.tissue, args.tissue), args.mpp, kind)
    print(f"wrote {out} ({args.size}×{args.size} px, {kind}, {out.stat().st_size / 1e6:.1f} MB)")
    return 0


def _slide_region(args: argparse.Namespace, model_mpp: float | None) -> tuple[LoadedImage, dict[str, Any]]:
    """``explain SLIDE --region X,Y,W,H``: the region at the model's resolution, and its record."""
    from cam_core.data.images import LoadedImage
    from cam_core.wsi import slides

    try:
        x, y, w, h = (int(v) for v in args.region.split(","))
    except ValueError:
        raise InputError(f"bad region {args.region!r}; write --region X,Y,W,H in level-0 pixels") from None
    with slides.Slide(args.image, args.mpp) as slide:
        if slide.info.mpp is None:
            raise InputError(
                f"'{slide.info.name}' does not say its resolution; give --mpp (e.g. 0.25 for 40×) to read it at the "
                f"model's {model_mpp} µm/px"
            )
        array = slide.read_region(x, y, w, h, model_mpp)
        info = slide.info
    mpp = model_mpp or info.mpp
    notes = [slides.region_note((x, y, w, h), info.name, mpp), *info.notes]
    return LoadedImage(array, notes, "RGB", mpp), {"slide": info.record(), "region_level0_xywh": [x, y, w, h]}


def _print_models(args: argparse.Namespace) -> int:
    from cam_core.model import models

    if args.schema:
        return _print_schema(argparse.Namespace(name="segcam"))
    if args.check:
        problems = models.check(args.check)
        if problems:
            print("\n".join(problems))
            return 1
        loaded = models.load_folder(args.check)
        print(f"{loaded.name}: loads — {loaded.loaded_from}; classes {', '.join(loaded.spec.classes)}")
        return 0
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


def _convert(args: argparse.Namespace) -> int:
    """Load the folder (a checkpoint only through torch.load(weights_only=True)) and write its
    weights as model.safetensors: an smp model as smp's save_pretrained writes it (config.json),
    a factory's beside its segcam.json; segcam.json loses the keys only a checkpoint needs."""
    from safetensors.torch import save_file

    from cam_core.model import models

    loaded = models.load_folder(args.folder)
    if loaded.loaded_from.startswith("model.safetensors"):
        raise InputError(f"{loaded.name} is already read from model.safetensors ({loaded.kind}); nothing to convert")
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out.name} exists and is not empty; give a new folder for --out")
    model = loaded.model.cpu()
    for t in [*model.parameters(), *model.buffers()]:
        t.data = t.data.contiguous()  # loaded channels-last; safetensors stores contiguous tensors
    spec_path = Path(args.folder) / models.SPEC_FILE
    spec = json.loads(spec_path.read_text()) if spec_path.is_file() else {}
    dropped: tuple[str, ...] = ("weights",)
    if hasattr(model, "save_pretrained"):  # smp: config.json now says the architecture
        model.save_pretrained(str(out))  # type: ignore[operator]  # smp's, unknown to nn.Module's typing
        dropped += ("architecture",)
    else:  # a factory's module: its segcam.json goes on naming the factory
        out.mkdir(parents=True, exist_ok=True)
        save_file(model.state_dict(), str(out / "model.safetensors"))
    kept = {k: v for k, v in spec.items() if k not in dropped}
    (out / models.SPEC_FILE).write_text(json.dumps(kept, indent=1))
    written = ", ".join(sorted(p.name for p in out.iterdir()))
    print(f"{loaded.name} ({loaded.loaded_from}) → {out.name}: {written}")
    return 0


def _print_layers(args: argparse.Namespace) -> int:
    from cam_core.model import layers, models

    loaded = models.load(args.model, args.models_dir)
    spatial = layers.spatial_layers(loaded)
    default = layers.default_layer(loaded)
    names = list(spatial) if args.all else layers.curated_layers(loaded)
    for n in names:
        info = spatial[n]
        mark = "  <- default" if n == default else ""
        print(f"{n:40s} {info.channels:5d} ch  1/{info.stride:<3d} {info.kind:8s} {info.output}{mark}")
    return 0


def _print_methods() -> int:
    from cam_core.engine.methods import GROUPS, METHODS

    for m in METHODS.values():
        flags = [
            "one-pass" if m.from_cache else "own passes",
            "gradients" if m.needs_gradients else "no gradients",
            *(["slow"] if m.slow else []),
            *(["tileable"] if m.tileable else []),
            *(["eigen_smooth"] if m.eigen_smooth else []),
            *(["approximation"] if m.approximate else []),
            *(["baseline"] if m.baseline else []),
        ]
        print(f"{m.name:20s} {m.family:12s} {', '.join(flags):60s} {m.summary}")
    print("groups: " + "; ".join(f"{k} = {v[0]}" for k, v in GROUPS.items()))
    return 0


def _png(array: np.ndarray) -> bytes:
    from cam_core.output import render

    return render.to_png(array, PNG_LEVEL)


def _save_png(array: np.ndarray, path: Path) -> None:
    path.write_bytes(_png(array))


def _link_or_copy(src: Path, dst: Path) -> None:
    """The same mask in every result folder without encoding it again: a hard link where possible."""
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        dst.write_bytes(src.read_bytes())


class _Writer:
    """Writes every result folder; PNG encoding (zlib releases the GIL) runs on a small pool."""

    def __init__(self, args: argparse.Namespace, image: LoadedImage, loaded: LoadedModel, record: dict[str, Any]):
        self.args, self.image, self.loaded, self.record = args, image, loaded, record
        self.pool = ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)))
        self.jobs: list[Any] = []
        self.mask_png: Path | None = None

    def mask(self, prediction: Prediction, out: Path) -> Path:
        from cam_core.data.truth import compare as gt_compare
        from cam_core.output import render

        out.mkdir(parents=True, exist_ok=True)
        self.mask_png = out / "mask.png"
        _save_png(prediction.mask.astype(np.uint8), self.mask_png)  # class indices: what other tools read
        _save_png(
            render.scale_bar(render.colorize_mask(prediction.mask, self.loaded.spec.colors), self.image.mpp),
            out / "mask_color.png",
        )
        truth = self.record.get("_truth")
        if truth is not None:
            _save_png(
                render.outcome_map(gt_compare(prediction.mask, truth, self.record.get("_truth_class"))),
                out / "truth_compare.png",
            )
        return self.mask_png

    def result(self, folder: Path, res: CamResult, prediction: Prediction, target: TargetSpec, tiles: int) -> None:
        from cam_core.engine import targets as tg
        from cam_core.engine.result import result_record
        from cam_core.output import bundle, render
        from cam_core.output.figure import Arrays, Display, figure_from

        args = self.args
        mpp = self.image.mpp  # a µm scale bar on every picture when the resolution is known
        folder.mkdir(parents=True, exist_ok=True)
        if self.mask_png is not None and folder / "mask.png" != self.mask_png:
            for name in ("mask.png", "mask_color.png"):
                _link_or_copy(self.mask_png.parent / name, folder / name)
        level = render.threshold_level(res.cam, args.threshold_mode, args.threshold)
        pictures: dict[str, bundle.Content] = {
            "heatmap.png": lambda: _png(render.scale_bar(render.heatmap(res.cam, args.colormap), mpp)),
            "overlay.png": lambda: _png(
                render.scale_bar(
                    render.overlay(self.image.array, res.cam, args.opacity, args.colormap, level, blend=args.blend), mpp
                )
            ),
        }
        classes = self.loaded.spec.classes
        display = Display(
            opacity=args.opacity,
            colormap=args.colormap,
            threshold_mode=args.threshold_mode,
            threshold_value=args.threshold,
            blend=args.blend,
            outline_target=target.kind in tg.LOCAL_KINDS,
        )
        record = result_record(
            res,
            classes=classes,
            target_description=target.describe(classes),
            rule=prediction.rule.to_json(),
            image={k: v for k, v in self.record.items() if not k.startswith("_")},  # "_": the writer's own
            area_percent=prediction.area_percent(),
            target_box=self.record.get("_target_box"),
            target_pixels=self.record.get("_target_pixels"),
            target_point=list(target.point) if target.point is not None else None,
            target_written=target.with_class(res.class_index).written(),
            threshold={"mode": args.threshold_mode, "level": level},
            pass_seconds=self.record.get("_pass_seconds"),
            tiles=tiles,
            truth=self.record.get("_truth_summary"),
            display=display.model_dump(),
            model_sha256=self.loaded.weights_sha256,
        )
        region = tg.region(target.with_class(res.class_index), prediction.mask, classes) > 0
        arrays = Arrays(self.image.array, prediction.mask, res.cam, res.cam_raw, region, self.loaded.spec.colors, mpp)
        pictures["figure.png"] = lambda: _png(figure_from(record, arrays))
        for name, content in bundle.files(res, record, pictures, mpp).items():  # PNGs encode in parallel
            self.jobs.append(self.pool.submit(bundle.write_folder, folder, {name: content}))

    def close(self) -> None:
        for job in self.jobs:
            job.result()
        self.pool.shutdown()


def _explain(args: argparse.Namespace) -> int:
    t_start = time.perf_counter()
    from cam_core import engine
    from cam_core.data.truth import load_truth
    from cam_core.engine import methods
    from cam_core.engine import targets as tg
    from cam_core.model import layers, models
    from cam_core.model.rules import parse as parse_rule
    from cam_core.runtime import CLI_THREADS, configure_threads

    configure_threads(CLI_THREADS)
    loaded = models.load(args.model, args.models_dir)
    image, slide_record = _explain_input(args, loaded.spec.mpp)
    layer_names = layers.resolve_layers(loaded, args.layer)
    method_list = methods.resolve_methods(args.method)
    rule = parse_rule(args.rule) if args.rule else loaded.spec.decision_rule
    cls = None if args.cls is None else tg.class_index(args.cls, loaded.spec.classes)
    truth = load_truth(args.gt, loaded.spec.classes, image.array.shape[:2], kind=args.gt_kind) if args.gt else None
    if truth is not None and truth.note:
        print(f"note: {truth.note}", file=sys.stderr)
    target = tg.parse_target(args.target, cls, image.array.shape[:2], truth)
    failures: list[str] = []
    multi = len(layer_names) * len(method_list) > 1

    def on_error(info: methods.MethodInfo, layer: str, exc: Exception) -> None:
        failures.append(f"{info.name} @ {layer}: {exc}")
        print(f"skipped {info.name} @ {layer}: {exc}", file=sys.stderr)

    line = Line("explain")
    progress = line.fraction

    h, w = image.array.shape[:2]
    tiled = limits.is_large(image.array.shape)
    out = Path(args.out)
    writer = _Writer(args, image, loaded, _image_record(args, image, loaded, slide_record, truth))
    cap = None
    results: list[engine.CamResult] = []
    try:
        if tiled:
            print(f"note: {w}×{h} is above {limits.TILE_ABOVE_PIXELS / 1e6:.1f} MP: tiled inference", file=sys.stderr)
            shared = (loaded, image.array, target, layer_names, method_list, rule, args.eigen_smooth)
            cap, results = _explain_tiled(*shared, progress, on_error, multi)
        else:
            cap, results = engine.explain(
                loaded,
                image.array,
                target,
                layer_names,
                method_list,
                eigen_smooth=args.eigen_smooth,
                aug_smooth=args.aug_smooth,
                rule=rule,
                progress=progress,
                on_error=on_error if multi else None,
            )
    except NothingPredictedError as exc:  # the mask is still worth having
        line.close()
        writer.mask(exc.prediction or engine.predict(loaded, image.array, rule), out)
        writer.close()
        _summary(out, 0, [str(exc)], cap, tiled, t_start)
        print(f"nothing to explain: {exc}; wrote the mask to {out / 'mask.png'}")
        return 0
    finally:
        line.close()
    prediction = cap.prediction if cap else engine.predict(loaded, image.array, rule)
    explained = _write_results(writer, out, loaded, image, prediction, target, truth, cap, results, multi)
    seconds = _summary(out, len(results), failures, cap, tiled, t_start)
    for note in image.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {len(results)} CAM(s) for class '{loaded.spec.classes[explained]}' to {out} in {seconds} s")
    return 0 if results else 2


def _image_record(
    args: argparse.Namespace, image: LoadedImage, loaded: LoadedModel, slide_record: dict[str, Any], truth: Any
) -> dict[str, Any]:
    """result.json's "image" (a file's SHA-256, so a rebuild can check it); "_" keys are the writer's own."""
    h, w = image.array.shape[:2]
    return {
        "path": str(args.image),
        **({} if args.region else {"sha256": hashlib.sha256(Path(args.image).read_bytes()).hexdigest()}),
        "size_hw": [h, w],
        "microns_per_pixel": image.mpp,
        "notes": image.notes,
        "model_folder": loaded.path.name,
        **slide_record,
        "_truth": truth,
    }


def _explain_input(args: argparse.Namespace, model_mpp: float | None) -> tuple[LoadedImage, dict[str, Any]]:
    """The image to explain: a region of a slide (``--region``), or an image file (never a whole slide)."""
    from cam_core.data.images import load_image
    from cam_core.wsi.slides import SLIDE_ONLY_SUFFIXES

    if args.region:
        return _slide_region(args, model_mpp)
    if Path(args.image).suffix.lower() in SLIDE_ONLY_SUFFIXES:
        raise InputError(
            f"{Path(args.image).name} is a whole slide: give --region X,Y,W,H (level-0 pixels), or run `batch`"
        )
    return load_image(args.image), {}


def _explain_tiled(
    loaded: LoadedModel,
    image: np.ndarray,
    target: TargetSpec,
    layer_names: list[str],
    method_list: list[Any],
    rule: Any,
    eigen_smooth: bool,
    progress: Any,
    on_error: Callable[[Any, str, Exception], None],
    multi: bool,
) -> tuple[Any, list[CamResult]]:
    """One stitched capture and every one-pass method on it; a method with passes of its own is
    refused (skipped with the reason when several were asked for)."""
    from cam_core import engine
    from cam_core.engine import tiling

    for m in method_list:
        if not m.tileable:
            exc = InputError(f"{m.name} cannot run on a tiled image (passes of its own); use a one-pass method")
            if not multi:
                raise exc
            for layer in layer_names:
                on_error(m, layer, exc)
    usable = [m for m in method_list if m.tileable]
    if not usable:
        return None, []
    cap = tiling.capture_tiled(
        loaded,
        image,
        target,
        layer_names,
        rule=rule,
        tile=tiling.DEFAULT_TILE,
        overlap=tiling.DEFAULT_OVERLAP,
        progress=progress,
    )
    results = []
    for layer in layer_names:
        for m in usable:
            try:
                results.append(engine.cam_from_capture(cap, m, layer, eigen_smooth))
            except InputError as exc:
                if not multi:
                    raise
                on_error(m, layer, exc)
    return cap, results


def _write_results(
    writer: _Writer,
    out: Path,
    loaded: LoadedModel,
    image: LoadedImage,
    prediction: Prediction,
    target: TargetSpec,
    truth: Any,
    cap: Any,
    results: list[CamResult],
    multi: bool,
) -> int:
    """The mask and every result folder; returns the class explained (resolved when automatic)."""
    from cam_core.data.truth import summary as summarize_truth
    from cam_core.engine import targets as tg

    classes = loaded.spec.classes
    resolved = results[0].class_index if results else tg.resolve_auto(target, prediction.mask, classes).class_index
    assert resolved is not None  # resolve_auto raises when no class can be chosen
    target = target.with_class(resolved)
    region = tg.region(target, prediction.mask, classes) > 0
    record = writer.record
    record["_target_pixels"] = int(region.sum())
    record["_target_box"] = tg.box_of(region)
    if truth is not None:
        record["_truth_summary"] = summarize_truth(prediction.mask, truth, classes, resolved)
        record["_truth_class"] = resolved
    record["_pass_seconds"] = cap.seconds if cap else None
    writer.mask(prediction, out)
    for res in results:
        writer.result(out / res.layer / res.method if multi else out, res, prediction, target, cap.tiles if cap else 1)
    writer.close()
    return resolved


def _summary(out: Path, n: int, failures: list[str], cap: Any, tiled: bool, t_start: float) -> float:
    out.mkdir(parents=True, exist_ok=True)
    seconds = round(time.perf_counter() - t_start, 3)
    summary = {
        "out": str(out),
        "results": n,
        "skipped": failures,
        "forward_passes_for_one_pass_methods": (cap.tiles if tiled else 1) if cap else None,
        "tiled": tiled,
        "total_seconds": seconds,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return seconds


def _bench_parser(sub: Any) -> None:
    """``bench``'s options; the module itself (the timings, grad-cam's baselines) loads when it runs."""
    p = sub.add_parser("bench", help="time the engine against plain grad-cam")
    p.set_defaults(run=_run_bench)
    p.add_argument("--model", default=None)
    p.add_argument("--models-dir", default=None)
    p.add_argument("--image", default=str(SAMPLES_DIR / "test_12_002.png"))
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
    p.add_argument(
        "--trust",
        action="store_true",
        help="only: cost of the trust checks on one 256² sample tile (faithfulness of one map, its references, "
        "sanity of one method × layer)",
    )
    p.add_argument(
        "--estimates",
        action="store_true",
        help="only: estimate ÷ actual of every slow action (methods with own passes, trust checks, Compare's "
        "batch, tiled captures), first from the priors, then from measured runs (exit 1 outside 0.5–2)",
    )
    p.add_argument(
        "--cli",
        action="store_true",
        help="only: whole-process `explain` (3 layers × 6 gradient methods at SIZE², and one 256² tile) "
        "against plain grad-cam doing the same CAMs in its own process",
    )


def _run_bench(args: argparse.Namespace) -> int:
    from cam_core.cli import bench

    return bench.run(args)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args))  # each sub-command's parser names the function that runs it
    except SegCamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2
