"""Who a bearer token is, remembered for a moment on the data path.

``/serve`` checks a token on every request; a database look-up each time would cost a
large share of the proxy's budget. Entries live ``ttl`` seconds and the whole cache is
dropped whenever this server revokes a token or deletes a user, so a revocation made
here is refused on the very next request. (Another server process sharing the database
sees it within ``ttl``.)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from deployserver import auth
from deployserver.auth import Principal

MAX_ENTRIES = 10_000


class TokenCache:
    def __init__(self, ttl: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._entries: dict[str, tuple[float, Principal]] = {}

    def get(self, token: str) -> Principal | None:
        hit = self._entries.get(token)
        if hit is None:
            return None
        if self.clock() - hit[0] >= self.ttl:
            self._entries.pop(token, None)
            return None
        return hit[1]

    def put(self, token: str, principal: Principal) -> None:
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
        self._entries[token] = (self.clock(), principal)

    def clear(self) -> None:
        self._entries.clear()

    def authenticate(self, sessions: sessionmaker[Session], token: str, now: datetime) -> Principal:
        """``auth.authenticate`` behind the cache; an expiry is checked on every call."""
        principal = self.get(token)
        if principal is None:
            with sessions() as session:
                principal = auth.authenticate(session, token, now=now)
            self.put(token, principal)
        elif principal.expires_at is not None and principal.expires_at <= now:
            self._entries.pop(token, None)
            raise auth.NotAuthenticated("this token has expired")
        return principal
