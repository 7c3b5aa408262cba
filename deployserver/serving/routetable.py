"""The serving route table: which replicas answer for each model, kept in memory.

``/serve`` looks a model up here on every request, so lookups must not touch the
database: entries are loaded on a miss (in a worker thread), kept for ``ttl`` seconds,
and dropped at once when the reconciler changes a model's active deployment or its cell.
Names that are no model are remembered too, as briefly, so a caller repeating one costs
no query; both kinds are bounded (least recently used first out), so made-up names
cannot grow the server's memory, nor push the real models out. Requests that miss the
same model at once share one load (under load, every entry's expiry would otherwise
send each request in flight to the database).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import anyio
from sqlalchemy.orm import Session, sessionmaker

from deployserver.domain import DeploymentStatus, DesiredState, ReplicaState
from deployserver.store import queries
from deployserver.store.lrucache import LRUCache
from deployserver.upload.metadata import DeploymentMetadata


@dataclass(frozen=True)
class Replica:
    """One ready replica of the model's active deployment."""

    cell_id: str
    url: str
    grpc_address: str | None = None


@dataclass(frozen=True)
class Route:
    """Where a model's requests go now: its active deployment's ready replicas (none: no
    cell is ready), its paused ones, and whether a request may wake it (ready, but
    paused or scaled to zero)."""

    model: str
    deploy_id: str | None
    public: bool
    loaded_at: float
    replicas: tuple[Replica, ...] = ()
    paused: tuple[Replica, ...] = ()
    wakeable: bool = False
    resend_dropped: bool = True
    """Whether a request its replica died holding may go to another (metadata
    ``scaling.resend_dropped``)."""

    @property
    def url(self) -> str | None:
        """The first ready replica's URL (None: none is ready)."""
        return self.replicas[0].url if self.replicas else None

    @property
    def grpc_address(self) -> str | None:
        """The first ready replica's gRPC address (None: none, or none serves gRPC)."""
        return self.replicas[0].grpc_address if self.replicas else None


class RouteTable:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        ttl: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 10_000,
        max_unknown: int = 1_000,
    ) -> None:
        self.sessions = sessions
        self.ttl = ttl
        self.clock = clock
        self._found: LRUCache[str, Route] = LRUCache(max_entries, ttl, clock)
        self._unknown: LRUCache[str, bool] = LRUCache(max_unknown, ttl, clock)
        self._loading: dict[str, asyncio.Task[Route | None]] = {}

    def __len__(self) -> int:
        """Entries held: models found and names remembered as unknown."""
        return len(self._found) + len(self._unknown)

    def invalidate(self, model: str | None = None) -> None:
        """Forget one model's route (or all): the next request reloads it, and a load
        already under way does not store what it read."""
        if model is None:
            self._found.clear()
            self._unknown.clear()
            self._loading.clear()
        else:
            self._found.discard(model)
            self._unknown.discard(model)
            self._loading.pop(model, None)  # a request from now on loads afresh

    def known(self, model: str) -> bool:
        """Whether ``model`` was found on its last look-up (the cache only, no database)."""
        return model in self._found

    async def resolve(self, model: str) -> Route | None:
        """The model's route, or None when there is no such model."""
        route = self._found.get(model)
        if route is not None or self._unknown.get(model):
            return route
        loading = self._loading.get(model)
        if loading is None:
            loading = asyncio.ensure_future(self._fetch(model))
            self._loading[model] = loading
            loading.add_done_callback(lambda done: self._settled(model, done))
        # shielded: a caller that goes away does not cancel the others' load
        return await asyncio.shield(loading)

    async def _fetch(self, model: str) -> Route | None:
        fences = self._found.generation, self._unknown.generation
        route = await anyio.to_thread.run_sync(self._load, model, self.clock())
        if route is None:
            self._unknown.put(model, True, fences[1])
        else:
            self._found.put(model, route, fences[0])
        return route

    def _settled(self, model: str, done: asyncio.Task[Route | None]) -> None:
        if self._loading.get(model) is done:
            del self._loading[model]
        if not done.cancelled():
            done.exception()  # retrieved: the callers awaiting it were told

    def _load(self, model: str, now: float) -> Route | None:
        with self.sessions() as session:
            found = queries.find_model(session, model)
            if found is None:
                return None
            deployment = queries.active_deployment(session, found)
            if deployment is None:
                return Route(model, None, False, now)
            meta = DeploymentMetadata.of(deployment.meta)
            public = meta.public
            if deployment.status is not DeploymentStatus.READY:
                return Route(model, deployment.deploy_id, public, now)

            def of(state: ReplicaState) -> tuple[Replica, ...]:
                return tuple(
                    Replica(c.runtime_id, c.url, c.grpc_address)
                    for c in deployment.live_cells
                    if c.state is state and c.runtime_id and c.url
                )

            ready, paused = of(ReplicaState.READY), of(ReplicaState.PAUSED)
            running = deployment.desired_state is DesiredState.RUNNING
            wakeable = running and not ready
            resend = meta.scaling.resend_dropped
            return Route(model, deployment.deploy_id, public, now, ready, paused, wakeable, resend)
