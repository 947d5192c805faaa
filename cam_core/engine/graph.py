"""The engine's state per loaded model: the kept autograd graph and the pass counters.

Kept here, keyed (weakly) by the :class:`~cam_core.model.models.LoadedModel`, so the model layer
knows nothing of captures: a model object is a model, its spec, its device and its lock. The
graph lets another target on the same image cost one backward; the counters let tests and the
server's log prove what a slider move or a recapture cost.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from cam_core.model.models import LoadedModel

PASS_KINDS = ("forward", "backward", "method_runs", "fallback")


@dataclass
class RetainedGraph:
    """The autograd graph of a model's latest capture, kept so another target costs one backward."""

    capture_id: int
    logits: torch.Tensor
    outputs: dict[str, torch.Tensor]
    nbytes: int  # memory of the tensors autograd saved for the backward


@dataclass
class EngineState:
    """What the engine remembers about one loaded model. ``passes["fallback"]``: recaptures that
    found another capture's graph kept and ran a full pass instead."""

    passes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PASS_KINDS, 0))
    retained: RetainedGraph | None = None


_STATES: weakref.WeakKeyDictionary[LoadedModel, EngineState] = weakref.WeakKeyDictionary()


def state(loaded: LoadedModel) -> EngineState:
    """This model's engine state (created on first use, gone with the model)."""
    got = _STATES.get(loaded)
    if got is None:
        got = _STATES.setdefault(loaded, EngineState())
    return got


def passes(loaded: LoadedModel) -> dict[str, int]:
    """Model passes the engine made with this model, by kind (see :data:`PASS_KINDS`)."""
    return state(loaded).passes


def kept(loaded: LoadedModel) -> RetainedGraph | None:
    """The kept graph of this model's latest capture, if any."""
    return state(loaded).retained


def keep(loaded: LoadedModel, graph: RetainedGraph | None) -> None:
    """Replace the kept graph (the caller holds the model's lock)."""
    state(loaded).retained = graph


def drop_graph(loaded: LoadedModel) -> None:
    """Free the kept graph (e.g. when it does not fit a memory budget)."""
    with loaded.lock:
        state(loaded).retained = None


@contextlib.contextmanager
def measure_saved(enabled: bool) -> Iterator[list[int]]:
    """Bytes of the tensors autograd saves for the backward (each storage once)."""
    total = [0]
    if not enabled:
        yield total
        return
    seen: set[int] = set()

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total[0] += storage.nbytes()
        # Detached (same storage, no grad_fn): an op's saved *output* packed as itself would make
        # a node → tensor → node cycle that no garbage collector frees, leaking every kept graph
        # (~290 MB per 512² capture; found by scripts/measure_memory.py, tested).
        return t.detach()

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield total
