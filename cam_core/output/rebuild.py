"""A figure rebuilt from ``result.json`` alone: the record names the model (and its weights' hash),
the image (a sample, a file, or one given), the target, the rule, the method and layer, and every
display setting; this module runs the explanation again and draws it with
:func:`cam_core.output.figure.figure_from`, the function that drew the original.

``python -m cam_core figure result.json`` is its command.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cam_core import limits
from cam_core.data import samples
from cam_core.data.images import load_image
from cam_core.data.truth import load_truth
from cam_core.engine import targets as tg
from cam_core.engine.methods import get_method
from cam_core.engine.result import SCHEMA_VERSION, CamResult
from cam_core.errors import InputError
from cam_core.model import models
from cam_core.model.rules import DecisionRule
from cam_core.output.figure import Arrays, figure_ab, figure_from


@dataclass
class Rebuilt:
    """The figure and what it was drawn from (a caller may compare the map too)."""

    figure: np.ndarray
    result: CamResult
    arrays: Arrays


def _image_bytes(record: dict[str, Any], image: str | Path | None) -> tuple[bytes, str]:
    """The image's bytes: the one given, else the record's file, else the sample it names."""
    info = record["image"]
    if image is not None:
        return Path(image).read_bytes(), Path(image).name
    path = info.get("path")
    if path and Path(path).is_file():
        return Path(path).read_bytes(), Path(path).name
    name = info.get("name") or ""
    if info.get("slide"):
        raise InputError(
            f"{name} is a region of a slide: open the record's app_link, or run `explain SLIDE --region "
            f"{','.join(str(v) for v in info['slide']['region_level0_xywh'])}`"
        )
    if name in samples.names():
        return samples.file(name).read_bytes(), name
    raise InputError(f"the record's image {name or path!r} is not a sample and not found: give it with --image FILE")


def _image_array(
    record: dict[str, Any], image: str | Path | None, loaded: models.LoadedModel
) -> tuple[np.ndarray, str]:
    """The record's image, checked by its SHA-256; an image with an audit mark planted (an A/B
    view's B) is planted again on the image it names, exactly as the app did."""
    planted = record["image"].get("planted")
    data, name = _image_bytes({**record, "image": planted["on"]} if planted else record, image)
    sha = (planted["on"] if planted else record["image"]).get("sha256")
    if sha and hashlib.sha256(data).hexdigest() != sha:
        raise InputError(f"{name} is not the record's image (its SHA-256 differs)")
    array = load_image(data, name=name).array
    if not planted:
        return array, name
    from cam_core.trust import audit

    array, _ = audit.planted(loaded, array, planted["mark"], planted["seed"])
    if audit.planted_sha256(array) != record["image"]["sha256"]:
        raise InputError(f"the {planted['mark']} planted again on {name} differs from the record's image")
    return array, f"{name} + {planted['mark']}"


def inputs(
    record: dict[str, Any],
    image: str | Path | None = None,
    models_dir: str | Path | None = None,
    gt: str | Path | None = None,
) -> tuple[models.LoadedModel, np.ndarray, tg.TargetSpec, str]:
    """The model, the image, the target and the sample name ('' for a file) a record names.

    Raises:
        InputError: the record is of another schema, its weights or image differ from what it
            names (the hashes), or its target cannot be rebuilt (a mask not in the record).
    """
    if record.get("schema") != SCHEMA_VERSION:
        raise InputError(f"result.json is schema {record.get('schema')}; this version rebuilds schema {SCHEMA_VERSION}")
    loaded = models.load(record["model"], models_dir)
    if record["model_sha256"] and loaded.weights_sha256 != record["model_sha256"]:
        raise InputError(
            f"model {record['model']}'s weights differ from the record's (SHA-256 {loaded.weights_sha256[:12]}… "
            f"against {record['model_sha256'][:12]}…): the figure would not be the same"
        )
    array, name = _image_array(record, image, loaded)
    written = record.get("target_written")
    if written is None:
        raise InputError("the record's target is a drawn mask, which result.json does not hold: it cannot be rebuilt")
    sample = name if image is None and name in samples.names() else ""
    truth = None
    if written in tg.TRUTH_KINDS:
        if gt is not None:
            truth = load_truth(
                gt, loaded.spec.classes, array.shape[:2], kind=(record.get("truth") or {}).get("kind", "auto")
            )
        elif sample:
            truth = samples.truth(sample, loaded.spec.classes, array.shape[:2])
        else:
            raise InputError(
                f"the target compares with a ground truth: give it with --gt MASK ({(record.get('truth') or {}).get('file')})"
            )
    target = tg.parse_target(written, record["class_index"], array.shape[:2], truth)
    return loaded, array, target, sample


def rebuild(
    record: dict[str, Any],
    image: str | Path | None = None,
    models_dir: str | Path | None = None,
    gt: str | Path | None = None,
) -> Rebuilt:
    """Explain again what ``record`` names and draw its figure (see :func:`inputs` for errors;
    ``image`` and ``gt`` stand in for an upload and a truth mask the record names by hash). An
    A/B record (``compare_with``) rebuilds both sides and their figure."""
    res, arrays = explain_again(record, image, models_dir, gt)
    other = record.get("compare_with")
    if other:
        base = (other["image"].get("planted") or {}).get("on") or other["image"]  # B's mark: planted on A's image
        same_image = base.get("sha256") == record["image"].get("sha256")
        _, arrays_b = explain_again(other, image if same_image else None, models_dir, gt)
        return Rebuilt(figure_ab(record, arrays, arrays_b), res, arrays)
    return Rebuilt(figure_from(record, arrays), res, arrays)


def explain_again(
    record: dict[str, Any],
    image: str | Path | None = None,
    models_dir: str | Path | None = None,
    gt: str | Path | None = None,
) -> tuple[CamResult, Arrays]:
    """The map and the arrays a record's picture is drawn from, computed again."""
    from cam_core import engine
    from cam_core.engine import tiling

    loaded, array, target, _ = inputs(record, image, models_dir, gt)
    method = get_method(record["method"])
    rule = DecisionRule.from_json(record["decision_rule"])
    if limits.is_large(array.shape):
        prediction, results = tiling.explain_tiled(
            loaded, array, target, record["layer"], [method], eigen_smooth=record["eigen_smooth"], rule=rule
        )
    else:
        cap, results = engine.explain(
            loaded,
            array,
            target,
            [record["layer"]],
            [method],
            eigen_smooth=record["eigen_smooth"],
            aug_smooth=record["aug_smooth"],
            rule=rule,
        )
        prediction = cap.prediction if cap is not None else engine.predict(loaded, array, rule)
    res = results[0]
    region = tg.region(target.with_class(res.class_index), prediction.mask, loaded.spec.classes) > 0
    arrays = Arrays(
        array, prediction.mask, res.cam, res.cam_raw, region, loaded.spec.colors, record["image"]["microns_per_pixel"]
    )
    return res, arrays
