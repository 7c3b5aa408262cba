"""The reconciler: converges what really runs with what the database wants.

Level-triggered: each pass reads every deployment that wants something and every cell
the runtime owns, decides one action per deployment (``decide``, a pure function) and
runs it as a task; a deployment never has two actions at once. After a crash the next
pass simply starts again from what it finds: running cells of known deployments are
adopted (not restarted), cells of unknown deployments are removed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import anyio
import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from deployserver import cells, lifecycle, orm, records, storage
from deployserver.config import Settings
from deployserver.health import HealthPolicy, await_ready, ping_ready
from deployserver.runtime.base import CellInfo, CellRuntime
from deployserver.service import Service

log = logging.getLogger("deployserver.reconciler")


@dataclass(frozen=True)
class Wanted:
    """A snapshot of one deployment's row, enough to decide what to do."""

    deploy_id: str
    model: str
    version: int
    status: str
    desired_state: str
    restart_requested: bool
    cell_id: str | None
    crashes: int
    entrypoint: str
    meta: dict[str, Any]
    activation: str | None = None


def decide(w: Wanted, found: list[CellInfo]) -> str | None:
    """The one action that moves ``w`` towards its desired state, or None."""
    if w.desired_state == "deleted":
        return "delete"
    if w.desired_state == "stopped":
        return "stop" if found or w.status in lifecycle.ACTIVE_STATES else None
    if w.restart_requested:
        return "restart"
    if w.status == "failed":
        return "clean" if found else None
    if w.status == "ready":
        if any(c.running and c.id == w.cell_id for c in found):
            return "activate" if w.activation else None  # e.g. a rollback to a ready one
        return "rise" if any(c.running for c in found) else "recover"
    return "rise"  # received, stopped, or left mid-way (building/starting/stopping)


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
    ) -> None:
        super().__init__()
        self.settings = settings
        self.sessions = sessions
        self.runtime = runtime
        self.http = http
        self.clock = clock
        self.sleep = sleep
        self.on_change = on_change
        self.policy = HealthPolicy(
            first_delay=settings.health_first_delay,
            max_delay=settings.health_max_delay,
            deadline=settings.health_deadline,
        )
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._last_watch = float("-inf")
        self.passes = 0

    @property
    def interval(self) -> float:
        return self.settings.reconcile_interval

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
        wanted = await anyio.to_thread.run_sync(self._load)
        found: dict[str, list[CellInfo]] = defaultdict(list)
        for info in await anyio.to_thread.run_sync(self.runtime.list_cells):
            found[info.deploy_id].append(info)
        known = await anyio.to_thread.run_sync(self._existing, set(found))
        for w in wanted:
            if w.deploy_id not in self._tasks:
                action = decide(w, found.get(w.deploy_id, []))
                if action is not None:
                    self._spawn(
                        w.deploy_id, action, self._act(action, w, found.get(w.deploy_id, []))
                    )
        for deploy_id, infos in found.items():
            if deploy_id not in known and deploy_id not in self._tasks:
                self._spawn(deploy_id, "orphan", self._remove_orphans(deploy_id, infos))
        if self.clock() - self._last_watch >= self.settings.watch_interval:
            self._last_watch = self.clock()
            await self._watch(wanted, found)

    async def settle(self, passes: int = 200) -> None:
        """Run passes until nothing is left to do (for tests and benchmarks)."""
        for _ in range(passes):
            await self.run_once()
            if not self._tasks:
                return
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        raise RuntimeError("the reconciler did not settle")

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    def _spawn(self, deploy_id: str, action: str, work: Awaitable[None]) -> None:
        async def guarded() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("%s of %s failed", action, deploy_id)
                await anyio.to_thread.run_sync(
                    self._fail, deploy_id, f"internal error during {action}: {exc}"
                )

        self._tasks[deploy_id] = asyncio.create_task(guarded(), name=f"{action}:{deploy_id}")

    def _act(self, action: str, w: Wanted, found: list[CellInfo]) -> Awaitable[None]:
        return {
            "rise": lambda: self._rise(w, found),
            "restart": lambda: self._restart(w, found),
            "recover": lambda: self._recover(w, found),
            "stop": lambda: self._stop(w, found),
            "clean": lambda: self._remove_all(w.deploy_id, found),
            "activate": lambda: anyio.to_thread.run_sync(
                self._change, w.deploy_id, self._settle_activation
            ),
            "delete": lambda: self._delete(w, found),
        }[action]()

    # database side ----------------------------------------------------------------
    def _existing(self, deploy_ids: set[str]) -> set[str]:
        """Which of ``deploy_ids`` have a record (cells of the others are orphans)."""
        if not deploy_ids:
            return set()
        with self.sessions() as session:
            return set(
                session.scalars(
                    select(orm.Deployment.deploy_id).where(orm.Deployment.deploy_id.in_(deploy_ids))
                )
            )

    def _load(self) -> list[Wanted]:
        with self.sessions() as session:
            rows = (
                session.scalars(
                    select(orm.Deployment).where(
                        (orm.Deployment.desired_state != "stopped")
                        | orm.Deployment.status.in_(lifecycle.ACTIVE_STATES)
                        | orm.Deployment.seq.in_(
                            select(orm.Cell.deployment_seq).where(orm.Cell.runtime_id.is_not(None))
                        )
                    )
                )
                .unique()
                .all()
            )
            wanted = [
                Wanted(
                    deploy_id=d.deploy_id,
                    model=d.model.name,
                    version=d.version,
                    status=d.status,
                    desired_state=d.desired_state,
                    restart_requested=d.restart_requested,
                    cell_id=d.cell.runtime_id if d.cell else None,
                    crashes=d.cell.crashes if d.cell else 0,
                    entrypoint=d.entrypoint,
                    meta=d.meta,
                    activation=d.activation,
                )
                for d in rows
            ]
        return wanted

    def _change(self, deploy_id: str, fn: Callable[[Session, orm.Deployment], None]) -> None:
        model = None
        with self.sessions.begin() as session:
            d = session.scalar(select(orm.Deployment).where(orm.Deployment.deploy_id == deploy_id))
            if d is not None:
                model = d.model.name
                fn(session, d)
        if model is not None:
            self.on_change(model)  # /serve reloads this model's route on its next request

    def _transition(self, deploy_id: str, status: str, message: str, **kw: Any) -> None:
        self._change(deploy_id, lambda s, d: lifecycle.set_status(s, d, status, message, **kw))

    def _fail(self, deploy_id: str, reason: str) -> None:
        def fail(session: Session, d: orm.Deployment) -> None:
            d.activation = None
            lifecycle.set_status(session, d, "failed", reason, reason=reason)
            if d.cell is not None:
                d.cell.runtime_id = d.cell.url = None

        self._change(deploy_id, fail)

    def _record_cell(self, deploy_id: str, info: CellInfo, *, restart: bool) -> None:
        def record(_s: Session, d: orm.Deployment) -> None:
            cell = d.cell or orm.Cell(deployment_seq=d.seq, runtime=info.runtime)
            d.cell = cell
            cell.runtime, cell.runtime_id, cell.url = info.runtime, info.id, info.url
            cell.started_at = orm.utcnow()
            if restart:
                cell.restarts += 1

        self._change(deploy_id, record)

    def _ready(self, deploy_id: str, took: float) -> None:
        def ready(session: Session, d: orm.Deployment) -> None:
            lifecycle.set_status(session, d, "ready", f"ready after {took:.1f} s")
            if d.cell is not None:
                d.cell.last_health_at = orm.utcnow()
            self._settle_activation(session, d)

        self._change(deploy_id, ready)

    @staticmethod
    def _settle_activation(session: Session, d: orm.Deployment) -> None:
        """A ready deployment asked to serve takes over now, or learns a newer one serves."""
        if d.desired_state == "running" and lifecycle.should_activate(session, d):
            lifecycle.activate(session, d)
        elif d.activation is not None:
            d.activation = None
            if d.model.active_deploy_id != d.deploy_id:
                d.desired_state = "stopped"
                records.add_event(session, d, "superseded", "a newer version serves; stopping")

    # actions ----------------------------------------------------------------------
    async def _rise(self, w: Wanted, found: list[CellInfo], *, restart: bool = False) -> None:
        running = [c for c in found if c.running]
        adopt = next((c for c in running if c.id == w.cell_id), running[0] if running else None)
        await self._remove_all(w.deploy_id, [c for c in found if c is not adopt])
        spec = cells.spec_for(self.settings, w.deploy_id, w.model, w.version, w.entrypoint, w.meta)
        started = self.clock()
        if adopt is None:
            if await anyio.to_thread.run_sync(self.runtime.needs_build, spec):
                await anyio.to_thread.run_sync(
                    self._transition, w.deploy_id, "building", "building the environment image"
                )
                try:
                    await anyio.to_thread.run_sync(self.runtime.prepare, spec)
                except Exception as exc:
                    await anyio.to_thread.run_sync(
                        self._fail, w.deploy_id, f"environment build failed: {exc}"
                    )
                    return
            await anyio.to_thread.run_sync(
                self._transition, w.deploy_id, "starting", f"starting a {self.runtime.name} cell"
            )
            try:
                info = await anyio.to_thread.run_sync(self.runtime.start, spec)
            except Exception as exc:
                await anyio.to_thread.run_sync(
                    self._fail, w.deploy_id, f"the cell could not start: {exc}"
                )
                return
        else:
            info = adopt
            await anyio.to_thread.run_sync(
                self._transition, w.deploy_id, "starting", f"adopted running cell {info.id[:12]}"
            )
        await anyio.to_thread.run_sync(
            lambda: self._record_cell(w.deploy_id, info, restart=restart)
        )
        assert info.url is not None
        verdict = await await_ready(
            self.http,
            info.url,
            lambda: anyio.to_thread.run_sync(self.runtime.inspect, info.id),
            self.policy,
            clock=self.clock,
            sleep=self.sleep,
            exited_reason=lambda seen: self._exit_reason(info.id, seen),
        )
        if verdict.ready:
            await anyio.to_thread.run_sync(self._ready, w.deploy_id, self.clock() - started)
        else:
            await self._remove_all(w.deploy_id, [info])
            await anyio.to_thread.run_sync(self._fail, w.deploy_id, verdict.reason)

    async def _restart(self, w: Wanted, found: list[CellInfo]) -> None:
        def clear(_s: Session, d: orm.Deployment) -> None:
            d.restart_requested = False
            if d.cell is not None:
                d.cell.crashes = 0

        await anyio.to_thread.run_sync(self._change, w.deploy_id, clear)
        await self._remove_all(w.deploy_id, found)
        await self._rise(w, [], restart=True)

    async def _recover(self, w: Wanted, found: list[CellInfo]) -> None:
        """A ready cell is gone: restart it with capped backoff, or fail past the budget."""
        dead = next((c for c in found if c.id == w.cell_id), None)
        reason = await self._exit_reason(w.cell_id, dead) if w.cell_id else "the cell is gone"
        crashes = w.crashes + 1
        await self._remove_all(w.deploy_id, found)
        if crashes > self.settings.crash_loop_budget:
            await anyio.to_thread.run_sync(
                self._fail,
                w.deploy_id,
                f"crash loop: {reason}; restarted {w.crashes} times, giving up",
            )
            return
        delay = min(
            self.settings.restart_backoff * 2 ** (crashes - 1), self.settings.restart_backoff_max
        )

        def crashed(session: Session, d: orm.Deployment) -> None:
            message = (
                f"{reason}; restart {crashes} of {self.settings.crash_loop_budget} in {delay:g} s"
            )
            lifecycle.set_status(session, d, "starting", message, reason=message, kind="crashed")
            if d.cell is not None:
                d.cell.crashes = crashes
                d.cell.runtime_id = None

        await anyio.to_thread.run_sync(self._change, w.deploy_id, crashed)
        await self.sleep(delay)
        await self._rise(w, [], restart=True)

    async def _stop(self, w: Wanted, found: list[CellInfo]) -> None:
        if w.status in lifecycle.ACTIVE_STATES and w.status != "stopping":
            await anyio.to_thread.run_sync(
                self._transition, w.deploy_id, "stopping", "stopping the cell"
            )
        await self._remove_all(w.deploy_id, found)

        def stopped(session: Session, d: orm.Deployment) -> None:
            if d.cell is not None:
                d.cell.runtime_id = d.cell.url = None
            if d.status in lifecycle.ACTIVE_STATES:
                lifecycle.set_status(session, d, "stopped", "stopped")

        await anyio.to_thread.run_sync(self._change, w.deploy_id, stopped)

    async def _delete(self, w: Wanted, found: list[CellInfo]) -> None:
        await self._remove_all(w.deploy_id, found)

        def forget() -> None:
            with self.sessions.begin() as session:
                d = session.scalar(
                    select(orm.Deployment).where(orm.Deployment.deploy_id == w.deploy_id)
                )
                if d is not None:
                    session.delete(d)
            s = self.settings
            trash = storage.retire(s.deployments_dir, s.staging_dir, w.deploy_id)
            if trash is not None:
                storage.discard(trash)
            cells.saved_log_path(s, w.deploy_id).unlink(missing_ok=True)
            self.on_change(w.model)
            log.info("deleted deployment %s (%s v%d)", w.deploy_id, w.model, w.version)

        await anyio.to_thread.run_sync(forget)

    async def _remove_all(self, deploy_id: str, found: list[CellInfo]) -> None:
        for info in found:
            await anyio.to_thread.run_sync(self._save_logs, deploy_id, info.id)
            await anyio.to_thread.run_sync(self.runtime.stop, info.id)

    async def _remove_orphans(self, deploy_id: str, infos: list[CellInfo]) -> None:
        for info in infos:
            log.warning("removing cell %s of unknown deployment %s", info.id[:12], deploy_id)
            await anyio.to_thread.run_sync(self.runtime.stop, info.id)

    def _save_logs(self, deploy_id: str, cell_id: str) -> None:
        try:
            text = self.runtime.logs(cell_id, tail=2000)
        except Exception:  # a cell that vanished has no logs to keep
            return
        path = cells.saved_log_path(self.settings, deploy_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    async def _exit_reason(self, cell_id: str | None, seen: CellInfo | None) -> str:
        code = f" with code {seen.exit_code}" if seen and seen.exit_code is not None else ""
        tail = ""
        if cell_id:
            try:
                tail = await anyio.to_thread.run_sync(lambda: self.runtime.logs(cell_id, 15))
            except Exception:
                tail = ""
        tail = tail.strip()
        return f"the cell exited{code}" + (f"; last output:\n{tail}" if tail else "")

    # health watch -----------------------------------------------------------------
    async def _watch(self, wanted: list[Wanted], found: dict[str, list[CellInfo]]) -> None:
        """Ping every ready cell once; record when each last answered."""
        targets = [
            (w.deploy_id, c.url)
            for w in wanted
            if w.status == "ready" and w.deploy_id not in self._tasks
            for c in found.get(w.deploy_id, [])
            if c.running and c.id == w.cell_id and c.url
        ]
        if not targets:
            return
        verdicts = await asyncio.gather(
            *(ping_ready(self.http, url, self.policy.ping_timeout) for _, url in targets)
        )
        healthy = [d for (d, _), v in zip(targets, verdicts, strict=True) if v and v.ready]
        if healthy:
            await anyio.to_thread.run_sync(self._touch, healthy)

    def _touch(self, deploy_ids: list[str]) -> None:
        """Record the answers; a cell healthy for a while since it started has its crash
        count forgiven, so only crashes close together make a crash loop."""
        now = orm.utcnow()
        with self.sessions.begin() as session:
            seqs = select(orm.Deployment.seq).where(orm.Deployment.deploy_id.in_(deploy_ids))
            session.execute(
                update(orm.Cell).where(orm.Cell.deployment_seq.in_(seqs)).values(last_health_at=now)
            )
            stable_since = now - timedelta(seconds=self.settings.crash_forgive_seconds)
            session.execute(
                update(orm.Cell)
                .where(
                    orm.Cell.deployment_seq.in_(seqs),
                    orm.Cell.crashes > 0,
                    orm.Cell.started_at < stable_since,
                )
                .values(crashes=0)
            )
