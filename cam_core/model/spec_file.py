"""The schema of a model folder's ``segcam.json``, written once as a pydantic model.

Every field says its valid form in its description; a wrong field becomes one message naming
the field, what was given and the form that works (:func:`parse`). The JSON Schema it implies
(:func:`json_schema`, ``python -m cam_core models --schema``) is what a lab's tooling can check
its files against before copying a model to the server.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from cam_core import limits
from cam_core.errors import SegCamError
from cam_core.model.rules import DecisionRule

Number = StrictFloat | StrictInt  # true numbers: no "0.5" strings, no booleans
Colour = Annotated[StrictStr, Field(pattern=r"^#[0-9A-Fa-f]{6}$")]
Triple = Annotated[list[Number], Field(min_length=3, max_length=3)]


class Preprocessing(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mean: Triple | None = Field(None, description="must be a list of 3 numbers (R, G, B), on RGB scaled to [0, 1]")
    std: Triple | None = Field(None, description="must be a list of 3 numbers (R, G, B), each positive")

    @field_validator("std")
    @classmethod
    def _positive(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and min(value) <= 0:
            raise ValueError("must be positive")
        return value


class TokenGrid(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stride: StrictInt = Field(..., gt=0, description="must be the patch size in pixels (e.g. 16)")
    prefix: StrictInt = Field(0, ge=0, description="must be the number of tokens before the patches (CLS: 1)")


class SpecFile(BaseModel):
    """``segcam.json``: what the explorer needs to know about a model beyond its weights."""

    model_config = ConfigDict(extra="allow")  # other keys are kept (and shown) as the folder's own

    classes: list[StrictStr | StrictInt] | None = Field(
        None, description="must be a list with one name per output channel"
    )
    colors: list[Colour] | None = Field(
        None, description="must be a list of #RRGGBB colours (e.g. #E69F00), one per class"
    )
    preprocessing: Preprocessing = Field(
        default_factory=lambda: Preprocessing(), description='must be an object {"mean": [...], "std": [...]}'
    )
    default_layer: StrictStr | None = Field(None, description="must be a dotted layer name (e.g. decoder.blocks.2)")
    decision_rule: DecisionRule | None = Field(
        None, description='must be an object, e.g. {"type": "argmax"} or {"type": "background_below", "threshold": 0.9}'
    )
    microns_per_pixel: Number | None = Field(
        None, description=f"must be a number in {limits.mpp_range_text()} (e.g. 0.25 for 40×)"
    )
    description: StrictStr = Field("", description="must be text")
    architecture: dict[str, Any] | None = Field(
        None,
        description='must be an object naming an smp architecture and its arguments, e.g. {"arch": "Unet", '
        '"encoder_name": "resnet34", "classes": 5} (for a state-dict checkpoint without config.json)',
    )
    weights: StrictStr | None = Field(
        None, description="must be the checkpoint's file name in the folder (e.g. best.ckpt), when it has several"
    )
    factory: StrictStr | None = Field(
        None,
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description='must be "package.module:function" of an installed package (e.g. "monai.networks.nets:UNet")',
    )
    # "kwargs" (the factory's keyword arguments) is checked below: a field of that name would
    # clash with the constructor's own **kwargs.
    tokens: TokenGrid | None = Field(
        None,
        description='must be an object {"stride": 16, "prefix": 1}: the patch grid of every B×N×C layer, '
        "when the token count alone does not say it",
    )

    @model_validator(mode="after")
    def _factory_kwargs(self) -> SpecFile:
        given = (self.model_extra or {}).get("kwargs")
        if given is not None and not isinstance(given, dict):
            raise ValueError(f"kwargs must be an object: the factory's keyword arguments, got {json.dumps(given)}")
        return self

    @field_validator("microns_per_pixel")
    @classmethod
    def _plausible(cls, value: float | None) -> float | None:
        if value is not None and not limits.plausible_mpp(float(value)):
            raise ValueError("is not a microscope's resolution")
        return value


def _field(loc: tuple[int | str, ...]) -> tuple[str, str, list[str]]:
    """The dotted field an error is about (its named fields only, not list indices or union
    members), that field's description (its valid form) and the names valid beside it."""
    model: Any = SpecFile
    names, hint, valid = [], "", list(SpecFile.model_fields)
    for part in loc:
        fields = getattr(model, "model_fields", {})
        if not isinstance(part, str) or part not in fields:
            break
        names.append(part)
        hint = fields[part].description or hint
        model = fields[part].annotation
        model = next((a for a in getattr(model, "__args__", ()) if hasattr(a, "model_fields")), model)  # X | None
        valid = list(getattr(model, "model_fields", {})) or valid
    return ".".join(names) or "the file", hint, valid


def parse(data: Any) -> SpecFile:
    """``segcam.json``'s content checked against the schema.

    Raises:
        ValueError: one line per wrong field: ``<field> <valid form>, got <value>``.
    """
    try:
        return SpecFile.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            field, hint, valid = _field(loc)
            given = err.get("input")
            cause = (err.get("ctx") or {}).get("error")
            if isinstance(cause, SegCamError) or (not loc and cause is not None):  # a schema's own message
                lines.append(f"{field}: {cause}" if loc else str(cause))
                continue
            if field == "colors" and isinstance(given, str):
                lines.append(f"colour {given!r} is not #RRGGBB (e.g. #E69F00)")
                continue
            if err["type"] == "extra_forbidden":
                lines.append(f"{'.'.join(str(p) for p in loc)} is not a setting (valid: {', '.join(valid)})")
                continue
            shown = json.dumps(given) if _jsonable(given) else repr(given)
            lines.append(f"{field} {hint or err['msg']}, got {shown}")
        raise ValueError("; ".join(dict.fromkeys(lines))) from None


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def json_schema() -> dict[str, Any]:
    return SpecFile.model_json_schema()
