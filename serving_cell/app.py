"""``create_app(settings)``: the cell's HTTP face; routes delegate to the Cell and protocols."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from serving_cell.cell import Cell
from serving_cell.errors import CellError
from serving_cell.metrics import Metrics, MetricsMiddleware
from serving_cell.protocols import budgetml, mlflow, seldon, v2
from serving_cell.protocols.predict import predict
from serving_cell.protocols.shapes import error_response
from serving_cell.protocols.v2grpc.lifespan import grpc_service
from serving_cell.settings import CellSettings

logger = logging.getLogger("serving_cell")


async def live(request: Request) -> Response:
    """The process answers; says nothing about the model (see /health/ready)."""
    return JSONResponse({"state": str(request.app.state.cell.health.state)})


async def ready(request: Request) -> Response:
    """200 once loaded; else 503 with the state, the reason and the setup logs."""
    health = request.app.state.cell.health
    return JSONResponse(health.body(), status_code=200 if health.ready else 503)


async def index(request: Request) -> Response:
    cell: Cell = request.app.state.cell
    return JSONResponse(
        {
            "model": cell.name,
            "version": cell.settings.model_version,
            "contract": cell.adapter.contract if cell.adapter else None,
            "state": str(cell.health.state),
        }
    )


# Errors are answered in the shape of the protocol the path belongs to (protocols.shapes).
async def cell_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CellError)
    path, native = request.url.path, exc.native_code
    return error_response(path, exc.status_code, exc.code, exc.message, native_code=native)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    path = request.url.path
    return error_response(path, exc.status_code, code, str(exc.detail), headers=exc.headers)


async def internal_error(request: Request, exc: Exception) -> Response:
    logger.exception("unexpected error", exc_info=exc)
    message = f"{type(exc).__name__}: {exc}"
    return error_response(request.url.path, 500, "internal_error", message)


def create_app(settings: CellSettings) -> Starlette:
    """A cell app for one model folder; loading starts with the lifespan, in the background.

    The server answers health checks (STARTING) while the model loads, and keeps
    answering after a failed load (SETUP_FAILED with the reason), never exiting.
    """
    cell = Cell(settings)
    metrics = Metrics(cell)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # gRPC outside the task group: cancelling a load must not cancel its stop
        async with (
            grpc_service(cell, settings.grpc_address) as grpc_port,
            anyio.create_task_group() as tasks,
        ):
            app.state.grpc_port = grpc_port  # the port taken (tests ask for any free one)
            tasks.start_soon(cell.load)
            yield
            tasks.cancel_scope.cancel()  # a load still running is abandoned at shutdown

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/health/live", live, methods=["GET"]),
        Route("/health/ready", ready, methods=["GET"]),
        Route("/predict", predict, methods=["POST"]),
        Route("/metrics", metrics.endpoint, methods=["GET"]),
        *v2.routes(),
        *seldon.routes(),
        *mlflow.routes(),
        *budgetml.routes(),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            CellError: cell_error,
            HTTPException: http_error,
            Exception: internal_error,
        },
    )
    app.state.cell = cell
    app.add_middleware(MetricsMiddleware, metrics=metrics, routes=list[BaseRoute](routes))
    return app
