"""One estimate for every slow action, from what this server measured.

Each slow action counts its work in *forward units*: one no-gradient forward of the model over one
megapixel. A method with passes of its own, a trust check and a tiled capture each count their
units with their own formula (their modules say how); the seconds a unit costs are measured here,
per model and per action:

* before an action has run on this server, ``seconds per unit`` is the model's measured forward
  rate (every capture reports its forward time; the fastest of the last few, as a process's first
  forward is cold) times the prior of the passes it makes (measured
  on the 2-core CPU this project is developed on; ``python -m cam_core bench estimates``);
* after it has run, the median of its last runs' own seconds per unit: the server's load, its
  batch sizes and its threads are in the number.

The app, the CLI and the bench read estimates only from here, so a page never shows two
estimates for one action.
"""

from __future__ import annotations

import statistics
import threading
from collections import deque
from dataclasses import dataclass, field

# The priors: seconds per forward unit of each kind of pass, relative to the model's own forward
# rate (measured by `python -m cam_core bench estimates` on the project's 2-core CPU, 2026-12-01).
# An action is estimated with its prior until it has run once; its own runs then set its rate.
PRIORS: dict[str, tuple[float, str]] = {
    "forward": (1.0, "the forward half of a capture (the rate every capture measures)"),
    "no-grad forward": (0.5, "a forward without gradients (a tile's first phase)"),
    "capture": (2.6, "a forward and a backward with hooks (a capture)"),
    "batched": (1.0, "a forward of a batch of perturbed images (trust, ScoreCAM), per image"),
    # A sanity step is a capture of the randomised copy (with the first map: "capture"), then each
    # further map recomputed and compared: measured 2026-12-02 at 0.87–0.90 of a forward per map
    # (4 and 33 maps; a fixed step cost had Compare's 33-cell sanity at a tenth of its time).
    "sanity map": (0.9, "a map beyond the first recomputed and compared at a sanity step"),
}
# How many finished runs of a kind are remembered (their median is the next estimate's rate).
RUNS_KEPT = 5
# The forward rate assumed before any forward of a model was timed (seconds per megapixel):
# the built-in model on the project's 2-core CPU.
UNTIMED_FORWARD_S_PER_MP = 1.2


@dataclass
class _Rates:
    forward: deque[float] = field(default_factory=lambda: deque(maxlen=RUNS_KEPT))
    runs: dict[str, deque[float]] = field(default_factory=dict)


class CostModel:
    """Measured seconds per forward unit, per model and kind (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[str, _Rates] = {}

    def _rates(self, model: str) -> _Rates:
        return self._models.setdefault(model, _Rates())

    def observe_forward(self, model: str, megapixels: float, seconds: float, cpu_seconds: float | None = None) -> None:
        """The forward half of a capture over ``megapixels`` (batch 1): the model's base rate.

        ``cpu_seconds``: the forward's CPU time, when torch ran it on the calling thread alone
        (one intra-op thread). The smaller of the two is kept: a server's first captures share
        the cores with its start and a browser on the same machine, and their wall time ran at
        2–2.7× the warm rate (Compare's first check read "about 402 s" for 125 s), while the
        check itself runs later on a quiet machine; a lasting load is in the action's own runs.
        """
        if cpu_seconds is not None and cpu_seconds > 0:
            seconds = min(seconds, cpu_seconds)
        if megapixels > 0 and seconds > 0:
            with self._lock:
                self._rates(model).forward.append(seconds / megapixels)

    def observe(self, model: str, action: str, units: float, seconds: float) -> None:
        """A finished ``action`` (e.g. ``"trust"``, ``"method:ScoreCAM"``) that counted ``units``
        forward units and took ``seconds``: the next estimate of that action uses its rate."""
        if units > 0 and seconds > 0:
            with self._lock:
                self._rates(model).runs.setdefault(action, deque(maxlen=RUNS_KEPT)).append(seconds / units)

    def seconds_per_unit(self, model: str, action: str, prior: str = "forward") -> float:
        """The rate an estimate uses: the action's measured runs, else the forward rate × ``prior``."""
        if prior not in PRIORS:
            from cam_core.errors import unknown

            raise unknown("cost prior", prior, list(PRIORS))
        with self._lock:
            rates = self._rates(model)
            runs = rates.runs.get(action)
            if runs:
                return statistics.median(runs)
            # the fastest recent forward: a process's first forward is cold (lazy initialisation)
            base = min(rates.forward) if rates.forward else UNTIMED_FORWARD_S_PER_MP
            return base * PRIORS[prior][0]

    def estimate(self, model: str, action: str, units: float, prior: str = "forward") -> float:
        """Seconds for ``action`` counting ``units`` forward units on this server."""
        return units * self.seconds_per_unit(model, action, prior)

    def measured(self, model: str, action: str) -> bool:
        """Whether the action has finished on this server (else its prior is used)."""
        with self._lock:
            return bool(self._rates(model).runs.get(action))

    def forget(self) -> None:
        with self._lock:
            self._models.clear()


# The process's one cost model: captures feed its forward rate, slow actions their own runs.
COSTS = CostModel()


def units(forwards: float, pixels: int) -> float:
    """Forward units of ``forwards`` passes over ``pixels`` pixels each."""
    return forwards * pixels / 1e6


@dataclass(frozen=True)
class Work:
    """The work of one slow action: its name (its measured runs), forward units and prior."""

    action: str
    units: float
    prior: str = "forward"

    def seconds(self, model: str, costs: CostModel | None = None) -> float:
        """The one estimate of this action for ``model`` on this server."""
        return (costs or COSTS).estimate(model, self.action, self.units, self.prior)

    def done(self, model: str, seconds: float, costs: CostModel | None = None) -> None:
        """Record the action's measured seconds: the next estimate of it learns from them."""
        (costs or COSTS).observe(model, self.action, self.units, seconds)
