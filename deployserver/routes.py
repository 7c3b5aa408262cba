"""The serving route table: which cell answers for each model, kept in memory.

``/serve`` looks a model up here on every request, so lookups must not touch the
database: entries are loaded on a miss, kept for ``ttl`` seconds, and dropped at once
when the reconciler changes a model's active deployment or its cell.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import anyio
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from deployserver import orm


@dataclass(frozen=True)
class Route:
    """Where a model's requests go now; ``url`` is None when no cell is ready."""

    model: str
    deploy_id: str | None
    url: str | None
    public: bool
    loaded_at: float


class RouteTable:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        ttl: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sessions = sessions
        self.ttl = ttl
        self.clock = clock
        self._cache: dict[str, tuple[float, Route | None]] = {}

    def invalidate(self, model: str | None = None) -> None:
        """Forget one model's route (or all): the next request reloads it."""
        if model is None:
            self._cache.clear()
        else:
            self._cache.pop(model, None)

    def known(self, model: str) -> bool:
        """Whether ``model`` was found on its last look-up (the cache only, no database)."""
        hit = self._cache.get(model)
        return hit is not None and hit[1] is not None

    async def resolve(self, model: str) -> Route | None:
        """The model's route, or None when there is no such model."""
        now = self.clock()
        hit = self._cache.get(model)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        route = await anyio.to_thread.run_sync(self._load, model, now)
        self._cache[model] = (now, route)
        return route

    def _load(self, model: str, now: float) -> Route | None:
        with self.sessions() as session:
            row = session.execute(
                select(orm.Model.id, orm.Model.active_deploy_id).where(orm.Model.name == model)
            ).first()
            if row is None:
                return None
            deployment = None
            if row.active_deploy_id is not None:
                deployment = session.scalar(
                    select(orm.Deployment).where(orm.Deployment.deploy_id == row.active_deploy_id)
                )
            if deployment is None:
                return Route(model, None, None, False, now)
            cell = deployment.cell
            url = cell.url if cell and cell.runtime_id and deployment.status == "ready" else None
            public = bool(deployment.meta.get("public") is True)
            return Route(model, deployment.deploy_id, url, public, now)
