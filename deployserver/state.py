"""The objects built in the lifespan and shared by every request (typed app state)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import httpx
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from deployserver.config import Settings
from deployserver.orm import utcnow
from deployserver.reconciler import Reconciler
from deployserver.runtime.base import CellRuntime


@dataclass
class AppState:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    runtime: CellRuntime
    reconciler: Reconciler
    http: httpx.AsyncClient
    clock: Callable[[], datetime] = field(default=utcnow)
    """Now, in UTC; tests pass their own to move time without sleeping."""
