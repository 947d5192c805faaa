"""A small thread-safe LRU cache bounded in entries and in bytes.

The app keeps one per process for captures (activations + gradients of one image and target):
they are what makes switching method or layer instant, and also what could grow without bound
when a lab shares one server.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np


def nbytes(value: Any) -> int:
    """Approximate memory of a value: numpy arrays and tensors inside dicts, lists and dataclasses."""
    seen: set[int] = set()

    def walk(v: Any) -> int:
        if id(v) in seen:
            return 0
        seen.add(id(v))
        if isinstance(v, np.ndarray):
            return int(v.nbytes)
        if hasattr(v, "element_size") and hasattr(v, "nelement"):
            return int(v.element_size() * v.nelement())
        if isinstance(v, dict):
            return sum(walk(x) for x in v.values())
        if isinstance(v, (list, tuple)):
            return sum(walk(x) for x in v)
        if hasattr(v, "__dict__"):
            return walk(vars(v))
        return 0

    return walk(value)


class LRUCache:
    """Least-recently-used cache with a cap on distinct values and on total bytes.

    One value may be stored under several keys (a capture under its target, its resolved class
    and as the image's base): it counts once against both caps, so aliases never crowd out
    other images (counting keys, a 12-entry cache held about 3 images).
    """

    def __init__(self, max_entries: int = 16, max_bytes: int = 1 << 30, sizeof: Callable[[Any], int] = nbytes):
        self.max_entries, self.max_bytes, self._sizeof = max_entries, max_bytes, sizeof
        self._data: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._reserved: dict[Hashable, int] = {}  # memory held elsewhere that counts against the budget
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                self.hits += 1
                return self._data[key][0]
            self.misses += 1
            return None

    def put(self, key: Hashable, value: Any) -> None:
        size = self._sizeof(value)
        with self._lock:
            self._data.pop(key, None)
            if size > self.max_bytes:
                return  # larger than the whole budget: compute again next time rather than evict all
            self._data[key] = (value, size)
            self._evict()

    def _evict(self) -> None:
        while self._data and (self.distinct > self.max_entries or self.total_bytes > self.max_bytes):
            self._data.popitem(last=False)

    @property
    def distinct(self) -> int:
        """Distinct values held (a value under several keys is one)."""
        return len({id(v) for v, _ in self._data.values()})

    def reserve(self, key: Hashable, nbytes: int) -> None:
        """Count memory held outside the cache (e.g. a kept autograd graph) against its byte
        budget, evicting the oldest entries to make room. A second reserve under a key replaces it."""
        with self._lock:
            self._reserved[key] = int(nbytes)
            self._evict()

    def release(self, key: Hashable) -> None:
        with self._lock:
            self._reserved.pop(key, None)

    @property
    def total_bytes(self) -> int:
        """Bytes held, counting a value stored under several keys once, plus reserved memory."""
        return sum({id(v): size for v, size in self._data.values()}.values()) + sum(self._reserved.values())

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._reserved.clear()
            self.hits = self.misses = 0
