"""Decision rules: how per-class probabilities become the class mask. Defined once, here.

A rule is read from ``segcam.json`` (``{"type": "argmax"}`` or ``{"type": "background_below",
"threshold": T}``), from the CLI (``argmax`` or ``bg:T``) and from the app's menu; all three go
through :func:`DecisionRule.from_json` / :func:`parse`, so a rule that loads is a rule that works.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cam_core.errors import InputError, unknown

RULE_TYPES = {
    "argmax": "each pixel gets its most probable class",
    "background_below": "a pixel is a nucleus when P(background) < threshold, then its most probable nucleus class",
}
# The thresholds the app offers besides the model's own rule and argmax.
PRESET_THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


@dataclass(frozen=True)
class DecisionRule:
    """``argmax``, or ``background_below`` with a threshold in (0, 1]."""

    type: str = "argmax"
    threshold: float | None = None

    def __post_init__(self) -> None:
        if self.type not in RULE_TYPES:
            raise unknown("decision rule type", self.type, list(RULE_TYPES))
        if self.type == "background_below":
            t = self.threshold
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < float(t) <= 1:
                raise InputError(
                    f"decision rule 'background_below' needs a threshold in (0, 1], got {t!r}; "
                    'e.g. {"type": "background_below", "threshold": 0.5}'
                )
        elif self.threshold is not None:
            raise InputError("decision rule 'argmax' takes no threshold; drop it or use 'background_below'")

    @classmethod
    def from_json(cls, data: Any) -> DecisionRule:
        """A rule from its JSON form; anything else is an ``InputError`` that shows the valid form."""
        if not isinstance(data, dict):
            raise InputError(
                f'decision_rule must be an object such as {{"type": "argmax"}}, got {type(data).__name__} {data!r}'
            )
        extra = set(data) - {"type", "threshold"}
        if extra:
            raise InputError(f"decision_rule has unknown keys {sorted(extra)}; valid: type, threshold")
        kind = data.get("type", "argmax")
        if not isinstance(kind, str):
            raise unknown("decision rule type", kind, list(RULE_TYPES))
        return cls(kind, data.get("threshold"))

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type} if self.threshold is None else {"type": self.type, "threshold": self.threshold}

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
            return DecisionRule("background_below", float(text[3:]))
        except (ValueError, InputError):
            pass
    raise InputError(f"bad decision rule {text!r}; use argmax or bg:T with 0 < T <= 1 (e.g. bg:0.3)")


def presets(model_default: DecisionRule) -> dict[str, DecisionRule]:
    """The menu of rules: the model's own, argmax, then P(background) thresholds."""
    options = {"model default": model_default, "argmax": ARGMAX}
    for t in PRESET_THRESHOLDS:
        options[f"P(background) < {t}"] = DecisionRule("background_below", t)
    return options
