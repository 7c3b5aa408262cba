"""create_app(settings): the lifespan, the routers and the error handlers; nothing else."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime

import httpx
from fastapi import FastAPI
from starlette.types import ASGIApp

from deployserver import auth, db, orm
from deployserver.api import auth as auth_api
from deployserver.api import deployments, health, models, predictions, tokens, users
from deployserver.api import metrics as metrics_api
from deployserver.api.deps import check_guarded
from deployserver.config import Settings
from deployserver.handlers import install_error_handlers
from deployserver.metrics import ServerMetrics
from deployserver.predictions import PredictionWorker
from deployserver.proxy import ServeProxy, cell_session
from deployserver.readcache import RecordCache
from deployserver.reconciler import Reconciler
from deployserver.routes import RouteTable
from deployserver.runtime.base import CellRuntime
from deployserver.runtime.select import build_runtime, instance_id
from deployserver.state import AppState
from deployserver.token_cache import TokenCache

log = logging.getLogger("deployserver")


class DeployServerApp(FastAPI):
    """FastAPI with /serve/{model}/... in front of its whole middleware stack: that is the
    data path, and it needs none of the API's layers (it checks its own token: the
    'predict' scope, or none for a public model)."""

    def build_middleware_stack(self) -> ASGIApp:
        return ServeProxy(super().build_middleware_stack())


def create_app(
    settings: Settings | None = None,
    *,
    runtime: CellRuntime | None = None,
    clock: Callable[[], datetime] = orm.utcnow,
) -> FastAPI:
    """Build the server for ``settings`` (read from the environment when omitted).

    ``runtime`` replaces the one the settings name and ``clock`` tells the time for
    token expiry: tests pass their own of both."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for folder in (settings.data_dir, settings.deployments_dir, settings.staging_dir):
            folder.mkdir(parents=True, exist_ok=True)
        url = settings.resolved_database_url
        db.upgrade(url)
        engine = db.make_engine(url)
        sessions = db.make_sessionmaker(engine)
        record_cache = RecordCache()
        record_cache.watch(sessions)
        with sessions.begin() as session:
            auth.ensure_admin_token(session, settings=settings, now=clock())
        cell_runtime = runtime or build_runtime(settings, instance_id(settings.data_dir))
        http = httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=2.0))
        routes = RouteTable(sessions)
        proxy_client = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.async_timeout, connect=2.0),
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=64),
        )
        session_to_cells = cell_session(settings.proxy_timeout)
        reconciler = Reconciler(
            settings=settings,
            sessions=sessions,
            runtime=cell_runtime,
            http=http,
            on_change=routes.invalidate,
        )
        worker = PredictionWorker(
            settings=settings,
            sessions=sessions,
            routes=routes,
            client=proxy_client,
            cells=session_to_cells,
        )
        app.state.ds = AppState(
            settings=settings,
            engine=engine,
            sessions=sessions,
            runtime=cell_runtime,
            reconciler=reconciler,
            http=http,
            routes=routes,
            proxy_client=proxy_client,
            cell_session=session_to_cells,
            worker=worker,
            metrics=ServerMetrics(),
            token_cache=TokenCache(),
            record_cache=record_cache,
            clock=clock,
        )
        log.info("database %s, data folder %s", engine.url.render_as_string(), settings.data_dir)
        services = [
            asyncio.create_task(reconciler.run_forever(), name="reconciler"),
            asyncio.create_task(worker.run_forever(), name="predictions"),
        ]
        try:
            yield
        finally:
            for task in services:
                task.cancel()
            await asyncio.gather(*services, return_exceptions=True)
            await reconciler.close()
            await worker.close()
            await http.aclose()
            await proxy_client.aclose()
            await session_to_cells.close()
            engine.dispose()

    app = DeployServerApp(title="deployserver", version="0.1.0", lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(deployments.router)
    app.include_router(models.router)
    app.include_router(predictions.router)
    app.include_router(metrics_api.router)
    app.include_router(tokens.router)
    app.include_router(users.router)
    app.include_router(auth_api.router)
    check_guarded(app)
    return app
