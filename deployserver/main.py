"""create_app(settings): the lifespan, the routers and the error handlers; nothing else."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import httpx
from fastapi import FastAPI
from starlette.types import ASGIApp

from deployserver.access import credentials
from deployserver.access.login_limits import LoginGuard
from deployserver.access.token_cache import TokenCache
from deployserver.api import auth as auth_api
from deployserver.api import (
    cells,
    dataloop,
    deployments,
    events,
    health,
    models,
    predictions,
    tokens,
    ui,
    users,
)
from deployserver.api import metrics as metrics_api
from deployserver.api.deps import check_guarded
from deployserver.api.handlers import install_error_handlers
from deployserver.api.limits import BodyIdleTimeout
from deployserver.api.openapi import document_errors
from deployserver.config import Settings
from deployserver.control.reconciler import Reconciler
from deployserver.runtime.base import CellRuntime
from deployserver.runtime.select import build_runtime, instance_id
from deployserver.serving.async_worker import PredictionWorker
from deployserver.serving.balance import Load
from deployserver.serving.cellcall import cell_session
from deployserver.serving.grpclistener import start_listener
from deployserver.serving.proxy import ServeProxy, cell_client
from deployserver.serving.routetable import RouteTable
from deployserver.serving.telemetry import ServerMetrics
from deployserver.serving.wake import Waker
from deployserver.serving.webhooks import WebhookSender, webhook_secret
from deployserver.state import AppState
from deployserver.store import db, orm
from deployserver.store.eventhub import EventHub
from deployserver.store.readcache import RecordCache
from deployserver.ui import assets
from deployserver.upload import storage

log = logging.getLogger("deployserver")


class DeployServerApp(FastAPI):
    """FastAPI with /serve/{model}/... in front of its whole middleware stack: that is the
    data path, and it needs none of the API's layers (it checks its own token: the
    'predict' scope, or none for a public model)."""

    settings: Settings

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            self.openapi_schema = document_errors(self, super().openapi())
        return self.openapi_schema

    def stopping(self) -> None:
        """The server starts to stop: end the answers that never end by themselves (event
        streams), so that the shutdown does not wait its whole grace for them."""
        state: AppState | None = getattr(self.state, "ds", None)
        if state is not None:
            state.events.close()

    def build_middleware_stack(self) -> ASGIApp:
        stack = ServeProxy(super().build_middleware_stack())
        return BodyIdleTimeout(stack, self.settings.body_idle_timeout)


def create_app(
    settings: Settings | None = None,
    *,
    runtime: CellRuntime | None = None,
    clock: Callable[[], datetime] = orm.utcnow,
    scale_clock: Callable[[], float] = time.monotonic,
) -> FastAPI:
    """Build the server for ``settings`` (read from the environment when omitted).

    ``runtime`` replaces the one the settings name, ``clock`` tells the time for token
    expiry and ``scale_clock`` the seconds the autoscaler counts: tests pass their own."""
    settings = settings or Settings()
    # Login limits count seconds: monotonic ones, unless a test moves the clock by hand.
    login_clock = time.monotonic if clock is orm.utcnow else (lambda: clock().timestamp())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = db.prepare(settings)
        swept = storage.sweep(settings.staging_dir)  # only here: no upload is in flight yet
        if swept:
            log.info("removed %d upload(s) or deletion(s) left unfinished in staging", swept)
        engine = db.make_engine(url)
        sessions = db.make_sessionmaker(engine)
        record_cache = RecordCache()
        record_cache.watch(sessions)
        hub = EventHub(
            queue_size=settings.events_queue_size, max_subscribers=settings.events_max_streams
        )
        hub.bind(asyncio.get_running_loop())
        hub.watch(sessions)
        with sessions.begin() as session:
            credentials.ensure_admin_token(session, settings=settings, now=clock())
        cell_runtime = runtime or build_runtime(settings, instance_id(settings.data_dir))
        http = httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=2.0))
        routes = RouteTable(
            sessions,
            max_entries=settings.lookup_cache_entries,
            max_unknown=settings.lookup_cache_misses,
        )
        webhooks = WebhookSender(settings, webhook_secret(settings))
        session_to_cells = cell_session(settings.proxy_timeout)
        proxy_client = cell_client(settings.proxy_timeout)
        load = Load(scale_clock)
        reconciler = Reconciler(
            settings=settings,
            sessions=sessions,
            runtime=cell_runtime,
            http=http,
            on_change=routes.invalidate,
            load=load,
            scale_clock=scale_clock,
        )
        waker = Waker(settings, routes, load, resume=reconciler.awake.resume, nudge=reconciler.wake)
        worker = PredictionWorker(
            settings=settings,
            sessions=sessions,
            routes=routes,
            cells=session_to_cells,
            webhooks=webhooks,
            load=load,
            waker=waker,
        )
        app.state.ds = AppState(
            settings=settings,
            engine=engine,
            sessions=sessions,
            runtime=cell_runtime,
            reconciler=reconciler,
            http=http,
            routes=routes,
            cell_client=proxy_client,
            worker=worker,
            load=load,
            waker=waker,
            metrics=ServerMetrics(),
            token_cache=TokenCache(
                max_entries=settings.lookup_cache_entries,
                max_refused=settings.lookup_cache_misses,
            ),
            record_cache=record_cache,
            login_guard=LoginGuard.from_settings(settings, login_clock),
            events=hub,
            ui=assets.load(),
            clock=clock,
        )
        log.info("database %s, data folder %s", engine.url.render_as_string(), settings.data_dir)
        services = [
            asyncio.create_task(reconciler.run_forever(), name="reconciler"),
            asyncio.create_task(worker.run_forever(), name="predictions"),
        ]
        grpc_listener = None
        try:
            if settings.grpc_port is not None:  # in this loop, beside the HTTP server
                grpc_listener = await start_listener(app.state.ds)
                app.state.ds.grpc_port = grpc_listener.port
                log.info("gRPC inference service on %s:%d", settings.host, grpc_listener.port)
            yield
        finally:
            hub.close()
            if grpc_listener is not None:
                await grpc_listener.stop(settings.shutdown_grace)
            for task in services:
                task.cancel()
            await asyncio.gather(*services, return_exceptions=True)
            await reconciler.close()
            await worker.close()
            await http.aclose()
            await webhooks.aclose()
            await session_to_cells.close()
            await proxy_client.close()
            await asyncio.to_thread(cell_runtime.close)
            engine.dispose()

    app = DeployServerApp(title="deployserver", version="0.1.0", lifespan=lifespan)
    app.settings = settings
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(deployments.router)
    app.include_router(models.router)
    app.include_router(cells.router)
    app.include_router(events.router)
    app.include_router(predictions.router)
    app.include_router(dataloop.router)
    app.include_router(metrics_api.router)
    app.include_router(tokens.router)
    app.include_router(users.router)
    app.include_router(auth_api.router)
    app.include_router(ui.router)
    check_guarded(app)
    return app
