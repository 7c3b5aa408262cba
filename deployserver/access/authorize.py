"""The one access check, shared by every route guard and by /serve: a bearer token, the
scope the caller needs, and a refusal in words (401 without a usable token, 403 without
the scope). Answered from memory when the token was checked lately; otherwise the database
is asked, off the event loop."""

from __future__ import annotations

from datetime import datetime

import anyio
from sqlalchemy.orm import Session, sessionmaker

from deployserver.access.credentials import Principal
from deployserver.access.token_cache import TokenCache
from deployserver.errors import NotAuthenticated, PermissionDenied
from deployserver.store import queries


def remembered(cache: TokenCache, token: str | None, scope: str, now: datetime) -> Principal | None:
    """The caller, when its token was accepted lately, has not expired and holds ``scope``;
    None in every other case (nothing is refused here)."""
    principal = cache.get(token) if token else None
    if principal is None or not principal.allows(scope):
        return None
    if principal.expires_at is not None and principal.expires_at <= now:
        return None
    return principal


async def authorize(
    cache: TokenCache,
    sessions: sessionmaker[Session],
    token: str | None,
    scope: str | None,
    now: datetime,
    *,
    what: str = "this route",
    sent_as: str = "the header 'Authorization: Bearer <token>'",
) -> Principal:
    """The caller behind ``token`` when it holds ``scope``; NotAuthenticated or
    PermissionDenied, saying which, otherwise (``scope`` None: any valid token passes).
    ``what`` and ``sent_as`` name the door and how a token is shown at it, for the message."""
    if not token:
        needs = "a token" if scope is None else f"a token with the {scope!r} scope"
        raise NotAuthenticated(f"{what} needs {needs}, in {sent_as}")
    principal = cache.cached(token, now)  # raises for a token refused lately
    if principal is None:
        principal = await anyio.to_thread.run_sync(cache.authenticate, sessions, token, now)
    if scope is not None and not principal.allows(scope):
        raise PermissionDenied(f"token {principal.name!r} lacks the {scope!r} scope")
    return principal


async def model_is_public(sessions: sessionmaker[Session], model: str) -> bool:
    """Whether ``model`` serves without a token (its active deployment says ``public``)."""

    def read() -> bool:
        with sessions() as session:
            return queries.model_is_public(session, model)

    return await anyio.to_thread.run_sync(read)


async def prediction_is_public(sessions: sessionmaker[Session], request_id: str) -> bool:
    """Whether the asynchronous prediction ``request_id`` is for a public model."""

    def read() -> bool:
        with sessions() as session:
            model = queries.prediction_model(session, request_id)
            return model is not None and queries.model_is_public(session, model)

    return await anyio.to_thread.run_sync(read)
