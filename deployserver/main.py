"""create_app(settings): the lifespan, the routers and the error handlers; nothing else."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from deployserver import db
from deployserver.api import deployments, health, models
from deployserver.config import Settings
from deployserver.handlers import install_error_handlers
from deployserver.state import AppState

log = logging.getLogger("deployserver")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the server for ``settings`` (read from the environment when omitted)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for folder in (settings.data_dir, settings.deployments_dir, settings.staging_dir):
            folder.mkdir(parents=True, exist_ok=True)
        url = settings.resolved_database_url
        db.upgrade(url)
        engine = db.make_engine(url)
        app.state.ds = AppState(
            settings=settings, engine=engine, sessions=db.make_sessionmaker(engine)
        )
        log.info("database %s, data folder %s", engine.url.render_as_string(), settings.data_dir)
        try:
            yield
        finally:
            engine.dispose()

    app = FastAPI(title="deployserver", version="0.1.0", lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(deployments.router)
    app.include_router(models.router)
    return app
