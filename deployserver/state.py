"""The objects built in the lifespan and shared by every request (typed app state)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import aiohttp
import httpx
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from deployserver.config import Settings
from deployserver.metrics import ServerMetrics
from deployserver.orm import utcnow
from deployserver.predictions import PredictionWorker
from deployserver.readcache import RecordCache
from deployserver.reconciler import Reconciler
from deployserver.routes import RouteTable
from deployserver.runtime.base import CellRuntime
from deployserver.token_cache import TokenCache


@dataclass
class AppState:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    runtime: CellRuntime
    reconciler: Reconciler
    http: httpx.AsyncClient
    routes: RouteTable
    proxy_client: httpx.AsyncClient
    """Pooled connections to the cells for asynchronous predictions and webhooks."""
    cell_session: aiohttp.ClientSession
    """The data path's pooled connections to the cells (/serve)."""
    worker: PredictionWorker
    metrics: ServerMetrics
    token_cache: TokenCache
    record_cache: RecordCache
    clock: Callable[[], datetime] = field(default=utcnow)
    """Now, in UTC; tests pass their own to move time without sleeping."""
