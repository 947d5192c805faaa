"""Names a package re-exports from one of its modules, imported on first use (PEP 562).

``import cam_core.output.render`` must not pay for torch, smp and grad-cam, and a package's API
(``cam_core.engine.capture``, ``cam_core.trust.trust``) must not import every module of it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def exports(package: str, names: Mapping[str, str]) -> tuple[list[str], Callable[[str], Any]]:
    """``__all__`` and ``__getattr__`` for ``package`` whose ``names`` map to the (relative)
    module that defines each: ``__all__, __getattr__ = exports(__name__, {...})``."""

    def getattr_(name: str) -> Any:
        if name in names:
            return getattr(importlib.import_module(names[name], package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return sorted(names), getattr_
