"""The objects built in the lifespan and shared by every request (typed app state)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import httpx
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from deployserver.access.login_limits import LoginGuard
from deployserver.access.token_cache import TokenCache
from deployserver.config import Settings
from deployserver.control.reconciler import Reconciler
from deployserver.runtime.base import CellRuntime
from deployserver.serving.async_worker import PredictionWorker
from deployserver.serving.balance import Load
from deployserver.serving.cellclient import CellClient
from deployserver.serving.routetable import RouteTable
from deployserver.serving.telemetry import ServerMetrics
from deployserver.serving.wake import Waker
from deployserver.store.eventhub import EventHub
from deployserver.store.orm import utcnow
from deployserver.store.readcache import RecordCache
from deployserver.ui.assets import Bundle


@dataclass
class AppState:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    runtime: CellRuntime
    reconciler: Reconciler
    http: httpx.AsyncClient
    routes: RouteTable
    cell_client: CellClient
    """The data path's pooled connections to the cells (/serve)."""
    worker: PredictionWorker
    load: Load
    """Requests in flight per replica and deployment: the balancer's and autoscaler's."""
    waker: Waker
    """Holds requests for a sleeping model while it wakes."""
    metrics: ServerMetrics
    token_cache: TokenCache
    record_cache: RecordCache
    login_guard: LoginGuard
    """The password login's rate limits, lockout and hashing slots."""
    events: EventHub
    """Deployment events for the event stream's readers, published as they commit."""
    ui: Bundle
    """The web UI's shell and static files."""
    clock: Callable[[], datetime] = field(default=utcnow)
    """Now, in UTC; tests pass their own to move time without sleeping."""
    grpc_port: int | None = None
    """The port the gRPC listener took, once started; None when gRPC is off."""
