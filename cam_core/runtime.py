"""Process-wide settings chosen deliberately, in one place: torch's intra-op threads, denormals.

torch starts one intra-op thread per core. On a server shared by sessions (or beside any other
load) every model call then competes for every core: a 512² forward measured 4.34 s with the
default threads against 0.41 s with one, on a 2-core machine under load
(``scripts/measure_threads.py`` gives the figures in the README). Each entry point
(app launcher, CLI) calls :func:`configure_threads` once; ``SEGCAM_TORCH_THREADS`` overrides it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from cam_core import settings

THREADS_ENV = settings.env_name("torch_threads")
# Defaults per kind of process; see README "Threads" for the measurements behind them.
# Half the cores (1 on 2 cores): leaves room for the server, numpy/OpenCV rendering and other
# processes; model calls are serialised per model anyway, so more threads only help when idle.
SERVER_THREADS = max(1, (os.cpu_count() or 1) // 2)
CLI_THREADS: int | None = None  # one job owns the machine: torch's own default (one per core)


def configure_threads(default: int | None) -> int:
    """Set torch's intra-op threads from ``$SEGCAM_TORCH_THREADS`` or ``default`` (None: torch's own).

    Returns the number in effect. A bad value in the variable is reported and the default used.
    """
    import torch

    wanted = settings.current().torch_threads or default
    if wanted is not None and torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)
    return torch.get_num_threads()


LOADAVG = Path("/proc/loadavg")


def idle_cores(loadavg: Path = LOADAVG) -> int:
    """Cores of this process's CPU set that no other task wants right now; 0 where unknown.

    Linux's ``/proc/loadavg`` counts the tasks runnable at this instant (its fourth field,
    ``running/total``), the reading thread included; a momentary figure, which is what a job of
    a second needs (the load averages lag by a minute).
    """
    try:
        running = int(loadavg.read_text().split()[3].split("/")[0])
        cores = len(os.sched_getaffinity(0))
    except (OSError, ValueError, IndexError, AttributeError):
        return 0
    return max(0, cores - max(0, running - 1))


@contextlib.contextmanager
def spare_cores() -> Iterator[int]:
    """Torch's intra-op threads raised to the cores idle right now, for one short interactive job.

    The server runs models on few threads because under load more lose (see the module's
    docstring), but a click on a large image waits for one tile's pass, which all the cores of an
    idle machine run faster (README *Threads*, one session on an idle machine: 0.30 s on one
    thread, 0.23 s on two). Where the browser shares the machine (the tests) the cores are seldom
    idle at the click, and nothing changes. The number is this thread's
    (torch's OpenMP setting is per thread) and is put back after, also on an error; an explicit
    ``SEGCAM_TORCH_THREADS`` is kept as chosen. Yields the threads in effect.
    """
    import torch

    before = torch.get_num_threads()
    wanted = before if settings.current().torch_threads else max(before, idle_cores())
    if wanted != before:
        torch.set_num_threads(wanted)
    try:
        yield wanted
    finally:
        if wanted != before:
            torch.set_num_threads(before)


@contextlib.contextmanager
def denormals_flushed() -> Iterator[None]:
    """Flush denormal floats (below ~1e-38) to zero in torch's CPU kernels while the block runs.

    A model with randomised weights (the sanity check) lets activations shrink layer after layer
    into the denormal range, where CPU arithmetic is slow: a 256² forward of the fully
    randomised built-in model took 1.66 s against 0.34 s with flushing (same loaded machine).
    Values that small carry no information for a CAM. The setting is the calling thread's CPU
    state, which a server reuses for other sessions' work, so it is switched off again after
    (torch has no getter: "off" is torch's default and nothing else here switches it on).
    """
    import torch

    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)
