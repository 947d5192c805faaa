"""What produced a picture: the CAM result type and the one ``result.json`` schema.

The CLI's ``result.json`` and the app's ZIP are both written by :func:`result_record`, so a file
from either says the same things in the same keys: model, layer, method, target (with its
region), class, decision rule, device, timings and package versions.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_serializer

from cam_core.engine.targets import TARGET_KINDS as TARGET_KIND_NAMES
from cam_core.model.rules import DecisionRule

# 3: target_point_xy, truth, box of every target kind; 4: signed_scale_classes; 5: display,
# app_link, model_sha256 (everything that changes the picture: a record rebuilds its figure)
SCHEMA_VERSION = 5
# How a CAM was obtained, as shown in the app and written to result.json.
SOURCES = {
    "cache": "from the cached pass",
    "tiled": "from a stitched tiled pass",
    "own passes": "passes of its own",
}


@dataclass
class CamResult:
    """One CAM with what produced it."""

    cam: np.ndarray  # H×W float32, normalised as grad-cam does, over the visible image (cammath.visible)
    cam_raw: np.ndarray  # H×W float32, before ReLU and normalisation (bilinear-resized)
    method: str
    layer: str
    target: str
    model: str
    device: str
    seconds: float
    source: str  # a key of SOURCES
    class_index: int = -1
    eigen_smooth: bool = False
    aug_smooth: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def from_cache(self) -> bool:
        return self.source != "own passes"

    def cost(self, source: bool = True) -> str:
        """The CAM's own cost in words: milliseconds from a cache, seconds otherwise (without
        ``source``, a cached CAM's words are left to a line that says it once for many)."""
        if self.source == "cache":
            return f"{self.seconds * 1000:.0f} ms" + (f" {SOURCES['cache']}" if source else "")
        return f"{self.seconds:.1f} s, {SOURCES[self.source]}"


