"""Progress of long work on a terminal, drawn one way for every command (tqdm).

The library reports progress as ``(fraction, text)`` or ``(done, total)`` callbacks; the CLI,
``trust`` and ``batch`` draw them with :class:`Line` (the app draws the same callbacks as
Streamlit progress bars). tqdm handles the terminal: rate, elapsed and remaining time, one
refreshing line, nothing when stderr is not a terminal but a log file it can write to.
"""

from __future__ import annotations

import sys

from tqdm import tqdm

_FRACTION = "{desc} {percentage:5.1f}% |{bar:20}| {elapsed}<{remaining} {postfix}"
_COUNT = "{desc}: {n_fmt}/{total_fmt} {unit} |{bar:20}| {elapsed}<{remaining}, {rate_fmt} {postfix}"
# Work whose caller knows its rate better than tqdm (a batch's line starts when its first tile is
# done, so tqdm's first rate read "22429 tiles/s"): the caller's rate and time left, said once.
_COUNT_OWN = "{desc}: {n_fmt}/{total_fmt} {unit} |{bar:20}| {elapsed} elapsed{postfix}"  # tqdm adds ", "


class Line:
    """One progress line on stderr; ``close()`` (or ``with``) ends it with a newline."""

    def __init__(self, desc: str, total: float | None = None, unit: str = "it", own_rate: bool = False):
        self._bar = tqdm(
            total=1.0 if total is None else total,
            desc=desc,
            unit=unit,
            file=sys.stderr,
            mininterval=0.2,
            dynamic_ncols=True,
            bar_format=_FRACTION if total is None else _COUNT_OWN if own_rate else _COUNT,
        )

    def __enter__(self) -> Line:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fraction(self, frac: float, text: str = "") -> None:
        """A ``progress(frac, text)`` callback of the engine, trust checks and tiling."""
        self._bar.n = max(0.0, min(1.0, float(frac))) * float(self._bar.total)
        self._bar.set_postfix_str(text[:70], refresh=False)
        self._bar.refresh()

    def count(self, done: int, total: int, text: str = "") -> None:
        """Work counted in units (tiles): ``done`` of ``total`` (with ``own_rate``, ``text`` says
        the rate and the time left)."""
        self._bar.total = total
        self._bar.n = done
        self._bar.set_postfix_str(text, refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        self._bar.close()
