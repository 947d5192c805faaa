"""The command line (``python -m cam_core``): the parsers and one function per command
(:mod:`.commands`) and the benchmark (:mod:`.bench`). The top floor with the app: nothing in the
library imports it."""

from __future__ import annotations

from cam_core.lazy import exports

__all__, __getattr__ = exports(
    __name__,
    dict.fromkeys(
        ("main",),
        ".commands",
    ),
)
