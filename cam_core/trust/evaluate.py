"""``python -m cam_core evaluate``: Dice and IoU of a model on a folder of tiles and masks.

Dice and IoU are pooled over all pixels of the set (sum of intersections over sum of sizes),
the usual pixel-level convention. ``nuclei_dice`` merges every foreground class (prediction > 0
against mask > 0). Masks are read by :mod:`cam_core.masks`, the same rule as the app's ground
truth: binary nucleus masks (0/255, or ``--mask-kind binary``) count towards ``nuclei_dice``
only, index masks towards every score.
``--restain`` re-stains each tile with Tellez et al.'s fixed-seed HED perturbation before
prediction, to measure robustness to other labs' staining.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cam_core.data.images import TILE_SUFFIXES, load_image
from cam_core.data.masks import IGNORE_INDEX, MASK_KINDS, decode, interpret
from cam_core.data.metrics import Overlap, from_confusion, overlap
from cam_core.data.stain import TELLEZ_SETTINGS, restain
from cam_core.errors import InputError, unknown
from cam_core.model.rules import DecisionRule
from cam_core.model.rules import parse as parse_rule

if TYPE_CHECKING:
    from cam_core.model.models import LoadedModel


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="per-class Dice/IoU on DIR/images + DIR/masks")
    p.set_defaults(run=run)
    p.add_argument("--model", default=None)
    p.add_argument("--models-dir", default=None)
    p.add_argument("--data", required=True, help="folder with images/ and masks/ (pixel value = class index)")
    p.add_argument("--split", default=None, help="use the names in DATA/SPLIT.txt (e.g. test)")
    p.add_argument("--names", default=None, help="file with one tile name per line")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--restain", default="none", help=f"none, or comma list of {', '.join(TELLEZ_SETTINGS)}")
    p.add_argument("--seed", type=int, default=0, help="seed of the re-staining")
    p.add_argument(
        "--rule",
        default=None,
        help="decision rule: argmax or bg:T (foreground where P(background) < T); default: the model's",
    )
    p.add_argument(
        "--macro-classes", default=None, help="comma list of classes for macro_dice (default: all foreground)"
    )
    p.add_argument(
        "--ignore-index",
        type=int,
        default=IGNORE_INDEX,
        help=f"mask value left out of the scores (default {IGNORE_INDEX})",
    )
    p.add_argument(
        "--mask-kind",
        default="auto",
        choices=list(MASK_KINDS),
        help="; ".join(f"{k}: {v}" for k, v in MASK_KINDS.items()),
    )
    p.add_argument("--json", action="store_true")


def tile_names(data: Path, split: str | None, names_file: str | None, limit: int | None) -> list[str]:
    if names_file:
        names = Path(names_file).read_text().split()
    elif split:
        f = data / f"{split}.txt"
        if not f.is_file():
            raise InputError(f"no {f}; --split needs DATA/<split>.txt with one tile name per line")
        names = f.read_text().split()
    else:
        names = sorted(p.stem for p in (data / "images").glob("*") if p.suffix.lower() in TILE_SUFFIXES)
    if not names:
        raise InputError(f"no tiles found in {data / 'images'}")
    return names[:limit] if limit else names


def _find(folder: Path, name: str) -> Path:
    for ext in TILE_SUFFIXES:
        if (folder / f"{name}{ext}").is_file():
            return folder / f"{name}{ext}"
    raise InputError(f"no file for tile {name!r} in {folder}")


def scores(conf: np.ndarray, classes: list[str], macro: list[str]) -> dict[str, Any]:
    """Metrics from a confusion matrix (rows = truth, columns = prediction)."""
    per_class = {}
    for c, name in enumerate(classes):
        o = from_confusion(conf, [c])
        per_class[name] = {"dice": o.dice, "iou": o.iou, "gt_pixels": o.truth}
    nuclei = from_confusion(conf, list(range(1, len(classes)))).dice  # every foreground class as one
    vals = [per_class[m]["dice"] for m in macro if per_class[m]["gt_pixels"] > 0]
    return {
        "per_class": per_class,
        "nuclei_dice": float(nuclei),
        "macro_dice": float(np.mean(vals)) if vals else float("nan"),
        "macro_classes": macro,
    }


def evaluate(
    loaded: LoadedModel,
    data: Path,
    names: list[str],
    setting: str,
    seed: int,
    rule: DecisionRule,
    macro: list[str],
    ignore_index: int = IGNORE_INDEX,
    mask_kind: str = "auto",
) -> dict[str, Any]:
    from tqdm import tqdm

    from cam_core import engine

    n = loaded.num_classes
    conf = np.zeros((n, n), dtype=np.int64)
    ignored = binary_masks = 0
    nuclei = Overlap()  # both, predicted, truth: nucleus pixels of every mask
    notes: list[str] = []
    rng = np.random.default_rng(seed)
    for name in tqdm(names, desc=f"evaluate [{setting}]", mininterval=5):
        image = load_image(_find(data / "images", name)).array
        path = _find(data / "masks", name)
        read = interpret(
            decode(path.read_bytes(), path.name, "mask"), loaded.spec.classes, mask_kind, path.name, ignore_index
        )
        gt = read.labels.astype(np.int64)
        if gt.shape != image.shape[:2]:
            raise InputError(f"mask of {name!r} is {gt.shape[::-1]} but the image is {image.shape[1::-1]}")
        keep = np.ones(gt.shape, bool) if read.scored is None else read.scored
        ignored += int((~keep).sum())
        if read.note:
            notes.append(read.note)
        if setting != "none":
            image = restain(image, setting, rng)
        pred = engine.predict(loaded, image, rule).mask.astype(np.int64)
        nuclei += overlap((pred > 0) & keep, (gt > 0) & keep)
        if read.binary:
            binary_masks += 1
        else:
            conf += np.bincount(gt[keep] * n + pred[keep], minlength=n * n).reshape(n, n)
    out = scores(conf, loaded.spec.classes, macro)
    out["nuclei_dice"] = nuclei.dice
    return {
        **out,
        "tiles": len(names),
        "binary_masks": binary_masks,
        "restain": setting,
        "seed": seed,
        "ignored_pixels": ignored,
        "ambiguous_masks": len(notes),  # read by the auto rule with a note (the first few below)
        "mask_notes": notes[:3],
    }


def run(args: argparse.Namespace) -> int:
    from cam_core.model import models

    loaded = models.load(args.model, args.models_dir)
    data = Path(args.data)
    if not (data / "images").is_dir() or not (data / "masks").is_dir():
        raise InputError(f"{data} needs images/ and masks/ sub-folders (mask pixel value = class index)")
    names = tile_names(data, args.split, args.names, args.limit)
    rule = parse_rule(args.rule) if args.rule else loaded.spec.decision_rule
    classes = loaded.spec.classes
    macro = [c.strip() for c in args.macro_classes.split(",")] if args.macro_classes else classes[1:]
    for m in macro:
        if m not in classes:
            raise unknown("class", m, classes)
    settings = [s.strip() for s in args.restain.split(",")]
    for s in settings:
        if s != "none" and s not in TELLEZ_SETTINGS:
            raise unknown("stain setting", s, ["none", *TELLEZ_SETTINGS])
    results = {
        s: evaluate(loaded, data, names, s, args.seed, rule, macro, args.ignore_index, args.mask_kind) for s in settings
    }
    out = {
        "model": loaded.name,
        "data": str(data),
        "rule": rule.to_json(),
        **(results[settings[0]] if len(settings) == 1 else {"settings": results}),
    }
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"model {loaded.name} on {len(names)} tiles of {data}, decision rule: {rule.describe()}")
    for s, r in results.items():
        print(f"\n[{s}]  nuclei Dice {r['nuclei_dice']:.4f}   macro Dice ({', '.join(macro)}) {r['macro_dice']:.4f}")
        if r["ignored_pixels"]:
            print(f"  {r['ignored_pixels']} pixels labelled {args.ignore_index} left out")
        if r["binary_masks"]:
            print(f"  {r['binary_masks']} binary masks: scored in nuclei Dice only")
        if r["ambiguous_masks"]:
            print(f"  {r['ambiguous_masks']} masks read by the auto rule with a note, e.g.: {r['mask_notes'][0]}")
        print(f"  {'class':15s} {'Dice':>7s} {'IoU':>7s} {'GT px':>10s}")
        for name, v in r["per_class"].items():
            print(f"  {name:15s} {v['dice']:7.4f} {v['iou']:7.4f} {v['gt_pixels']:10d}")
    return 0
