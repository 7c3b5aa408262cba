"""A bounded, expiring in-memory map (least recently used first out) with a write fence."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRUCache(Generic[K, V]):
    """At most ``max_entries`` entries, each kept ``ttl`` seconds; when full, the least
    recently used goes. Values are never None (None means a miss).

    ``generation`` changes with every invalidation (``discard``, ``clear``). A look-up
    notes it before it reads its source and hands it to ``put``, which stores only if no
    invalidation happened meanwhile: a read that overlapped a write (a revoked token, a
    switched route) never stores what it read after the write dropped the entry. Safe to
    use from the event loop and worker threads at once."""

    def __init__(
        self, max_entries: int, ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self.ttl = ttl
        self.clock = clock
        self.generation = 0
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` has an entry, live or expired (no recency change)."""
        return key in self._entries

    def get(self, key: K) -> V | None:
        """The live value of ``key`` (now the most recently used), or None. An expired
        entry stays until it is stored again or pushed out: it still says what the key
        was last (see ``in``), while its owner reloads it."""
        with self._lock:
            hit = self._entries.get(key)
            if hit is None or self.clock() - hit[0] >= self.ttl:
                return None
            self._entries.move_to_end(key)
            return hit[1]

    def put(self, key: K, value: V, generation: int) -> bool:
        """Store what was read at ``generation``, unless an invalidation came since."""
        with self._lock:
            if generation != self.generation:
                return False
            self._entries[key] = (self.clock(), value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
            return True

    def pop(self, key: K) -> None:
        """Drop one entry that is no longer good (expired), fencing off no reader."""
        with self._lock:
            self._entries.pop(key, None)

    def discard(self, key: K) -> None:
        """Invalidate one entry: reads under way may not store theirs."""
        with self._lock:
            self.generation += 1
            self._entries.pop(key, None)

    def clear(self) -> None:
        """Invalidate every entry: reads under way may not store theirs."""
        with self._lock:
            self.generation += 1
            self._entries.clear()
