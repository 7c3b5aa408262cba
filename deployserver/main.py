"""create_app(settings): the lifespan, the routers and the error handlers; nothing else."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime

import httpx
from fastapi import FastAPI

from deployserver import auth, db, orm
from deployserver.api import auth as auth_api
from deployserver.api import deployments, health, models, tokens, users
from deployserver.api.deps import check_guarded
from deployserver.config import Settings
from deployserver.handlers import install_error_handlers
from deployserver.reconciler import Reconciler
from deployserver.runtime.base import CellRuntime
from deployserver.runtime.select import build_runtime, instance_id
from deployserver.state import AppState

log = logging.getLogger("deployserver")


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
        with sessions.begin() as session:
            auth.ensure_admin_token(session, settings=settings, now=clock())
        cell_runtime = runtime or build_runtime(settings, instance_id(settings.data_dir))
        http = httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=2.0))
        reconciler = Reconciler(
            settings=settings, sessions=sessions, runtime=cell_runtime, http=http
        )
        app.state.ds = AppState(
            settings=settings,
            engine=engine,
            sessions=sessions,
            runtime=cell_runtime,
            reconciler=reconciler,
            http=http,
            clock=clock,
        )
        log.info("database %s, data folder %s", engine.url.render_as_string(), settings.data_dir)
        loop_task = asyncio.create_task(reconciler.run_forever(), name="reconciler")
        try:
            yield
        finally:
            loop_task.cancel()
            await asyncio.gather(loop_task, return_exceptions=True)
            await reconciler.close()
            await http.aclose()
            engine.dispose()

    app = FastAPI(title="deployserver", version="0.1.0", lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(deployments.router)
    app.include_router(models.router)
    app.include_router(tokens.router)
    app.include_router(users.router)
    app.include_router(auth_api.router)
    check_guarded(app)
    return app
