"""Annotated dependency aliases: the app state, settings, a database session, and access.

Every route declares who may call it, through exactly these: ``require_scope(scope)``
(or the ``ReadAccess``/``DeployAccess``/``PredictAccess``/``AdminAccess`` aliases that
also hand the caller's Principal to the handler), ``model_predict_access`` for
prediction routes that take ``{model}``, ``metrics_access``, or ``PUBLIC``.
``check_guarded(app)`` refuses to build an app with a route that declares none.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import anyio
from fastapi import Depends, FastAPI, Request
from fastapi.dependencies.models import Dependant

try:  # FastAPI >= 0.16x keeps included routers lazy; this walks through them
    from fastapi.routing import iter_route_contexts
except ImportError:  # pragma: no cover - older FastAPI lists every route in app.routes
    iter_route_contexts = None  # type: ignore[assignment]
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy import select
from sqlalchemy.orm import Session

from deployserver import auth, orm, records
from deployserver.auth import Principal
from deployserver.config import Settings
from deployserver.errors import NotAuthenticated, PermissionDenied
from deployserver.state import AppState


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.ds
    return state


def get_settings(state: Annotated[AppState, Depends(get_state)]) -> Settings:
    return state.settings


def get_session(state: Annotated[AppState, Depends(get_state)]) -> Iterator[Session]:
    with state.sessions() as session:
        yield session


StateDep = Annotated[AppState, Depends(get_state)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]

# Reads "Authorization: Bearer ..." and tells the OpenAPI docs how to log in.
bearer = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", scopes=auth.SCOPES, auto_error=False)
BearerDep = Annotated[str | None, Depends(bearer)]


class Guard:
    """A dependency that decides access; ``scope`` is what a token needs to pass it."""

    scope: str

    def check(self, state: AppState, token: str | None) -> Principal:
        if not token:
            raise NotAuthenticated("this route needs a token: 'Authorization: Bearer <token>'")
        principal = state.token_cache.authenticate(state.sessions, token, state.clock())
        if not principal.allows(self.scope):
            raise PermissionDenied(f"token {principal.name!r} lacks the {self.scope!r} scope")
        return principal

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.scope!r})"


def _cached_allowed(state: AppState, token: str | None, scope: str) -> Principal | None:
    """The caller, when its token is in the cache, unexpired and holds ``scope``."""
    principal = state.token_cache.get(token) if token else None
    if principal is None or not principal.allows(scope):
        return None
    if principal.expires_at is not None and principal.expires_at <= state.clock():
        return None
    return principal


class ScopeGuard(Guard):
    """The caller must hold ``scope``; answers the caller's Principal."""

    def __init__(self, scope: str) -> None:
        self.scope = scope

    async def __call__(self, state: StateDep, token: BearerDep) -> Principal:
        if token and state.token_cache.get(token) is not None:
            return self.check(state, token)  # answered from memory: no thread hop
        return await anyio.to_thread.run_sync(self.check, state, token)


class ModelPredictGuard(Guard):
    """Predictions for ``{model}``: open when its active deployment's metadata says
    ``"public": true``, else the ``predict`` scope. Answers None for anonymous callers."""

    scope = "predict"

    def __call__(self, model: str, state: StateDep, token: BearerDep) -> Principal | None:
        cached = _cached_allowed(state, token, self.scope)
        if cached is not None:
            return cached  # a known token with the scope: no need to ask if it is public
        with state.sessions() as session:
            if records.model_is_public(session, model):
                return None
        return self.check(state, token)


class PredictionGuard(Guard):
    """One asynchronous prediction by ``{request_id}``: open when it is for a public
    model (its id is unguessable), else the ``predict`` scope."""

    scope = "predict"

    def __call__(self, request_id: str, state: StateDep, token: BearerDep) -> Principal | None:
        cached = _cached_allowed(state, token, self.scope)
        if cached is not None:
            return cached
        with state.sessions() as session:
            model = session.scalar(
                select(orm.Prediction.model).where(orm.Prediction.request_id == request_id)
            )
            if model is not None and records.model_is_public(session, model):
                return None
        return self.check(state, token)


class MetricsGuard(Guard):
    """``/metrics``: open when ``settings.metrics_public``, else the ``read`` scope."""

    scope = "read"

    def __call__(self, state: StateDep, token: BearerDep) -> Principal | None:
        return None if state.settings.metrics_public else self.check(state, token)


def public() -> None:
    """Marks a route open to everyone, on purpose (health, the password login)."""


_SCOPE_GUARDS = {scope: ScopeGuard(scope) for scope in auth.SCOPES}


def require_scope(scope: str) -> Any:
    """``dependencies=[require_scope("deploy")]`` on a route or router."""
    return Depends(_SCOPE_GUARDS[scope])


PUBLIC = Depends(public)
model_predict_access = Depends(ModelPredictGuard())
metrics_access = Depends(MetricsGuard())
prediction_access = Depends(PredictionGuard())

ReadAccess = Annotated[Principal, require_scope("read")]
DeployAccess = Annotated[Principal, require_scope("deploy")]
PredictAccess = Annotated[Principal, require_scope("predict")]
AdminAccess = Annotated[Principal, require_scope("admin")]
ModelPredictAccess = Annotated[Principal | None, model_predict_access]


@dataclass(frozen=True)
class RouteInfo:
    path: str
    methods: frozenset[str]
    access: tuple[Any, ...]
    """The guards (or ``public``) the route depends on; empty for non-API routes (docs)."""
    is_api: bool


def _access_of(dependant: Dependant) -> list[Any]:
    found: list[Any] = []
    for dep in dependant.dependencies:
        if isinstance(dep.call, Guard) or dep.call is public:
            found.append(dep.call)
        found += _access_of(dep)
    return found


def route_table(app: FastAPI) -> list[RouteInfo]:
    """Every route of ``app``, through included routers (which newer FastAPI keeps lazy)."""
    contexts: Any = iter_route_contexts(app.routes) if iter_route_contexts else app.routes
    table = []
    for ctx in contexts:
        dependant = getattr(ctx, "dependant", None)
        table.append(
            RouteInfo(
                path=ctx.path,
                methods=frozenset(getattr(ctx, "methods", None) or ()),
                access=tuple(dict.fromkeys(_access_of(dependant))) if dependant else (),
                is_api=dependant is not None,
            )
        )
    return table


def check_guarded(app: FastAPI) -> None:
    """Refuse an app with a route that declares no access: fail closed, at build time."""
    for route in route_table(app):
        if route.is_api and not route.access:
            raise RuntimeError(
                f"route {sorted(route.methods)} {route.path} declares no access; add "
                "dependencies=[require_scope(...)] or dependencies=[PUBLIC]"
            )
