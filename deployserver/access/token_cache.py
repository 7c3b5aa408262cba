"""Who a bearer token is, remembered for a moment on the data path.

``/serve`` checks a token on every request; a database look-up each time would cost a
large share of the proxy's budget. Entries live ``ttl`` seconds and the whole cache is
dropped whenever this server revokes a token or deletes a user, so a revocation made
here is refused on the very next request: a look-up that read the token before the
revocation and finishes after it does not store what it read (the cache's generation
changed). Refused tokens are remembered as briefly, so a bad token repeated costs no
query each time. Both kinds are bounded, least recently used first out. (Another server
process sharing the database sees a revocation within ``ttl``.)
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from deployserver.access import credentials
from deployserver.access.credentials import Principal
from deployserver.errors import NotAuthenticated
from deployserver.store.lrucache import LRUCache


def _refusal_key(token: str) -> bytes:
    # refused tokens are anyone's input, up to a header's size: keep a digest, not them
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class TokenCache:
    def __init__(
        self,
        ttl: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_entries: int = 10_000,
        max_refused: int = 1_000,
    ) -> None:
        self.ttl = ttl
        self.clock = clock
        self._valid: LRUCache[str, Principal] = LRUCache(max_entries, ttl, self._now)
        self._refused: LRUCache[bytes, str] = LRUCache(max_refused, ttl, self._now)

    def _now(self) -> float:
        return self.clock()  # read late, so a test may swap ``clock`` on a running server

    def get(self, token: str) -> Principal | None:
        """The caller behind ``token`` if it was accepted lately (expiry not checked)."""
        return self._valid.get(token)

    def cached(self, token: str, now: datetime) -> Principal | None:
        """The caller from memory, or None when the database must be asked; raises
        NotAuthenticated for a token refused lately or expired since it was accepted."""
        principal = self._valid.get(token)
        if principal is None:
            reason = self._refused.get(_refusal_key(token))
            if reason is not None:
                raise NotAuthenticated(reason)
            return None
        if principal.expires_at is not None and principal.expires_at <= now:
            self._valid.pop(token)
            raise NotAuthenticated("this token has expired")
        return principal

    def clear(self) -> None:
        """Forget every token, and keep look-ups under way from storing theirs."""
        self._valid.clear()
        self._refused.clear()

    def authenticate(self, sessions: sessionmaker[Session], token: str, now: datetime) -> Principal:
        """``credentials.authenticate`` behind the cache (a blocking query on a miss: call it from
        a worker thread); an expiry is checked on every call."""
        principal = self.cached(token, now)
        if principal is not None:
            return principal
        fences = self._valid.generation, self._refused.generation
        try:
            with sessions() as session:
                principal = credentials.authenticate(session, token, now=now)
        except NotAuthenticated as exc:
            self._refused.put(_refusal_key(token), exc.message, fences[1])
            raise
        self._valid.put(token, principal, fences[0])
        return principal
