"""The command line (``python -m cam_core``): the parsers and one function per command
(:mod:`.commands`); the benchmark (:mod:`.bench`) is imported only by its command. The top floor
with the app: nothing in the library imports it."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = ("main",)
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(".commands", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
