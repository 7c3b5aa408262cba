"""Asynchronous predictions: a worker that sends queued requests to a replica of the
model's active deployment (woken first when it sleeps), with a per-model concurrency
limit, and stores each answer as it streams in.

At-least-once: requests still ``running`` when the server stopped are queued again at
start-up, so a prediction may reach a cell twice. Results older than the retention are
purged, with their files. With a webhook, the final record is POSTed there through
``webhooks.WebhookSender`` (signed, and only to addresses webhooks may reach).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import aiohttp
import anyio
from sqlalchemy.orm import Session, sessionmaker

from deployserver.config import Settings
from deployserver.control.service import Service
from deployserver.domain import PredictionStatus
from deployserver.serving import quotas
from deployserver.serving.balance import Load
from deployserver.serving.cellcall import CellDown, Outcome, call_cell
from deployserver.serving.results import remove_result, results_dir
from deployserver.serving.routetable import RouteTable
from deployserver.serving.waiters import Ended, Waiters
from deployserver.serving.wake import Waker
from deployserver.serving.webhooks import WebhookSender
from deployserver.store import db, orm, predictions
from deployserver.store.predictions import Claim

log = logging.getLogger(__name__)
PURGE_EVERY = 60.0
CLAIM_WINDOW = 64
"""Queued predictions looked at per model slot in one pass."""


@dataclass(frozen=True)
class Finished:
    """What storing an outcome gave: how it ended (None: deleted meanwhile), the record
    for a webhook, and the model's next prediction, claimed in the same commit."""

    ended: Ended | None
    record: dict[str, Any] | None
    next: Claim | None


