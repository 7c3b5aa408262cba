"""Rendered deployment records, kept in memory and dropped by every write to them.

Clients poll ``GET /api/v1/deployments/{id}``, so it must cost little; it must also
never show a status older than the database's. Entries are dropped when a transaction
that wrote models, deployments, cells or files commits (ORM changes and bulk UPDATE /
DELETE alike), and a generation counter keeps a read that overlapped such a commit from
storing what it read. Entries also expire after ``ttl`` seconds, as a backstop. This
holds for one server process, which is what the reconciler assumes anyway.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from itertools import chain
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session, sessionmaker

from deployserver.store import orm

WATCHED = (orm.Model, orm.Deployment, orm.Cell, orm.DeploymentFile)
_PENDING = "deployserver.store.readcache.pending"


class RecordCache:
    def __init__(self, ttl: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self.generation = 0
        self._entries: dict[str, tuple[float, bytes]] = {}
        self._lock = threading.Lock()

    def get(self, deploy_id: str) -> bytes | None:
        hit = self._entries.get(deploy_id)
        if hit is None or self.clock() - hit[0] >= self.ttl:
            return None
        return hit[1]

    def put(self, deploy_id: str, body: bytes, generation: int) -> None:
        """Store what was read at ``generation``, unless a write committed since."""
        with self._lock:
            if generation == self.generation:
                self._entries[deploy_id] = (self.clock(), body)

    def invalidate(self) -> None:
        with self._lock:
            self.generation += 1
            self._entries.clear()

    def watch(self, sessions: sessionmaker[Session]) -> None:
        """Invalidate whenever a session made by ``sessions`` commits a relevant write."""

        @event.listens_for(sessions, "after_flush")
        def _flushed(session: Session, _ctx: Any) -> None:
            if any(
                isinstance(o, WATCHED) for o in chain(session.new, session.dirty, session.deleted)
            ):
                session.info[_PENDING] = True

        @event.listens_for(sessions, "do_orm_execute")
        def _bulk(state: ORMExecuteState) -> None:
            mapper = state.bind_mapper
            if (
                (state.is_update or state.is_delete)
                and mapper
                and issubclass(mapper.class_, WATCHED)
            ):
                state.session.info[_PENDING] = True

        @event.listens_for(sessions, "after_commit")
        def _committed(session: Session) -> None:
            if session.info.pop(_PENDING, False):
                self.invalidate()

        @event.listens_for(sessions, "after_soft_rollback")
        def _rolled_back(session: Session, _previous: Any) -> None:
            session.info.pop(_PENDING, None)
