"""Errors the UI and CLI show to a person as one line.

Each says what was wrong and what would work. They subclass the built-in type a Python caller
would expect (``ValueError``, ``KeyError``), so ``except ValueError`` still catches them.
"""

from __future__ import annotations

from typing import Any


class SegCamError(Exception):
    """Base of every error meant for the user, not for a traceback."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else self.__class__.__name__


class InputError(SegCamError, ValueError):
    """An image, file or parameter cannot be used as given."""


class UnknownNameError(SegCamError, KeyError):
    """A name (model, layer, method, class, colormap) is not one of the valid options."""


class ModelLoadError(SegCamError, ValueError):
    """A model folder or file cannot be loaded; the message says which part and why."""


class EmptyTargetError(InputError):
    """The target region has no pixels, so the CAM would be a meaningless blank map.

    ``prediction`` is set when the mask was computed before the target turned out empty, so a
    caller can still show the mask with the message.
    """

    prediction: Any = None


class NothingPredictedError(EmptyTargetError):
    """The class was left to the automatic choice and the model predicts only background."""


class Cancelled(SegCamError):
    """A long computation was cancelled through its progress callback."""


def unknown(kind: str, name: Any, valid: list[str] | tuple[str, ...], hint: str = "") -> UnknownNameError:
    """Build the standard 'unknown X; valid: ...' error."""
    shown = ", ".join(valid[:40]) + (f", ... ({len(valid)} in all)" if len(valid) > 40 else "")
    plural = f"{kind}es" if kind.endswith("s") else f"{kind}s"
    return UnknownNameError(f"unknown {kind} {name!r}; valid {plural}: {shown}{hint}")
