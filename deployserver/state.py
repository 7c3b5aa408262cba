"""The objects built in the lifespan and shared by every request (typed app state)."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from deployserver.config import Settings
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
