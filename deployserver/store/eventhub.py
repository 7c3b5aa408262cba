"""Deployment events pushed to in-process subscribers once their transaction commits.

``queries.add_event`` notes each event it records in its session (:func:`note`); the hub
watches the sessions as the read cache does and publishes what a transaction noted when
it commits, never what a rollback undid. Subscribers (the event stream's answers) live on
the event loop, each with a bounded queue: one that falls ``queue_size`` events behind is
dropped and told so (it may reconnect and replay from its last event id), so a reader
that stopped reading never grows the server's memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from deployserver.store import orm

log = logging.getLogger("deployserver.store.eventhub")

_PENDING = "deployserver.store.eventhub.pending"
_MARKS = "deployserver.store.eventhub.marks"
DELETED = "deleted"
"""Kind (and status) of the event published when a deployment's record is removed: not
kept anywhere, since a deployment's events go with it."""


@dataclass(frozen=True)
class FeedEvent:
    """One event as subscribers see it. ``id`` is the events row's (None for ``deleted``)."""

    id: int | None
    deploy_id: str
    model: str
    version: int
    at: datetime
    kind: str
    message: str
    status: str
    actor: str | None

    @classmethod
    def of(cls, row: orm.Event, deployment: orm.Deployment, id: int | None) -> FeedEvent:
        """``row`` of ``deployment`` as subscribers see it (``id``: None until flushed)."""
        return cls(
            id=id,
            deploy_id=deployment.deploy_id,
            model=deployment.model.name,
            version=deployment.version,
            at=row.at,
            kind=row.kind,
            message=row.message,
            status=deployment.status,
            actor=row.actor,
        )


@dataclass
class _Noted:
    """An event recorded in an open transaction; its row id is known once flushed."""

    row: orm.Event | None
    event: FeedEvent

    def resolved(self) -> FeedEvent:
        if self.row is None:
            return self.event
        identity = inspect(self.row).identity  # read from the identity key: no SQL
        if not identity:
            return self.event
        return FeedEvent(**{**asdict(self.event), "id": int(identity[0])})


def note(session: Session, row: orm.Event, deployment: orm.Deployment) -> None:
    """Remember ``row`` (just added for ``deployment``) until its transaction ends."""
    feed = FeedEvent.of(row, deployment, None)
    session.info.setdefault(_PENDING, []).append(_Noted(row, feed))


class StreamEnded(Exception):
    """The subscription is over: ``reason`` says why, in words for the subscriber."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Subscription:
    """One subscriber's queue of events, filled on the event loop, at most ``maxsize``."""

    def __init__(self, maxsize: int, *, model: str | None, deploy_id: str | None) -> None:
        self.maxsize = maxsize
        self.model = model
        self.deploy_id = deploy_id
        self.high_water = 0
        """The most events this queue ever held at once (tests read it)."""
        self._queue: deque[FeedEvent] = deque()
        self._ready = asyncio.Event()
        self._ended: str | None = None

    def wants(self, item: FeedEvent) -> bool:
        return (self.model is None or item.model == self.model) and (
            self.deploy_id is None or item.deploy_id == self.deploy_id
        )

    @property
    def ended(self) -> str | None:
        return self._ended

    def offer(self, item: FeedEvent) -> bool:
        """Queue ``item``; False (and the subscription ends) when the queue is full."""
        if self._ended is not None:
            return False
        if len(self._queue) >= self.maxsize:
            self.end(
                f"dropped: this reader fell {self.maxsize} events behind; "
                "reconnect with Last-Event-ID to catch up"
            )
            return False
        self._queue.append(item)
        self.high_water = max(self.high_water, len(self._queue))
        self._ready.set()
        return True

    def end(self, reason: str) -> None:
        """End the subscription; what was queued is let go at once."""
        if self._ended is None:
            self._ended = reason
            self._queue.clear()
            self._ready.set()

    async def get(self, timeout: float) -> FeedEvent | None:
        """The next event, or None when ``timeout`` seconds pass without one."""
        if not self._queue and self._ended is None:
            self._ready.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._ready.wait()
            except TimeoutError:
                return None
        if self._ended is not None:
            raise StreamEnded(self._ended)
        return self._queue.popleft() if self._queue else None

    def __len__(self) -> int:
        return len(self._queue)


