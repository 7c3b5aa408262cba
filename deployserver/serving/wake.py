"""Requests for a model with no running replica: held while it wakes, then answered.

A paused model is thawed here, on the request's own path (milliseconds); a model scaled
to zero counts the held request as in flight and wakes the reconciler, whose autoscaler
then wants a replica at once. Held requests wait, in a bounded queue per model, for the
route table to show a ready replica; one more than the bound is answered 429 with
``Retry-After``, and one that waits past ``wake_timeout`` 503.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any

from deployserver.config import Settings
from deployserver.errors import ModelNotFound, ModelWaking, NoReadyCell
from deployserver.serving.balance import Load
from deployserver.serving.routetable import Route, RouteTable

POLL = 0.01
"""Seconds between two looks at a waking model's route (a look is a cache hit until
the reconciler records a change)."""
RETRY_AFTER = 1.0


class Waker:
    def __init__(
        self,
        settings: Settings,
        routes: RouteTable,
        load: Load,
        *,
        resume: Callable[[str, list[str]], Coroutine[Any, Any, list[str]]],
        nudge: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.routes = routes
        self.load = load
        self.resume = resume
        self.nudge = nudge
        self._held: defaultdict[str, int] = defaultdict(int)
        self._tasks: set[asyncio.Task[None]] = set()

    def held(self, model: str) -> int:
        return self._held.get(model, 0)

    def start(self, route: Route) -> None:
        """Begin waking ``route``'s model without waiting (asynchronous predictions)."""
        if route.paused and route.deploy_id:
            cells = [r.cell_id for r in route.paused]
            task = asyncio.create_task(self._resume(route.deploy_id, cells))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self.nudge()

    async def _resume(self, deploy_id: str, cells: list[str]) -> None:
        await self.resume(deploy_id, cells)

    async def ready_route(self, route: Route) -> Route:
        """``route`` once its model has a ready replica; ModelWaking (429) past the
        queue's bound, NoReadyCell (503) when it does not wake in time."""
        model = route.model
        if self._held[model] >= self.settings.wake_queue:
            raise ModelWaking(
                f"model {model!r} is waking and {self._held[model]} requests already wait",
                retry_after=RETRY_AFTER,
            )
        self._held[model] += 1
        started = time.monotonic()
        try:
            with self.load.request(route.deploy_id):
                if route.paused and route.deploy_id:  # thawed on this request's path
                    cells = [r.cell_id for r in route.paused]
                    awake = set(await self.resume(route.deploy_id, cells))
                    self.nudge()
                    thawed = tuple(r for r in route.paused if r.cell_id in awake)
                    if thawed:  # they answer now: the route table hears of it after
                        return replace(route, replicas=thawed, paused=(), wakeable=False)
                self.start(route)
                return await self._wait(route, started + self.settings.wake_timeout)
        finally:
            self._held[model] -= 1
            if not self._held[model]:
                del self._held[model]

    async def _wait(self, route: Route, deadline: float) -> Route:
        model = route.model
        nudged = time.monotonic()
        while time.monotonic() < deadline:
            await asyncio.sleep(POLL)
            fresh = await self.routes.resolve(model)
            if fresh is None:
                raise ModelNotFound(f"no model {model!r}")
            if fresh.replicas:
                return fresh
            if not fresh.wakeable:
                break
            if fresh.paused != route.paused or time.monotonic() - nudged > 1.0:
                route, nudged = fresh, time.monotonic()
                self.start(route)  # paused since, or the reconciler missed it: ask again
        raise NoReadyCell(f"model {model!r} did not wake in {self.settings.wake_timeout:g} s")