class PredictionWorker(Service):
    name = "prediction worker"

    def __init__(
        self,
        *,
        settings: Settings,
        sessions: sessionmaker[Session],
        routes: RouteTable,
        cells: aiohttp.ClientSession,
        webhooks: WebhookSender,
        clock: Callable[[], float] = time.monotonic,
        load: Load | None = None,
        waker: Waker | None = None,
    ) -> None:
        super().__init__()
        self.load = load or Load()
        self.waker = waker
        """Wakes a paused or scaled-to-zero model that has predictions waiting."""
        self.settings = settings
        self.sessions = sessions
        self.routes = routes
        self.webhooks = webhooks
        self.cells = cells
        self.clock = clock
        self.stored = quotas.StoredBytes()
        """Bytes kept per model and caller, for the submission's quota check."""
        self._running: dict[str, int] = defaultdict(int)
        """Slots taken per model: predictions running here, or about to."""
        self.waiters = Waiters()
        self._queued_here: set[str] = set()
        """Models this server queued a prediction of since the last pass began: a slot
        freed without a hand-over wakes the worker for them (the hand-over's claim may
        have run before their commit)."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_purge = float("-inf")
        self._found_waiting = False
        self.idle_backoff = settings.idle_pass_backoff

    @property
    def interval(self) -> float:
        return self.settings.async_poll_interval

    def idle(self) -> bool:
        return not self._tasks and not self._found_waiting

    async def start(self) -> None:
        await anyio.to_thread.run_sync(self.resume)
        await anyio.to_thread.run_sync(self.sweep)

    def sweep(self) -> int:
        """At start-up: remove result files no row points at (partial ones, those of rows
        deleted or left running by a server that stopped); returns how many."""
        folder = results_dir(self.settings.data_dir)
        names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
        with self.sessions() as session:
            keep = predictions.kept_results(session, names)
        removed = 0
        for name in names:
            if name not in keep:
                (folder / name).unlink(missing_ok=True)
                removed += 1
        return removed

    def resume(self) -> int:
        """At start-up: what was running when the server stopped is queued again."""
        with self.sessions.begin() as session:
            count = predictions.requeue_running(session)
        if count:
            log.info("resumed %d asynchronous predictions left running", count)
        return count

    def depth(self) -> dict[str, int]:
        """How many predictions wait and run (for /metrics)."""
        with self.sessions() as session:
            found = predictions.depth(session)
        return {status.value: count for status, count in found.items()}

    async def run_once(self) -> None:
        """Claim queued requests up to each model's limit and start them."""
        self._queued_here.clear()
        if self.clock() - self._last_purge >= PURGE_EVERY:
            self._last_purge = self.clock()
            await anyio.to_thread.run_sync(self.purge)
        waiting = await db.read(self.sessions, self._waiting_models)
        self._found_waiting = bool(waiting)
        ready, missing = set(), set()
        asleep: dict[str, int] = {}
        for model in waiting:
            route = await self.routes.resolve(model)
            if route is None:
                missing.add(model)
            elif route.replicas:
                ready.add(model)
            elif route.wakeable and route.deploy_id and self.waker is not None:
                asleep[route.deploy_id] = 1  # wanted: the autoscaler gives it a replica
                self.waker.start(route)
        self.load.queued(asleep)
        if missing or waiting - ready:
            await anyio.to_thread.run_sync(self._expire, missing, waiting - ready - missing)
        if not ready:
            return
        for p in await anyio.to_thread.run_sync(self._claim, ready):
            self.start_claimed(p)

    async def reserve(self, model: str) -> bool:
        """Take one of ``model``'s slots for a prediction about to be submitted, when
        one is free and its cell ready: the submission then stores it running and starts
        it at once (``start_claimed``), without waiting for a pass; ``release`` gives
        the slot back if it was queued after all."""
        limit = self.settings.async_concurrency_per_model
        if self._running[model] >= limit:
            return False
        route = await self.routes.resolve(model)
        if route is None or route.url is None or self._running[model] >= limit:
            return False
        self._running[model] += 1
        return True

    def release(self, model: str) -> None:
        """Give back a slot ``reserve`` took for a submission that failed or was queued."""
        self._running[model] -= 1

    def queued(self, model: str) -> None:
        """A submission of ``model`` was queued: a pass takes it now if a slot is free,
        else the running prediction that frees one next (``_process``)."""
        self._queued_here.add(model)
        if self._running[model] < self.settings.async_concurrency_per_model:
            self.wake()

    def start_claimed(self, claim: Claim) -> None:
        """Run ``claim`` (stored running, its slot taken) in a task of its own."""
        self.waiters.started(claim.request_id)
        task = asyncio.create_task(self._process(claim))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _waiting_models(self) -> set[str]:
        with self.sessions() as session:
            return predictions.waiting_models(session)

    def _expire(self, missing: set[str], not_ready: set[str]) -> None:
        """Fail what can never run (unknown model) or has waited past the queue timeout."""
        now = orm.utcnow()
        cutoff = now - timedelta(seconds=self.settings.async_queue_timeout)
        waited = f"no ready cell within {self.settings.async_queue_timeout:g} s"
        with self.sessions.begin() as session:
            if missing:
                gone = "the model no longer exists"
                predictions.fail_queued(session, missing, error=gone, now=now)
            if not_ready:
                predictions.fail_queued(
                    session, not_ready, error=waited, now=now, created_before=cutoff
                )

    def _claim(self, ready: set[str]) -> list[Claim]:
        """Mark queued requests of models with a ready cell running, within the limit."""
        limit = self.settings.async_concurrency_per_model
        claimed: list[Claim] = []
        with self.sessions.begin() as session:
            for pid, model in predictions.queued(session, ready, limit * CLAIM_WINDOW):
                if self._running[model] >= limit:
                    continue
                claim = predictions.claim(session, pid, orm.utcnow())
                if claim is not None:
                    self._running[model] += 1
                    claimed.append(claim)
        return claimed

    async def _process(self, claim: Claim) -> None:
        """Call the cell and store the answer; the same transaction claims the model's
        next queued prediction, which takes over this one's slot at once."""
        handed = False
        try:
            try:
                outcome = await self._call(claim)
            except CellDown as exc:
                await anyio.to_thread.run_sync(self._requeue, claim.pid, str(exc))
                self.waiters.notify(claim.request_id, None)  # it may have failed for good
                self.wake()
                return
            route = await self.routes.resolve(claim.model)
            more = route is not None and route.url is not None
            done = await anyio.to_thread.run_sync(
                lambda: self._finish(claim, outcome, record=bool(claim.webhook), more=more)
            )
            if done.next is not None:
                self.start_claimed(done.next)
                handed = True
            self.waiters.notify(claim.request_id, done.ended)
        finally:
            if not handed:
                self._running[claim.model] -= 1
                if claim.model in self._queued_here:
                    self.wake()
        if done.record and claim.webhook:
            await self._deliver(claim.pid, claim.webhook, done.record)

    async def wait_done(
        self, request_id: str, timeout: float, current: orm.Prediction | None = None
    ) -> orm.Prediction | None:
        """The prediction once it has succeeded or failed, or as it is after ``timeout``
        seconds; None when it is gone. ``current`` is its record as just read, if the caller
        has it. One this server runs is handed over in memory the moment it ends; the
        database is read at each poll interval otherwise (another server may run it)."""

        async def read() -> orm.Prediction | None:
            return await db.read(self.sessions, self._read, request_id)

        return await self.waiters.wait(
            request_id,
            timeout,
            read=read,
            current=current,
            interval=self.interval,
            clock=self.clock,
        )

    def _read(self, request_id: str) -> orm.Prediction | None:
        with self.sessions() as session:
            return predictions.find(session, request_id)

    async def _call(self, claim: Claim) -> Outcome:
        route = await self.routes.resolve(claim.model)
        if route is None:
            return Outcome(PredictionStatus.FAILED, None, error=f"no model {claim.model!r}")
        replica = self.load.choose(route.replicas)
        if replica is None:
            raise CellDown(f"model {claim.model!r} has no ready cell")
        try:
            with self.load.request(route.deploy_id, replica.cell_id):
                return await call_cell(
                    self.cells, replica.url, route.deploy_id, claim, self.settings, self._room
                )
        except CellDown:
            self.load.eject(replica.cell_id)
            self.routes.invalidate(claim.model)
            raise

    def _room(self, claim: Claim) -> tuple[int, str]:
        with self.sessions() as session:
            return quotas.room_for_result(
                session, self.settings, model=claim.model, actor=claim.actor
            )

    def _requeue(self, pid: int, reason: str) -> None:
        most = self.settings.async_max_attempts
        with self.sessions.begin() as session:
            predictions.requeue_or_fail(session, pid, reason, max_attempts=most, now=orm.utcnow())

    def _finish(
        self, claim: Claim, outcome: Outcome, *, record: bool = False, more: bool = False
    ) -> Finished:
        """Store the outcome in one UPDATE; the whole record only when a webhook wants it.
        With ``more`` (the model's cell is ready), claim its next queued prediction in the
        same commit."""
        stored = outcome.stored
        ending = predictions.Ending(
            status=outcome.status,
            deploy_id=outcome.deploy_id,
            result=stored.value if stored else None,
            result_bytes=stored.size if stored else 0,
            result_offset=stored.offset if stored else None,
            result_type=stored.media_type if stored else None,
            error=outcome.error,
        )
        answer: dict[str, Any] | None = None
        now = orm.utcnow()
        with self.sessions.begin() as session:
            found = predictions.finish(session, claim.pid, ending, now)
            if found and record:
                p = session.get_one(orm.Prediction, claim.pid)
                answer = predictions.to_read(p).model_dump(mode="json")
            following = predictions.claim_next(session, claim.model, now) if more else None
        if not found:  # deleted while it ran: its result goes too
            remove_result(self.settings.data_dir, claim.request_id)
            return Finished(None, None, following)
        if stored is not None:
            self.stored.add(claim.model, claim.actor, stored.size)
        return Finished(Ended(ending, now), answer, following)

    async def _deliver(self, pid: int, url: str, record: dict[str, Any]) -> None:
        body = json.dumps(record, separators=(",", ":")).encode()
        outcome = await self.webhooks.deliver(url, body)

        def note() -> None:
            with self.sessions.begin() as session:
                predictions.note_webhook(session, pid, str(outcome))

        await anyio.to_thread.run_sync(note)

    def purge(self) -> int:
        """Remove finished predictions past the retention, and their result files."""
        cutoff = orm.utcnow() - timedelta(seconds=self.settings.async_retention_seconds)
        with self.sessions.begin() as session:
            files, count = predictions.purge(session, cutoff)
        for request_id in files:
            remove_result(self.settings.data_dir, request_id)
        self.stored.forget()
        return count
