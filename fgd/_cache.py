"""fgd's own caches: bounded, named, and cleared together by `clear_caches`.

fgd keeps a few small caches so that repeated calls skip work (which compiled
chunk a spec needs, an optimizer's NaN-skipping wrapper, the examples-first
copy of the last mini-batch data set). Each is an `LRU` registered here, of
a documented size, so that a long loop over configurations cannot grow them
without bound, and `fgd.clear_caches()` empties all of them together with
JAX's own compilation caches.
"""
from __future__ import annotations

import collections
import threading
from typing import Any, Callable, Hashable

import jax

_REGISTRY: list["LRU"] = []


class LRU:
    """A thread-safe least-recently-used mapping of at most `size` entries."""

    def __init__(self, name: str, size: int):
        self.name, self.size = name, size
        self._data: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()
        _REGISTRY.append(self)

    def get(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """The value for `key`, made by `make()` (and remembered) when missing."""
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        value = make()
        self.put(key, value)
        return value

    def peek(self, key: Hashable) -> Any:
        """The value for `key`, or None when missing."""
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        return None

    def put(self, key: Hashable, value: Any) -> None:
        """Remember `value` for `key` (replacing any)."""
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


def cache_sizes() -> dict[str, int]:
    """name -> entries held, for every fgd cache."""
    return {c.name: len(c) for c in _REGISTRY}


def clear_caches() -> None:
    """Empty every fgd cache and JAX's compilation caches (`jax.clear_caches`).

    A long loop over many configurations (shapes, losses, optimizer
    structures) compiles a program for each; JAX keeps them all. Call this
    between groups of configurations to release their memory; the next call
    of each compiles again.
    """
    for c in _REGISTRY:
        c.clear()
    jax.clear_caches()
