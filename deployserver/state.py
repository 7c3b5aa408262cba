"""The objects built in the lifespan and shared by every request (typed app state)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from deployserver.config import Settings
from deployserver.orm import utcnow


@dataclass
class AppState:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    clock: Callable[[], datetime] = field(default=utcnow)
    """Now, in UTC; tests pass their own to move time without sleeping."""