class EventHub:
    """Publishes committed events to subscribers on ``loop`` (bound in the lifespan)."""

    def __init__(self, *, queue_size: int = 256, max_subscribers: int = 500) -> None:
        self.queue_size = queue_size
        self.max_subscribers = max_subscribers
        self.dropped = 0
        """Subscribers dropped for falling behind, since the start."""
        self.published = 0
        self._subscribers: set[Subscription] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed: str | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def subscriptions(self) -> tuple[Subscription, ...]:
        """The subscriptions open now (a snapshot)."""
        return tuple(self._subscribers)

    def full(self) -> bool:
        return len(self._subscribers) >= self.max_subscribers

    @contextmanager
    def subscribe(
        self, *, model: str | None = None, deploy_id: str | None = None
    ) -> Iterator[Subscription]:
        """A subscription for events (of ``model``, of ``deploy_id``) while the block runs;
        call on the event loop."""
        sub = Subscription(self.queue_size, model=model, deploy_id=deploy_id)
        if self._closed is not None:
            sub.end(self._closed)
        self._subscribers.add(sub)
        try:
            yield sub
        finally:
            self._subscribers.discard(sub)

    def close(self, reason: str = "the server is stopping") -> None:
        """End every subscription (and refuse new ones): the server is stopping."""
        self._closed = reason
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with suppress(RuntimeError):  # the loop closed meanwhile: nobody listens any more
            loop.call_soon_threadsafe(self._end_all, reason)

    def _end_all(self, reason: str) -> None:
        for sub in list(self._subscribers):
            sub.end(reason)

    def publish(self, items: list[FeedEvent]) -> None:
        """Hand ``items`` to every subscriber; callable from any thread."""
        loop = self._loop
        if not items or loop is None or loop.is_closed():
            return
        with suppress(RuntimeError):
            loop.call_soon_threadsafe(self._deliver, items)

    def _deliver(self, items: list[FeedEvent]) -> None:
        self.published += len(items)
        for sub in list(self._subscribers):
            for item in items:
                if sub.wants(item) and not sub.offer(item):
                    if sub.ended and sub.ended.startswith("dropped"):
                        self.dropped += 1
                        log.info("dropped an event subscriber that fell behind")
                    self._subscribers.discard(sub)
                    break

    def watch(self, sessions: sessionmaker[Session]) -> None:
        """Publish what sessions made by ``sessions`` noted, when their transaction commits."""

        @event.listens_for(sessions, "after_flush")
        def _flushed(session: Session, _ctx: Any) -> None:
            for obj in session.deleted:
                if isinstance(obj, orm.Deployment):
                    feed = FeedEvent(
                        id=None,
                        deploy_id=obj.deploy_id,
                        model=obj.model.name,
                        version=obj.version,
                        at=orm.utcnow(),
                        kind=DELETED,
                        message=f"version {obj.version} of {obj.model.name} deleted",
                        status=DELETED,
                        actor=None,
                    )
                    session.info.setdefault(_PENDING, []).append(_Noted(None, feed))

        @event.listens_for(sessions, "after_transaction_create")
        def _begun(session: Session, transaction: SessionTransaction) -> None:
            if transaction.nested:  # a savepoint: a rollback to it undoes only what follows
                marks = session.info.setdefault(_MARKS, {})
                marks[transaction] = len(session.info.get(_PENDING, ()))

        @event.listens_for(sessions, "after_commit")
        def _committed(session: Session) -> None:
            if session.in_nested_transaction():
                session.info.get(_MARKS, {}).pop(session.get_nested_transaction(), None)
                return  # a savepoint released: its events wait for the real commit
            pending: list[_Noted] = session.info.pop(_PENDING, [])
            session.info.pop(_MARKS, None)
            self.publish([n.resolved() for n in pending])

        @event.listens_for(sessions, "after_soft_rollback")
        def _rolled_back(session: Session, previous: SessionTransaction) -> None:
            pending: list[_Noted] = session.info.get(_PENDING, [])
            if previous.nested:
                mark = session.info.get(_MARKS, {}).pop(previous, 0)
                del pending[mark:]
            else:
                session.info.pop(_PENDING, None)
                session.info.pop(_MARKS, None)
