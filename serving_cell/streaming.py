"""Predictions that are streams: a ``predict`` returning a generator (sync or async).

``/predict`` sends the items as they come, JSON lines by default, server-sent events
when the request accepts ``text/event-stream``; every other protocol answers with the
items gathered into one list. A sync generator runs in a worker thread, one item at a
time, so a slow or blocked script never stalls the event loop.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import StreamingResponse

from serving_cell.encoding import to_jsonable

logger = logging.getLogger("serving_cell")

JSON_LINES = "application/x-ndjson"
EVENT_STREAM = "text/event-stream"
# Nothing between the cell and the caller should hold items back (caches, a buffering
# reverse proxy in front of the server).
STREAM_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
_DONE = object()


def is_stream(value: Any) -> bool:
    """Whether a prediction is a stream of items rather than one answer."""
    return inspect.isgenerator(value) or inspect.isasyncgen(value)


async def items(stream: Any) -> AsyncIterator[Any]:
    """The stream's items; a sync generator's each computed in a worker thread. The
    generator is closed when the caller stops early (the client went away)."""
    if inspect.isasyncgen(stream):
        try:
            async for item in stream:
                yield item
        finally:
            await stream.aclose()
        return
    try:
        while True:
            item = await anyio.to_thread.run_sync(next, stream, _DONE, abandon_on_cancel=True)
            if item is _DONE:
                return
            yield item
    finally:
        stream.close()


async def collect(stream: Any) -> list[Any]:
    """Every item of the stream, for protocols that answer once."""
    return [item async for item in items(stream)]


def wants_events(request: Request) -> bool:
    return EVENT_STREAM in request.headers.get("accept", "").lower()


def _line(item: Any) -> bytes:
    return json.dumps(to_jsonable(item), separators=(",", ":")).encode() + b"\n"


def _event(item: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    data = json.dumps(to_jsonable(item), separators=(",", ":"))
    return f"{head}data: {data}\n\n".encode()


async def _encoded(stream: Any, events: bool) -> AsyncIterator[bytes]:
    """The items encoded; a script that raises mid-stream ends it with an error item
    (the status line has long been sent: the error can only travel in the stream)."""
    try:
        async for item in items(stream):
            yield _event(item) if events else _line(item)
    except Exception as exc:
        logger.exception("prediction failed while streaming")
        message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        error = {"error": {"code": "prediction_failed", "message": message}}
        yield _event(error, "error") if events else _line(error)


def stream_response(request: Request, stream: Any) -> StreamingResponse:
    """The stream as JSON lines, or as server-sent events when the caller accepts them."""
    events = wants_events(request)
    return StreamingResponse(
        _encoded(stream, events),
        media_type=EVENT_STREAM if events else JSON_LINES,
        headers=STREAM_HEADERS,
    )
