"""Asynchronous predictions: a worker that sends queued requests to the model's active
cell, with a per-model concurrency limit, and keeps results in the database.

At-least-once: requests still ``running`` when the server stopped are queued again at
start-up, so a prediction may reach a cell twice. Results older than the retention are
purged. With a webhook, the final record is POSTed there, signed with HMAC-SHA256 of the
body under the server's webhook secret (header ``X-Deployserver-Signature: sha256=<hex>``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import httpx
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from deployserver import orm
from deployserver.config import Settings
from deployserver.routes import RouteTable
from deployserver.service import Service

log = logging.getLogger("deployserver.predictions")
SIGNATURE_HEADER = "X-Deployserver-Signature"
PURGE_EVERY = 60.0


def webhook_secret(settings: Settings) -> bytes:
    """The configured secret, else one kept in ``<data-dir>/webhook-secret`` (0600)."""
    if settings.webhook_secret:
        return settings.webhook_secret.get_secret_value().encode()
    path = Path(settings.data_dir) / "webhook-secret"
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(32))
    return path.read_text().strip().encode()


def sign(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def to_record(p: orm.Prediction) -> dict[str, Any]:
    return {
        "request_id": p.request_id,
        "model": p.model,
        "deploy_id": p.deploy_id,
        "status": p.status,
        "result": p.result,
        "error": p.error,
        "created_at": p.created_at.isoformat(),
        "completed_at": p.completed_at.isoformat() if p.completed_at else None,
        "webhook_status": p.webhook_status,
    }


class _CellDown(Exception):
    """The request did not reach a cell: it goes back to the queue."""


class PredictionWorker(Service):
    name = "prediction worker"

    def __init__(
        self,
        *,
        settings: Settings,
        sessions: sessionmaker[Session],
        routes: RouteTable,
        client: httpx.AsyncClient,
        cells: aiohttp.ClientSession,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.sessions = sessions
        self.routes = routes
        self.client = client  # webhooks
        self.cells = cells
        self.clock = clock
        self.secret = webhook_secret(settings)
        self._running: dict[str, int] = defaultdict(int)
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_purge = float("-inf")

    @property
    def interval(self) -> float:
        return self.settings.async_poll_interval

    async def start(self) -> None:
        await anyio.to_thread.run_sync(self.resume)

    def resume(self) -> int:
        """At start-up: what was running when the server stopped is queued again."""
        with self.sessions.begin() as session:
            result = session.execute(
                update(orm.Prediction)
                .where(orm.Prediction.status == "running")
                .values(status="queued", started_at=None)
            )
        count = int(result.rowcount or 0)  # type: ignore[attr-defined]
        if count:
            log.info("resumed %d asynchronous predictions left running", count)
        return count

    def depth(self) -> dict[str, int]:
        with self.sessions() as session:
            rows = session.execute(
                select(orm.Prediction.status, func.count())
                .where(orm.Prediction.status.in_(("queued", "running")))
                .group_by(orm.Prediction.status)
            ).all()
        found = dict(rows)
        return {"queued": found.get("queued", 0), "running": found.get("running", 0)}

    async def run_once(self) -> None:
        """Claim queued requests up to each model's limit and start them."""
        if self.clock() - self._last_purge >= PURGE_EVERY:
            self._last_purge = self.clock()
            await anyio.to_thread.run_sync(self.purge)
        waiting = await anyio.to_thread.run_sync(self._waiting_models)
        ready, missing = set(), set()
        for model in waiting:
            route = await self.routes.resolve(model)
            if route is None:
                missing.add(model)
            elif route.url is not None:
                ready.add(model)
        if missing or waiting - ready:
            await anyio.to_thread.run_sync(self._expire, missing, waiting - ready - missing)
        if not ready:
            return
        for p in await anyio.to_thread.run_sync(self._claim, ready):
            task = asyncio.create_task(self._process(p))
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
            return set(
                session.scalars(
                    select(orm.Prediction.model).where(orm.Prediction.status == "queued").distinct()
                )
            )

    def _expire(self, missing: set[str], not_ready: set[str]) -> None:
        """Fail what can never run (unknown model) or has waited past the queue timeout."""
        now = orm.utcnow()
        cutoff = now - timedelta(seconds=self.settings.async_queue_timeout)
        with self.sessions.begin() as session:
            if missing:
                session.execute(
                    update(orm.Prediction)
                    .where(orm.Prediction.status == "queued", orm.Prediction.model.in_(missing))
                    .values(status="failed", error="the model no longer exists", completed_at=now)
                )
            if not_ready:
                session.execute(
                    update(orm.Prediction)
                    .where(
                        orm.Prediction.status == "queued",
                        orm.Prediction.model.in_(not_ready),
                        orm.Prediction.created_at < cutoff,
                    )
                    .values(
                        status="failed",
                        error=f"no ready cell within {self.settings.async_queue_timeout:g} s",
                        completed_at=now,
                    )
                )

    def _claim(self, ready: set[str]) -> list[tuple[int, str, str, bytes, str | None]]:
        """Mark queued requests of models with a ready cell running, within the limit."""
        limit = self.settings.async_concurrency_per_model
        claimed = []
        with self.sessions.begin() as session:
            rows = session.execute(
                select(orm.Prediction.id, orm.Prediction.model)
                .where(orm.Prediction.status == "queued", orm.Prediction.model.in_(ready))
                .order_by(orm.Prediction.id)
                .limit(limit * 64)
            ).all()
            for pid, model in rows:
                if self._running[model] >= limit:
                    continue
                got = session.execute(
                    update(orm.Prediction)
                    .where(orm.Prediction.id == pid, orm.Prediction.status == "queued")
                    .values(
                        status="running",
                        started_at=orm.utcnow(),
                        attempts=orm.Prediction.attempts + 1,
                    )
                    .returning(
                        orm.Prediction.content_type, orm.Prediction.body, orm.Prediction.webhook
                    )
                ).first()
                if got is not None:
                    self._running[model] += 1
                    claimed.append((pid, model, got.content_type, got.body, got.webhook))
        return claimed

    async def _process(self, item: tuple[int, str, str, bytes, str | None]) -> None:
        pid, model, content_type, body, webhook = item
        try:
            outcome = await self._call(model, content_type, body)
        except _CellDown as exc:
            await anyio.to_thread.run_sync(self._requeue, pid, str(exc))
            return
        finally:
            self._running[model] -= 1
            self.wake()
        record = await anyio.to_thread.run_sync(
            lambda: self._finish(pid, *outcome, record=bool(webhook))
        )
        if record and webhook:
            await self._deliver(pid, webhook, record)

    async def _call(
        self, model: str, content_type: str, body: bytes
    ) -> tuple[str, str | None, Any, str | None]:
        route = await self.routes.resolve(model)
        if route is None:
            return "failed", None, None, f"no model {model!r}"
        if route.url is None:
            raise _CellDown(f"model {model!r} has no ready cell")
        try:  # the data path's pooled client (aiohttp), as /serve uses
            async with self.cells.post(
                f"{route.url}/predict",
                data=body,
                headers={"content-type": content_type},
                timeout=aiohttp.ClientTimeout(total=self.settings.async_timeout),
            ) as resp:
                status, text = resp.status, await resp.text()
        except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError) as exc:
            self.routes.invalidate(model)
            raise _CellDown(f"the cell of {model!r} is unreachable: {exc}") from exc
        except (TimeoutError, aiohttp.ClientError) as exc:
            return "failed", route.deploy_id, None, f"the cell did not answer: {exc or 'timeout'}"
        try:
            answer = json.loads(text)
        except ValueError:
            answer = None
        if status == 200 and isinstance(answer, dict) and "predictions" in answer:
            return "succeeded", route.deploy_id, answer["predictions"], None
        message = text[:2000]
        if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
            message = str(answer["error"].get("message"))
        return "failed", route.deploy_id, None, f"the cell answered {status}: {message}"

    def _requeue(self, pid: int, reason: str) -> None:
        with self.sessions.begin() as session:
            p = session.get(orm.Prediction, pid)
            if p is None:
                return
            if p.attempts >= self.settings.async_max_attempts:
                p.status, p.error, p.completed_at = "failed", reason, orm.utcnow()
            else:
                p.status, p.started_at = "queued", None

    def _finish(
        self,
        pid: int,
        status: str,
        deploy_id: str | None,
        result: Any,
        error: str | None,
        *,
        record: bool = False,
    ) -> dict[str, Any] | None:
        """Store the outcome in one UPDATE; the whole record only when a webhook wants it."""
        with self.sessions.begin() as session:
            done = session.execute(
                update(orm.Prediction)
                .where(orm.Prediction.id == pid)
                .values(
                    status=status,
                    deploy_id=deploy_id,
                    result=result,
                    error=error,
                    completed_at=orm.utcnow(),
                )
            )
            if not done.rowcount:  # type: ignore[attr-defined]
                return None  # deleted while it ran
            return to_record(session.get_one(orm.Prediction, pid)) if record else {}

    async def _deliver(self, pid: int, url: str, record: dict[str, Any]) -> None:
        body = json.dumps(record, separators=(",", ":")).encode()
        headers = {"content-type": "application/json", SIGNATURE_HEADER: sign(self.secret, body)}
        outcome = "delivered"
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self.settings.webhook_attempts),
                wait=wait_exponential(multiplier=self.settings.webhook_backoff, max=30),
                retry=retry_if_exception_type(httpx.HTTPError),
                reraise=True,
            ):
                with attempt:
                    resp = await self.client.post(url, content=body, headers=headers, timeout=10)
                    resp.raise_for_status()
        except httpx.HTTPError as exc:
            outcome = f"failed: {exc}"[:200]
            log.warning("webhook %s for %s gave up: %s", url, record["request_id"], exc)

        def note() -> None:
            with self.sessions.begin() as session:
                session.execute(
                    update(orm.Prediction)
                    .where(orm.Prediction.id == pid)
                    .values(webhook_status=outcome)
                )

        await anyio.to_thread.run_sync(note)

    def purge(self) -> int:
        cutoff = orm.utcnow() - timedelta(seconds=self.settings.async_retention_seconds)
        with self.sessions.begin() as session:
            result = session.execute(
                delete(orm.Prediction).where(
                    orm.Prediction.completed_at.is_not(None), orm.Prediction.completed_at < cutoff
                )
            )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
