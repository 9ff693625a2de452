"""The one cache of loaded registry versions: bundles for the server, indexes and FAQ models for retrieval.

A :class:`VersionCache` maps ``(name, version)`` to a loaded object:

- **loaded once**: concurrent callers of one key wait for a single load (other keys load meanwhile), and
  :attr:`VersionCache.loads` counts the loads, so a test (or ``/metrics``) can see that the Label Studio
  ``/predict`` path and ``/v1`` share them;
- **bounded by count**, least recently used first out (a hit refreshes the key);
- **a new version replaces the old ones**: storing version ``v`` of a name drops its versions below ``v``, so
  a retrain's model frees the one it replaces as soon as it is loaded. An older version asked for by number
  (``/v1/models/x/versions/1/predict``) is loaded again and lives under the count bound like any other.

Loading happens outside the cache's lock, so a slow load (a bundle of several hundred MB) never blocks hits.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

Key = tuple[str, int]


class VersionCache(Generic[T]):
    """Loaded objects by ``(name, version)``; ``load(name, version)`` makes one on a miss."""

    def __init__(self, load: Callable[[str, int], T], max_entries: int = 16) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._load = load
        self.max_entries = max_entries
        self.loads = 0  # how many times ``load`` has returned (hits do not count)
        self._entries: OrderedDict[Key, T] = OrderedDict()
        self._gates: dict[Key, threading.Lock] = {}  # one per key being loaded
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> list[Key]:
        """The cached keys, least recently used first."""
        with self._lock:
            return list(self._entries)

    def peek(self, name: str, version: int) -> T | None:
        """The cached object, or None (never loads)."""
        with self._lock:
            return self._hit((name, version))

    def newest(self, name: str) -> tuple[int, T] | None:
        """The highest cached version of ``name`` and its object, or None."""
        with self._lock:
            versions = [v for n, v in self._entries if n == name]
            return (max(versions), self._entries[(name, max(versions))]) if versions else None

    def loading(self, name: str, version: int) -> bool:
        """Whether a load of this key is running now (another thread's)."""
        return (name, version) in self._gates

    def get(self, name: str, version: int) -> T:
        """The object of ``(name, version)``, loaded on the first call (once, however many threads ask)."""
        key = (name, version)
        with self._lock:
            hit = self._hit(key)
            if hit is not None:
                return hit
            gate = self._gates.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                hit = self._hit(key)
                if hit is not None:
                    return hit
            try:
                value = self._load(name, version)
                with self._lock:
                    self.loads += 1
                    self._store(key, value)
                return value
            finally:
                with self._lock:
                    if self._gates.get(key) is gate:
                        del self._gates[key]

    def put(self, name: str, version: int, value: T) -> None:
        """Store an object made here (e.g. an index just saved as a new version); same rules as a load."""
        with self._lock:
            self._store((name, version), value)

    def forget(self, name: str) -> None:
        """Drop every cached version of ``name``."""
        with self._lock:
            for key in [k for k in self._entries if k[0] == name]:
                del self._entries[key]

    def _hit(self, key: Key) -> T | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def _store(self, key: Key, value: T) -> None:
        name, version = key
        for old in [k for k in self._entries if k[0] == name and k[1] < version]:
            del self._entries[old]  # a new version replaces the older ones
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