@cache
def versions() -> dict[str, str]:
    """Package versions, from installed metadata (no heavy imports)."""

    def v(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "unknown"

    return {
        "python": platform.python_version(),
        "torch": v("torch"),
        "grad-cam": v("grad-cam"),
        "segmentation-models-pytorch": v("segmentation-models-pytorch"),
        "numpy": np.__version__,
        "segcam-explorer": v("segcam-explorer") if v("segcam-explorer") != "unknown" else "0.1.0",
    }


class ResultRecord(BaseModel):
    """``result.json``: what produced one map. The JSON Schema is ``python -m cam_core schema result``."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = Field(SCHEMA_VERSION, alias="schema", description="this schema's version")
    model: str
    layer: str
    method: str
    class_name: str = Field(alias="class")
    class_index: int
    target: str = Field(description="the target's kind: " + ", ".join(TARGET_KIND_NAMES))
    target_description: str
    target_written: str | None = Field(
        None, description="the target as the CLI's --target writes it (null: a mask not in the record)"
    )
    target_box_xyxy: list[int] | None = Field(None, description="the target region's box [x0, y0, x1, y1)")
    target_pixels: int | None = None
    target_point_xy: list[int] | None = Field(None, description="a point target's [x, y]")
    truth: dict[str, Any] | None = Field(None, description="the ground truth compared with (cam_core.data.truth)")
    decision_rule: DecisionRule
    eigen_smooth: bool
    aug_smooth: bool
    source: str = Field(description="how the map was obtained: " + ", ".join(SOURCES))
    tiles: int = Field(ge=1)
    image: dict[str, Any] = Field(description="the image: name or path, size, µm/px, notes, slide region")
    predicted_area_percent: dict[str, float]
    threshold: dict[str, Any] = Field(description="{mode, level} of the overlay's threshold")
    device: str
    cam_seconds: float
    pass_seconds: dict[str, float]
    signed_scale: float | None = Field(None, description="± scale of heatmap_signed.png, in raw CAM units")
    signed_scale_classes: list[str] | None = Field(None, description="the classes whose raw maps set that scale")
    trust: dict[str, Any] | None = Field(None, description="the map's trust check, when one was run")
    display: dict[str, Any] = Field(
        description="every setting that changes the picture (cam_core.output.figure.Display): "
        "view, opacity, colormap, threshold, values view, zoom, mask style"
    )
    model_sha256: str = Field(description="SHA-256 of the model weights as loaded")
    app_link: str | None = Field(None, description="the app's address of this view (app downloads)")
    compare_kind: str | None = Field(None, description="an A/B view: what differs (method, layer, model, marker)")
    compare_with: dict[str, Any] | None = Field(None, description="an A/B view: the B side's own record")
    notes: list[str]
    versions: dict[str, str]

    @field_serializer("decision_rule")
    def _rule(self, rule: DecisionRule) -> dict[str, Any]:
        return rule.to_json()  # {"type": "argmax"}, without a null threshold


def result_record(
    res: CamResult,
    *,
    classes: list[str],
    target_description: str,
    rule: dict[str, Any],
    image: dict[str, Any],
    area_percent: np.ndarray,
    target_box: list[int] | None = None,
    target_pixels: int | None = None,
    target_point: list[int] | None = None,
    target_written: str | None = None,
    truth: dict[str, Any] | None = None,
    threshold: dict[str, Any] | None = None,
    pass_seconds: dict[str, float] | None = None,
    tiles: int = 1,
    trust: dict[str, Any] | None = None,
    signed_scale: float | None = None,
    signed_scale_classes: list[str] | None = None,
    display: dict[str, Any] | None = None,
    model_sha256: str = "",
    app_link: str | None = None,
) -> dict[str, Any]:
    """The ``result.json`` record, identical in keys for the CLI and the app's ZIP.

    Args:
        display: the picture's settings (``Display.model_dump()``); the defaults when None.
        model_sha256: the weights' hash (``LoadedModel.weights_sha256``).
        app_link: the app's address of this view, so the record opens the same view again.
        trust: the map's trust check (``TrustReport.record()``) when one was run, else null.
        signed_scale: the ± scale of the raw signed picture (``heatmap_signed.png``), in the
            CAM's raw units.
        signed_scale_classes: the classes whose raw maps set that scale: the CLI scales each map
            by itself, the app by every class of the image (so magnitudes compare across classes).
        target_box: the bounding box of the target's region (any kind), ``[x0, y0, x1, y1)``.
        target_point: the clicked or given point of a ``point`` target, ``[x, y]``.
        truth: the ground truth it was compared with (``cam_core.truth.summary``), else null.
    """
    return ResultRecord.model_validate(
        {
            "schema": SCHEMA_VERSION,
            "model": res.model,
            "layer": res.layer,
            "method": res.method,
            "class": classes[res.class_index],
            "class_index": res.class_index,
            "target": res.target,
            "target_description": target_description,
            "target_box_xyxy": target_box,
            "target_pixels": target_pixels,
            "target_point_xy": target_point,
            "target_written": target_written,
            "truth": truth,
            "decision_rule": rule,
            "eigen_smooth": res.eigen_smooth,
            "aug_smooth": res.aug_smooth,
            "source": res.source,
            "tiles": tiles,
            "image": image,
            "predicted_area_percent": {c: round(float(a), 3) for c, a in zip(classes, area_percent)},
            "threshold": threshold or {"mode": "none", "level": None},
            "device": res.device,
            "cam_seconds": round(res.seconds, 4),
            "pass_seconds": {k: round(v, 4) for k, v in (pass_seconds or {}).items()},
            "signed_scale": None if signed_scale is None else float(signed_scale),
            "signed_scale_classes": signed_scale_classes if signed_scale is not None else None,
            "trust": trust,
            "display": display or {},
            "model_sha256": model_sha256,
            "app_link": app_link,
            "notes": res.notes,
            "versions": versions(),
        }
    ).model_dump(mode="json", by_alias=True)
