"""A per-server cap on heavy jobs, with a first-come queue whose waiters see their place.

A shared server that starts every ScoreCAM, trust check and tiled capture at once slows all of
them (and every class change beside them) and multiplies their memory; queued, each runs at
full speed and the waiting user is told where they stand instead of watching a frozen bar.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Place:
    """Where a waiting job stands: ``ahead`` jobs queued before it, ``running`` of ``slots``."""

    ahead: int
    running: int
    slots: int

    def text(self, what: str) -> str:
        ahead = "next in line" if self.ahead == 0 else f"{self.ahead} job(s) ahead in the queue"
        return (
            f"{what}: waiting for a free slot — {ahead}; {self.running} heavy job(s) running "
            f"(this server runs at most {self.slots} at once)"
        )


class JobGate:
    """At most ``slots`` jobs inside :meth:`slot` at once; the others wait in arrival order.

    A thread already holding a slot enters again freely (a trust check that needs a tiled
    capture must not queue behind itself).
    """

    def __init__(self, slots: int):
        if slots < 1:
            raise ValueError(f"a gate needs at least one slot, got {slots}")
        self.slots = slots
        self._cond = threading.Condition()
        self._queue: deque[object] = deque()
        self._running = 0
        self._held = threading.local()

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return len(self._queue)

    @contextmanager
    def slot(self, waiting: Callable[[Place], None] | None = None, poll_s: float = 0.5) -> Iterator[None]:
        """Hold one slot for the ``with`` body; while queued, ``waiting(place)`` is called about
        every ``poll_s`` seconds outside the gate's lock (it may raise, e.g. to cancel: the job
        then leaves the queue)."""
        depth = getattr(self._held, "depth", 0)
        if depth:
            self._held.depth = depth + 1
            try:
                yield
            finally:
                self._held.depth = depth
            return
        ticket = object()
        with self._cond:
            self._queue.append(ticket)
        try:
            while True:
                with self._cond:
                    ahead = self._queue.index(ticket)
                    if ahead == 0 and self._running < self.slots:
                        self._queue.popleft()
                        self._running += 1
                        break
                    place = Place(ahead, self._running, self.slots)
                if waiting is not None:
                    waiting(place)
                with self._cond:
                    self._cond.wait(poll_s)
        except BaseException:
            with self._cond:
                if ticket in self._queue:
                    self._queue.remove(ticket)
                self._cond.notify_all()
            raise
        self._held.depth = 1
        try:
            yield
        finally:
            self._held.depth = 0
            with self._cond:
                self._running -= 1
                self._cond.notify_all()
