"""Who waits on an asynchronous prediction (a long poll, a blocking compatibility call),
and how a prediction this server runs is handed to them the moment it ends: its ending is
passed in memory, so a waiter answers without reading the row again."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

import anyio

from deployserver.domain import FINISHED_PREDICTIONS
from deployserver.store import orm
from deployserver.store.predictions import Ending


@dataclass(frozen=True)
class Ended:
    """How a prediction this server ran ended, and when."""

    ending: Ending
    completed_at: datetime

    def apply(self, p: orm.Prediction) -> orm.Prediction:
        """``p`` (a record read before it ended, detached) as it is stored now."""
        e = self.ending
        p.status, p.deploy_id, p.result, p.error = e.status, e.deploy_id, e.result, e.error
        p.result_bytes, p.result_offset, p.result_type = (
            e.result_bytes,
            e.result_offset,
            e.result_type,
        )
        p.completed_at = self.completed_at
        return p


class Waiters:
    """Events per waited request id, the requests running here, and the endings of those
    someone waits on. Every method runs on the event loop, so a waiter that registers
    while its prediction runs here is always told when it ends."""

    def __init__(self) -> None:
        self.running: set[str] = set()
        """Request ids this server is running now."""
        self._events: dict[str, asyncio.Event] = {}
        self._count: dict[str, int] = defaultdict(int)
        self._ended: dict[str, Ended] = {}

    def started(self, request_id: str) -> None:
        self.running.add(request_id)

    def notify(self, request_id: str, ended: Ended | None) -> None:
        """``request_id`` stopped running here: ended as ``ended``, or (None) requeued,
        failed for good or deleted, which its waiters read from the database."""
        self.running.discard(request_id)
        event = self._events.get(request_id)
        if event is None:
            return
        if ended is not None:
            self._ended[request_id] = ended
        event.set()

    async def wait(
        self,
        request_id: str,
        timeout: float,
        *,
        read: Callable[[], Awaitable[orm.Prediction | None]],
        current: orm.Prediction | None,
        interval: float,
        clock: Callable[[], float],
    ) -> orm.Prediction | None:
        """The prediction once it has ended, or as it is after ``timeout`` seconds; None
        when it is gone. ``current`` is the record as just read, if the caller has it.
        The database is read only when this server is not running it (another server may
        be), at each ``interval``, and after it stopped running here without an ending."""
        event = self._events.setdefault(request_id, asyncio.Event())
        self._count[request_id] += 1
        deadline = clock() + timeout
        try:
            found = current
            if found is None or request_id not in self.running:
                found = await read()  # it may have ended before we registered
            while True:
                ended = self._ended.get(request_id)
                if ended is not None and found is not None:
                    return ended.apply(found)
                left = deadline - clock()
                if found is None or found.status in FINISHED_PREDICTIONS or left <= 0:
                    return found
                with anyio.move_on_after(min(left, interval)):
                    await event.wait()
                event.clear()
                if request_id not in self.running and request_id not in self._ended:
                    found = await read()
        finally:
            self._count[request_id] -= 1
            if not self._count[request_id]:  # the last one waiting on it
                del self._count[request_id]
                self._events.pop(request_id, None)
                self._ended.pop(request_id, None)
