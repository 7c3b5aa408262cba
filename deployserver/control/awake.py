"""Pausing and waking a deployment's replicas, for the reconciler (an idle model) and for
the data path (a request for a paused model), one at a time per deployment.

Both hold the deployment's lock, so a wake never interleaves with a pause: a request
that arrives while its model is being paused waits for the pause, then wakes it. A pause
first takes the replicas out of the route table, then freezes them once they have
finished what they were answering."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict

from deployserver.control.autoscale import LoadView
from deployserver.control.cells import Cells
from deployserver.control.steps import Steps
from deployserver.domain import ReplicaState

log = logging.getLogger(__name__)
AWAKE_KEPT = 10_000
"""Most cell ids remembered as woken (and not paused since)."""


class Awake:
    def __init__(
        self,
        steps: Steps,
        cells: Cells,
        load: LoadView,
        *,
        drain_timeout: float,
    ) -> None:
        self.steps = steps
        self.cells = cells
        self.load = load
        self.drain_timeout = drain_timeout
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._awake: set[str] = set()
        """Cells woken here and not paused since: every held request asks to wake its
        model, and only the first one does."""

    async def drain(self, cell_ids: list[str], timeout: float) -> None:
        """Wait until none of ``cell_ids`` answers a request, or ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while any(self.load.outstanding(c) for c in cell_ids) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    async def pause(self, deploy_id: str, cell_ids: list[str], idle: str) -> bool:
        """Freeze ``cell_ids`` unless a request came meanwhile; whether it did."""
        async with self._locks[deploy_id]:
            if self.load.inflight(deploy_id):
                return False  # woken meanwhile: the autoscaler sees it next pass
            self._awake.difference_update(cell_ids)
            event = f"paused {len(cell_ids)} replica(s): {idle}"
            await self.steps.replica_state(deploy_id, cell_ids, ReplicaState.PAUSED, event)
            await self.drain(cell_ids, self.drain_timeout)
            for cell_id in cell_ids:
                try:
                    await self.cells.pause(cell_id)
                except LookupError:
                    log.info("replica %s of %s is gone; not paused", cell_id[:12], deploy_id)
            return True

    async def resume(self, deploy_id: str, cell_ids: list[str]) -> list[str]:
        """Thaw ``cell_ids`` and put them back in the route table (each once, however
        many requests ask at the same time); those of them that are awake now."""
        async with self._locks[deploy_id]:
            todo = [c for c in cell_ids if c not in self._awake]
            if not todo:
                return [c for c in cell_ids if c in self._awake]
            if len(self._awake) > AWAKE_KEPT:
                self._awake.clear()
            started = time.perf_counter()
            woken = []
            for cell_id in todo:
                try:
                    await self.cells.resume(cell_id)
                except LookupError:  # removed meanwhile: a cold start is needed instead
                    log.info("replica %s of %s is gone; not woken", cell_id[:12], deploy_id)
                    continue
                woken.append(cell_id)
                self._awake.add(cell_id)
            took = (time.perf_counter() - started) * 1000
            message = f"woke {len(woken)} replica(s) from paused in {took:.0f} ms"
            await self.steps.woke(deploy_id, woken, message)
            return [c for c in cell_ids if c in self._awake]
