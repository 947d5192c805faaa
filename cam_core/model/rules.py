"""Decision rules: how per-class probabilities become the class mask. Defined once, here.

A rule is read from ``segcam.json`` (``{"type": "argmax"}`` or ``{"type": "background_below",
"threshold": T}``), from the CLI (``argmax`` or ``bg:T``) and from the app's menu; all three go
through :func:`DecisionRule.from_json` / :func:`parse`, so a rule that loads is a rule that works.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cam_core.errors import InputError, unknown

RULE_TYPES = {
    "argmax": "each pixel gets its most probable class",
    "background_below": "a pixel is a nucleus when P(background) < threshold, then its most probable nucleus class",
}
# The thresholds the app offers besides the model's own rule and argmax.
PRESET_THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def _input_error(exc: ValidationError) -> InputError:
    """pydantic's errors as one InputError: the rule's own message, or each wrong field named."""
    for err in exc.errors():
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, InputError):
            return cause
    parts = []
    for err in exc.errors():
        where = ".".join(map(str, err["loc"])) or "decision_rule"
        if err["type"] == "extra_forbidden":
            parts.append(f"decision_rule has unknown key {where!r}; valid: type, threshold")
        else:
            parts.append(f"decision_rule {where}: {err['msg']}")
    return InputError("; ".join(parts))


class DecisionRule(BaseModel):
    """``argmax``, or ``background_below`` with a threshold in (0, 1]; its JSON form is its schema
    (``segcam.json``'s ``decision_rule`` and ``result.json``'s)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: str = Field("argmax", description=f"one of: {', '.join(RULE_TYPES)}")
    threshold: float | None = Field(None, strict=True, description="background_below only: a number in (0, 1]")

    @model_validator(mode="after")
    def _valid(self) -> DecisionRule:
        if self.type not in RULE_TYPES:  # a ValueError, so pydantic reports it where the rule sits
            raise InputError(str(unknown("decision rule type", self.type, list(RULE_TYPES))))
        if self.type == "background_below":
            if self.threshold is None or not 0 < float(self.threshold) <= 1:
                raise InputError(
                    f"decision rule 'background_below' needs a threshold in (0, 1], got {self.threshold!r}; "
                    'e.g. {"type": "background_below", "threshold": 0.5}'
                )
        elif self.threshold is not None:
            raise InputError("decision rule 'argmax' takes no threshold; drop it or use 'background_below'")
        return self

    @classmethod
    def from_json(cls, data: Any) -> DecisionRule:
        """A rule from its JSON form; anything else is an ``InputError`` that shows the valid form."""
        if not isinstance(data, dict):
            raise InputError(
                f'decision_rule must be an object such as {{"type": "argmax"}}, got {type(data).__name__} {data!r}'
            )
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise _input_error(exc) from None

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)

    def key(self) -> str:
        """A stable string for cache keys and result files."""
        return self.type if self.threshold is None else f"{self.type}:{float(self.threshold):g}"

    def describe(self) -> str:
        if self.type == "background_below":
            return f"foreground where P(background) < {float(self.threshold or 0):g}"
        return "argmax"

    def decide(self, probs: np.ndarray) -> np.ndarray:
        """H×W uint8 class mask from C×H×W probabilities."""
        if self.type == "argmax" or probs.shape[0] < 2:
            return probs.argmax(0).astype(np.uint8)
        fg = probs[1:].argmax(0).astype(np.uint8) + 1
        return np.where(probs[0] < float(self.threshold or 0), fg, 0).astype(np.uint8)


ARGMAX = DecisionRule()


def parse(text: str) -> DecisionRule:
    """The CLI form: ``argmax`` or ``bg:T`` (foreground where P(background) < T)."""
    if text == "argmax":
        return ARGMAX
    if text.startswith("bg:"):
        try:
            return DecisionRule(type="background_below", threshold=float(text[3:]))
        except (ValueError, InputError):
            pass
    raise InputError(f"bad decision rule {text!r}; use argmax or bg:T with 0 < T <= 1 (e.g. bg:0.3)")


def presets(model_default: DecisionRule) -> dict[str, DecisionRule]:
    """The menu of rules: the model's own, argmax, then P(background) thresholds."""
    options = {"model default": model_default, "argmax": ARGMAX}
    for t in PRESET_THRESHOLDS:
        options[f"P(background) < {t}"] = DecisionRule(type="background_below", threshold=t)
    return options
