"""GET /metrics: the server's Prometheus metrics (a `read` token, unless made public)."""

from __future__ import annotations

import anyio
from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from deployserver.api.deps import StateDep, metrics_access

router = APIRouter(tags=["metrics"])


@router.get("/metrics", dependencies=[metrics_access], response_class=Response)
async def metrics(state: StateDep) -> Response:
    text = await anyio.to_thread.run_sync(state.metrics.render, state.sessions, state.worker.depth)
    return Response(text, media_type=CONTENT_TYPE_LATEST)
