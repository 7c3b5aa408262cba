"""The reconciler: converges what really runs with what the database wants.

Level-triggered: each pass reads every deployment that wants something and every cell
the runtime owns, decides one action per deployment (:func:`decide`, a pure function)
and runs it as a task; a deployment never has two actions at once. After a crash the
next pass simply starts again from what it finds: running cells of known deployments are
adopted (not restarted), cells of unknown deployments are removed. Each pass first asks
the autoscaler (:mod:`autoscale`) how many replicas each ready deployment wants. Its
database steps are :class:`Steps`, its runtime calls :class:`Cells`, what it does to
replicas :class:`Actions`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import replace

import aiohttp
import anyio
import httpx
from sqlalchemy.orm import Session, sessionmaker

from deployserver.config import Settings
from deployserver.control.actions import Actions
from deployserver.control.autoscale import Autoscaler, LoadView, NoLoad
from deployserver.control.awake import Awake
from deployserver.control.cells import Cells
from deployserver.control.decide import Action, Wanted, decide
from deployserver.control.health_gate import HealthPolicy, ping_all
from deployserver.control.service import Service
from deployserver.control.steps import Steps
from deployserver.domain import DeploymentStatus, DesiredState, ReplicaState
from deployserver.runtime.base import CellInfo, CellRuntime

log = logging.getLogger(__name__)
ORPHANS = "orphan"


class Reconciler(Service):
    """Runs passes; tests call ``run_once`` and ``settle`` directly."""

    name = "reconciler"

    def __init__(
        self,
        *,
        settings: Settings,
        sessions: sessionmaker[Session],
        runtime: CellRuntime,
        http: httpx.AsyncClient,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_change: Callable[[str], None] = lambda _model: None,
        load: LoadView | None = None,
        scale_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.runtime = runtime
        self.http = http
        self.clock = clock
        self.sleep = sleep
        self.steps = Steps(sessions, on_change)
        self.cells = Cells(runtime, settings)
        self.policy = HealthPolicy(
            first_delay=settings.health_first_delay,
            max_delay=settings.health_max_delay,
            deadline=settings.health_deadline,
            ping_timeout=settings.health_ping_timeout,
        )
        self.load: LoadView = load or NoLoad()
        self.autoscaler = Autoscaler(settings, self.load, scale_clock)
        self.awake = Awake(self.steps, self.cells, self.load, drain_timeout=settings.drain_timeout)
        self.actions = Actions(
            settings=settings,
            steps=self.steps,
            cells=self.cells,
            awake=self.awake,
            http=http,
            policy=self.policy,
            clock=clock,
            sleep=sleep,
        )
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._watch_task: asyncio.Task[None] | None = None
        self._watch_http: aiohttp.ClientSession | None = None
        """The watch's own client (aiohttp: cheaper per ping than httpx), made in the loop."""
        self._last_watch = float("-inf")
        self.passes = 0
        self.idle_backoff = settings.idle_pass_backoff

    @property
    def interval(self) -> float:
        return self.settings.reconcile_interval

    def idle(self) -> bool:
        return all(t.done() for t in self._tasks.values())

    def longest_wait(self) -> float:
        """Never past the next round of the health watch."""
        watch_due = self._last_watch + self.settings.watch_interval - self.clock()
        return min(super().longest_wait(), watch_due)

    async def wait_for(self, done: Callable[[], bool], timeout: float) -> bool:
        """Nudge passes until ``done()`` (checked after each pass) or ``timeout`` s pass."""
        deadline = self.clock() + timeout
        while self.clock() < deadline:
            if await anyio.to_thread.run_sync(done):
                return True
            self.wake()
            await asyncio.sleep(0.05)
        return bool(await anyio.to_thread.run_sync(done))

    # the loop ---------------------------------------------------------------------
    async def run_once(self) -> None:
        """One pass: start an action for every deployment that needs one."""
        self.passes += 1
        self._tasks = {k: t for k, t in self._tasks.items() if not t.done()}
        wanted = await self._autoscale(await self.steps.wanted())
        found: dict[str, list[CellInfo]] = defaultdict(list)
        for info in await self.cells.all():
            found[info.deploy_id].append(info)
        known = await self.steps.known(set(found))
        for w in wanted:
            if w.deploy_id not in self._tasks:
                cells = found.get(w.deploy_id, [])
                action = decide(w, cells)
                if action is not None:
                    self._spawn(w.deploy_id, action, self._act(action, w, cells))
        for deploy_id, infos in found.items():
            if deploy_id not in known and deploy_id not in self._tasks:
                self._spawn(deploy_id, ORPHANS, self.cells.remove_orphans(deploy_id, infos))
        # The watch runs beside the passes, never inside one: however slowly cells answer,
        # the next pass still starts, stops and replaces deployments. One at a time.
        due = self.clock() - self._last_watch >= self.settings.watch_interval
        if due and not self.watching:
            self._last_watch = self.clock()
            self._watch_task = asyncio.create_task(self._watch(wanted, found), name="watch")

    @property
    def watching(self) -> bool:
        """Whether a round of health pings of ready cells is under way."""
        return self._watch_task is not None and not self._watch_task.done()

    async def settle(self, passes: int = 200) -> None:
        """Run passes until nothing is left to do (for tests and benchmarks)."""
        for _ in range(passes):
            await self.run_once()
            if not self._tasks:
                return
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        raise RuntimeError("the reconciler did not settle")

    async def close(self) -> None:
        tasks = [*self._tasks.values(), *([self._watch_task] if self._watch_task else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._watch_http is not None:
            await self._watch_http.close()

    def _spawn(self, deploy_id: str, action: str, work: Awaitable[None]) -> None:
        async def guarded() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("%s of %s failed", action, deploy_id)
                await self.steps.fail(deploy_id, f"internal error during {action}: {exc}")

        self._tasks[deploy_id] = asyncio.create_task(guarded(), name=f"{action}:{deploy_id}")

    def _act(self, action: Action, w: Wanted, found: list[CellInfo]) -> Awaitable[None]:
        a = self.actions
        match action:
            case Action.RISE:
                return a.rise(w, found)
            case Action.RESTART:
                return a.restart(w, found)
            case Action.RECOVER:
                return a.recover(w, found)
            case Action.STOP:
                return a.stop(w, found)
            case Action.CLEAN:
                return a.clean(w, found)
            case Action.ACTIVATE:
                return self.steps.settle_activation(w.deploy_id)
            case Action.DELETE:
                return self._delete(w, found)
            case Action.SCALE_UP:
                return a.scale_up(w, found)
            case Action.SCALE_DOWN:
                return a.scale_down(w, found)
            case Action.PAUSE:
                return a.pause(w, found)
            case Action.RESUME:
                return a.resume(w, found)

    async def _delete(self, w: Wanted, found: list[CellInfo]) -> None:
        await self.cells.remove(w.deploy_id, found)
        await self.steps.forget(w.deploy_id, w.model)
        await self.cells.remove_files(w.deploy_id)
        log.info("deleted deployment %s (%s v%d)", w.deploy_id, w.model, w.version)

    # the autoscaler -----------------------------------------------------------------
    async def _autoscale(self, wanted: list[Wanted]) -> list[Wanted]:
        """Each ready deployment's target from the autoscaler, recorded when it changed;
        the snapshots as they are now."""
        out = []
        for w in wanted:
            ready = w.status is DeploymentStatus.READY and w.desired_state is DesiredState.RUNNING
            if not ready or w.restart_requested:
                out.append(w)
                continue
            t = self.autoscaler.target(w)
            if (t.desired, t.paused, t.tier) != (w.desired_replicas, w.paused, w.tier):
                await self.steps.scaled(w.deploy_id, t.desired, t.paused, t.tier, t.message)
                w = replace(w, desired_replicas=t.desired, paused=t.paused, tier=t.tier)
            out.append(w)
        self.autoscaler.forget({w.deploy_id for w in wanted})
        return out

    # health watch -----------------------------------------------------------------
    async def _watch(self, wanted: list[Wanted], found: dict[str, list[CellInfo]]) -> None:
        """Ping every ready cell once; record when each last answered."""
        try:
            await self._ping_ready_cells(wanted, found)
        except Exception:  # a task nobody awaits: say what went wrong, the next round retries
            log.exception("health watch failed")

    async def _ping_ready_cells(
        self, wanted: list[Wanted], found: dict[str, list[CellInfo]]
    ) -> None:
        ready = {
            r.cell_id
            for w in wanted
            if w.status is DeploymentStatus.READY and w.deploy_id not in self._tasks
            for r in w.live
            if r.state is ReplicaState.READY
        }
        targets = [
            (c.id, c.url)
            for cells in found.values()
            for c in cells
            if c.running and not c.paused and c.id in ready and c.url
        ]
        if not targets:
            return
        if self._watch_http is None:
            self._watch_http = aiohttp.ClientSession()
        verdicts = await ping_all(
            self._watch_http,
            [url for _, url in targets],
            self.policy.ping_timeout,
            self.settings.watch_concurrency,
        )
        healthy = [d for (d, _), v in zip(targets, verdicts, strict=True) if v and v.ready]
        if healthy:
            await self.steps.touch(healthy, self.settings.crash_forgive_seconds)
