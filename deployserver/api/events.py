"""GET /api/v1/events/stream: deployment events as server-sent events, as they commit."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse

from deployserver.api.deps import BearerDep, ReadAccess, StateDep
from deployserver.api.openapi import errors
from deployserver.errors import BadRequest, DeployServerError, TooManyStreams
from deployserver.schemas import StreamEvent
from deployserver.state import AppState
from deployserver.store import queries
from deployserver.store.eventhub import FeedEvent, StreamEnded

router = APIRouter(prefix="/api/v1/events", tags=["events"])

RETRY_MS = 2000
"""How long a reader that lost the stream waits before reconnecting (SSE ``retry``)."""
REPLAY_PAGE = 200
REPLAY_MAX = 1000
"""Most recorded events one reconnection replays; past it the stream says ``gap``."""


def frame(item: FeedEvent) -> bytes:
    """One event in the text/event-stream format; its id is the events row's."""
    data = StreamEvent.model_validate(item, from_attributes=True).model_dump_json()
    head = f"id: {item.id}\n" if item.id is not None else ""
    return f"{head}data: {data}\n\n".encode()


def notice(kind: str, message: str) -> bytes:
    """A named event about the stream itself (``end``, ``gap``), not about a deployment."""
    return f"event: {kind}\ndata: {json.dumps({'message': message})}\n\n".encode()


def _last_seen(since: int | None, last_event_id: str | None) -> int | None:
    if last_event_id is None:
        return since
    text = last_event_id.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 18):
        raise BadRequest("Last-Event-ID must be the id of an event this stream sent")
    return int(text)


def _still_allowed(state: AppState, token: str) -> str | None:
    """None while ``token`` still reads; else why the stream ends."""
    try:
        principal = state.token_cache.authenticate(state.sessions, token, state.clock())
    except DeployServerError as exc:
        return f"the token no longer holds: {exc.message}"
    if not principal.allows("read"):
        return "the token no longer holds the 'read' scope"
    return None


@router.get(
    "/stream",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "one `data:` line of JSON per deployment event, as it commits",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **errors(400, s503="as many event streams are open as the server keeps (Retry-After)"),
    },
)
async def event_stream(
    state: StateDep,
    caller: ReadAccess,
    token: BearerDep,
    model: str | None = None,
    deploy_id: str | None = None,
    since: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
    tail: Annotated[int | None, Query(ge=1, le=REPLAY_MAX)] = None,
    follow: bool = True,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> StreamingResponse:
    """Deployment events (``{"deploy_id", "model", "version", "at", "kind", "message",
    "status", "actor"}``) as server-sent events, as they commit, optionally of one
    ``model`` or ``deploy_id``. Recorded ones come first: those after ``since`` (an event
    id; a ``Last-Event-ID`` header, as a reconnecting reader sends, counts the same), or
    the last ``tail`` ones. ``follow=false`` ends the answer after them. Keep-alive comments
    flow while nothing happens; the stream ends (``event: end``) when the token is
    revoked or expires, when the reader falls too far behind, or when the server stops."""
    after = _last_seen(since, last_event_id)
    if after is not None and tail is not None:
        raise BadRequest("give 'since' (or Last-Event-ID) or 'tail', not both")
    hub = state.events
    if follow and hub.full():
        raise TooManyStreams("too many event streams are open; try again soon", retry_after=5)
    settings = state.settings
    expires_at = caller.expires_at

    async def recorded(replayed: set[int]) -> AsyncIterator[bytes]:
        if tail is not None:
            for item in await anyio.to_thread.run_sync(
                _replay, state, None, model, deploy_id, tail
            ):
                replayed.add(item.id or 0)
                yield frame(item)
            return
        cursor = after
        while cursor is not None and len(replayed) < REPLAY_MAX:
            page = await anyio.to_thread.run_sync(
                _replay, state, cursor, model, deploy_id, REPLAY_PAGE
            )
            for item in page:
                replayed.add(item.id or 0)
                cursor = item.id or cursor
                yield frame(item)
            if len(page) < REPLAY_PAGE:
                return
        if cursor is not None:
            yield notice("gap", f"more than {REPLAY_MAX} events since {after}; reload")

    async def body() -> AsyncIterator[bytes]:
        with hub.subscribe(model=model, deploy_id=deploy_id) as sub:
            yield f"retry: {RETRY_MS}\n\n".encode()
            replayed: set[int] = set()
            async for chunk in recorded(replayed):
                yield chunk
            if not follow:
                return
            while True:
                try:
                    item = await sub.get(settings.events_keepalive)
                except StreamEnded as ended:
                    yield notice("end", ended.reason)
                    return
                if item is None:
                    why = None
                    if expires_at is not None and expires_at <= state.clock():
                        why = "the token expired"
                    elif token:
                        why = await anyio.to_thread.run_sync(_still_allowed, state, token)
                    if why is not None:
                        yield notice("end", why)
                        return
                    yield b": keep-alive\n\n"
                elif item.id is None or item.id not in replayed:
                    yield frame(item)

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)


def _replay(
    state: AppState, after: int | None, model: str | None, deploy_id: str | None, limit: int
) -> list[FeedEvent]:
    with state.sessions() as session:
        return queries.events_after(session, after, model=model, deploy_id=deploy_id, limit=limit)
