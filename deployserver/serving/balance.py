"""Requests in flight, and which replica takes the next one.

``Load`` counts what each replica is answering and each deployment has in flight (held
while it wakes, and queued asynchronous predictions, too), and integrates the latter
over time for the autoscaler (a ``LoadView``). ``choose`` is the one balancing rule of
/serve, gRPC and asynchronous predictions: of two replicas drawn at random, the one with
fewer requests outstanding ("the power of two choices": near the best spread, with no
herd all rushing to the same least-loaded one). A replica that could not be reached is
taken out at once, for a few seconds, until the route table has news of it.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from deployserver.serving.routetable import Replica

EJECT_SECONDS = 5.0
"""How long a replica that refused a connection gets no request (unless it is the last)."""


@dataclass
class _Flow:
    count: int = 0
    area: float = 0.0
    since: float = 0.0
    last_active: float | None = None


class Load:
    """``clock`` counts the autoscaler's seconds (tests move it by hand); taking a replica
    out always counts real ones (``eject_clock``)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        eject_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock
        self.eject_clock = eject_clock
        self._cells: defaultdict[str, int] = defaultdict(int)
        self._flows: dict[str, _Flow] = {}
        self._queued: dict[str, int] = {}
        self._ejected: dict[str, float] = {}

    # counting -----------------------------------------------------------------------
    def _move(self, deploy_id: str | None, step: int) -> None:
        if deploy_id is None:
            return
        now = self.clock()
        flow = self._flows.setdefault(deploy_id, _Flow(since=now))
        flow.area += flow.count * (now - flow.since)
        flow.since = now
        flow.count += step
        flow.last_active = now

    @contextmanager
    def request(self, deploy_id: str | None, cell_id: str | None = None) -> Iterator[None]:
        """Count one request to ``deploy_id`` (and ``cell_id``) while the block runs."""
        self._move(deploy_id, 1)
        if cell_id is not None:
            self._cells[cell_id] += 1
        try:
            yield
        finally:
            self._move(deploy_id, -1)
            if cell_id is not None:
                self._cells[cell_id] -= 1
                if not self._cells[cell_id]:
                    del self._cells[cell_id]

    def queued(self, waiting: dict[str, int]) -> None:
        """Queued asynchronous predictions per deployment (replacing the last count):
        they want a replica as much as requests in flight do."""
        for deploy_id in set(self._queued) | set(waiting):
            step = waiting.get(deploy_id, 0) - self._queued.get(deploy_id, 0)
            if step:
                self._move(deploy_id, step)
        self._queued = {d: n for d, n in waiting.items() if n}

    # LoadView -----------------------------------------------------------------------
    def inflight(self, deploy_id: str) -> int:
        flow = self._flows.get(deploy_id)
        return flow.count if flow else 0

    def area(self, deploy_id: str) -> float:
        flow = self._flows.get(deploy_id)
        if flow is None:
            return 0.0
        return flow.area + flow.count * (self.clock() - flow.since)

    def last_active(self, deploy_id: str) -> float | None:
        flow = self._flows.get(deploy_id)
        if flow is None:
            return None
        return self.clock() if flow.count else flow.last_active

    def outstanding(self, cell_id: str) -> int:
        return self._cells.get(cell_id, 0)

    # balancing ----------------------------------------------------------------------
    def eject(self, cell_id: str) -> None:
        """``cell_id`` could not be reached: no requests for it for a while."""
        self._ejected[cell_id] = self.eject_clock() + EJECT_SECONDS

    def _out(self, cell_id: str, now: float) -> bool:
        until = self._ejected.get(cell_id)
        if until is None:
            return False
        if until <= now:
            del self._ejected[cell_id]
            return False
        return True

    def choose(self, replicas: Sequence[Replica], tried: Sequence[str] = ()) -> Replica | None:
        """The replica for the next request: of two drawn at random among those not
        ``tried`` and not taken out, the one answering fewer; None when none is left."""
        now = self.eject_clock()
        left = [r for r in replicas if r.cell_id not in tried]
        healthy = [r for r in left if not self._out(r.cell_id, now)]
        pool = healthy or left
        if len(pool) <= 1:
            return pool[0] if pool else None
        a, b = random.sample(pool, 2)
        return a if self.outstanding(a.cell_id) <= self.outstanding(b.cell_id) else b
