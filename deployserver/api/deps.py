"""Annotated dependency aliases: the app state, settings, a database session, and access.

Every route declares who may call it, through exactly these: ``require_scope(scope)``
(or the ``ReadAccess``/``DeployAccess``/``PredictAccess``/``AdminAccess`` aliases that
also hand the caller's Principal to the handler), ``TokenAccess`` (any valid token,
whatever its scopes: a caller asking who it is), ``model_predict_access`` for
prediction routes that take ``{model}`` (``async_model_predict_access`` for asynchronous
ones), ``metrics_access``, or ``PUBLIC``.
``check_guarded(app)`` refuses to build an app with a route that declares none.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.dependencies.models import Dependant

try:  # FastAPI >= 0.16x keeps included routers lazy; this walks through them
    from fastapi.routing import iter_route_contexts

    HAS_ROUTE_CONTEXTS = True
except ImportError:  # pragma: no cover - older FastAPI lists every route in app.routes
    HAS_ROUTE_CONTEXTS = False
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.orm import Session

from deployserver.access import credentials
from deployserver.access.authorize import (
    authorize,
    model_is_public,
    prediction_is_public,
    remembered,
)
from deployserver.access.credentials import Principal
from deployserver.config import Settings
from deployserver.errors import NotAuthenticated
from deployserver.state import AppState
from deployserver.store.predictions import Viewer


async def get_state(request: Request) -> AppState:
    """The app's state. ``async`` on purpose, as ``get_settings``: FastAPI runs a plain
    function dependency in a worker thread, a thread hop per request for an attribute."""
    state: AppState = request.app.state.ds
    return state


async def get_settings(state: Annotated[AppState, Depends(get_state)]) -> Settings:
    return state.settings


def get_session(state: Annotated[AppState, Depends(get_state)]) -> Iterator[Session]:
    with state.sessions() as session:
        yield session


StateDep = Annotated[AppState, Depends(get_state)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]

# Reads "Authorization: Bearer ..." and tells the OpenAPI docs how to log in.
bearer = OAuth2PasswordBearer(
    tokenUrl="/api/v1/auth/token", scopes=credentials.SCOPES, auto_error=False
)
BearerDep = Annotated[str | None, Depends(bearer)]


class Guard:
    """A dependency that decides access; ``scope`` is what a token needs to pass it."""

    scope: str

    async def check(self, state: AppState, token: str | None) -> Principal:
        return await authorize(state.token_cache, state.sessions, token, self.scope, state.clock())

    def remembered(self, state: AppState, token: str | None) -> Principal | None:
        return remembered(state.token_cache, token, self.scope, state.clock())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.scope!r})"


class ScopeGuard(Guard):
    """The caller must hold ``scope``; answers the caller's Principal."""

    def __init__(self, scope: str) -> None:
        self.scope = scope

    async def __call__(self, state: StateDep, token: BearerDep) -> Principal:
        return await self.check(state, token)


class AnyTokenGuard(ScopeGuard):
    """Any valid token, whatever its scopes; answers the caller's Principal."""

    ANY = "any"

    def __init__(self) -> None:
        super().__init__(self.ANY)

    async def check(self, state: AppState, token: str | None) -> Principal:
        return await authorize(state.token_cache, state.sessions, token, None, state.clock())


class ModelPredictGuard(Guard):
    """Predictions for ``{model}``: open when its active deployment's metadata says
    ``"public": true``, else the ``predict`` scope. Answers None for anonymous callers."""

    scope = "predict"

    async def __call__(self, model: str, state: StateDep, token: BearerDep) -> Principal | None:
        known = self.remembered(state, token)
        if known is not None:
            return known  # a known token with the scope: no need to ask if it is public
        if await model_is_public(state.sessions, model):
            return None
        return await self.check(state, token)


ASYNC_ANONYMOUS_OFF = (
    "asynchronous predictions need a token with the 'predict' scope "
    "('Authorization: Bearer <token>'), even for a public model: the server keeps their "
    "requests and results (DEPLOYSERVER_ASYNC_ANONYMOUS=true opens them)"
)


class AsyncModelPredictGuard(ModelPredictGuard):
    """Asynchronous predictions for ``{model}``: as ``ModelPredictGuard`` when
    ``settings.async_anonymous``, else always the ``predict`` scope."""

    async def __call__(self, model: str, state: StateDep, token: BearerDep) -> Principal | None:
        if state.settings.async_anonymous:
            return await super().__call__(model, state, token)
        if not token:
            raise NotAuthenticated(ASYNC_ANONYMOUS_OFF)
        return await self.check(state, token)


class PredictionGuard(Guard):
    """One asynchronous prediction by ``{request_id}``: when ``settings.async_anonymous``,
    open when it is for a public model (its id is unguessable); else the ``predict`` scope."""

    scope = "predict"

    async def __call__(
        self, request_id: str, state: StateDep, token: BearerDep
    ) -> Principal | None:
        known = self.remembered(state, token)
        if known is not None:
            return known
        if not state.settings.async_anonymous:
            if not token:
                raise NotAuthenticated(ASYNC_ANONYMOUS_OFF)
            return await self.check(state, token)
        if await prediction_is_public(state.sessions, request_id):
            return None
        return await self.check(state, token)


class MetricsGuard(Guard):
    """``/metrics``: open when ``settings.metrics_public``, else the ``read`` scope."""

    scope = "read"

    async def __call__(self, state: StateDep, token: BearerDep) -> Principal | None:
        return None if state.settings.metrics_public else await self.check(state, token)


def public() -> None:
    """Marks a route open to everyone, on purpose (health, the password login)."""


_SCOPE_GUARDS = {scope: ScopeGuard(scope) for scope in credentials.SCOPES}


def require_scope(scope: str) -> Any:
    """``dependencies=[require_scope("deploy")]`` on a route or router."""
    return Depends(_SCOPE_GUARDS[scope])


PUBLIC = Depends(public)
model_predict_access = Depends(ModelPredictGuard())
async_model_predict_access = Depends(AsyncModelPredictGuard())
metrics_access = Depends(MetricsGuard())
prediction_access = Depends(PredictionGuard())

ReadAccess = Annotated[Principal, require_scope("read")]
DeployAccess = Annotated[Principal, require_scope("deploy")]
PredictAccess = Annotated[Principal, require_scope("predict")]
AdminAccess = Annotated[Principal, require_scope("admin")]
TokenAccess = Annotated[Principal, Depends(AnyTokenGuard())]
ModelPredictAccess = Annotated[Principal | None, model_predict_access]
AsyncPredictAccess = Annotated[Principal | None, async_model_predict_access]
PredictionAccess = Annotated[Principal | None, prediction_access]


def viewer(caller: Principal | None) -> Viewer:
    """Who asks about predictions: each one is its submitter's (an admin sees all)."""
    if caller is None:
        return Viewer(None)
    return Viewer(caller.name, admin=caller.allows("admin"))


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
    contexts: Any = iter_route_contexts(app.routes) if HAS_ROUTE_CONTEXTS else app.routes
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
