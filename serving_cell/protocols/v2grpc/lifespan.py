"""The cell's gRPC service started and stopped with the HTTP app's lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from serving_cell.cell import Cell

logger = logging.getLogger("serving_cell")
STOP_GRACE = 5.0
"""Seconds calls in flight get to finish when the cell stops."""


@asynccontextmanager
async def grpc_service(cell: Cell, address: str | None) -> AsyncIterator[int | None]:
    """Serve ``cell`` over gRPC on ``address`` while the block runs; yields the port taken
    (None when ``address`` is None, or when gRPC cannot load here).

    A port that cannot be bound fails the cell's start, as its HTTP port would. But a
    deployment whose requirements replaced grpcio or protobuf with versions the service's
    generated code cannot run on still serves HTTP: its log says why gRPC is off.
    """
    if address is None:
        yield None
        return
    try:
        from serving_cell.protocols.v2grpc.servicer import start_server
    except Exception as exc:  # VersionError, ImportError, ... from the deployment's packages
        logger.error("gRPC is off: its modules do not load here (%s: %s)", type(exc).__name__, exc)
        yield None
        return
    server, port = await start_server(cell, address)
    logger.info("gRPC inference service on port %d", port)
    try:
        yield port
    finally:
        with anyio.CancelScope(shield=True):  # stopped whole, even by a cancelled lifespan
            await server.stop(STOP_GRACE)
