"""Routes for asynchronous predictions: submit (202 at once), read, list, delete."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import JSONResponse, StreamingResponse

from deployserver.api.deps import (
    AsyncPredictAccess,
    PredictAccess,
    PredictionAccess,
    StateDep,
    viewer,
)
from deployserver.api.openapi import errors
from deployserver.domain import FINISHED_PREDICTIONS, PredictionStatus
from deployserver.errors import BadRequest, Conflict, PredictionNotFound, UploadTooLarge
from deployserver.schemas import PredictionList, PredictionRead
from deployserver.serving import quotas
from deployserver.serving.cellpath import DEFAULT_PATH, MAX_LENGTH, BadCellPath, check_cell_path
from deployserver.serving.results import open_result, read_span, remove_result
from deployserver.serving.webhooks import AddressPolicy, check_url
from deployserver.store import db, orm, predictions, queries
from deployserver.store.predictions import Claim, Viewer

router = APIRouter(tags=["predictions"])
MAX_WAIT = 60.0
"""Longest long poll (``GET /api/v1/predictions/{id}?wait=``), in seconds."""
JSON_TYPE = "application/json"


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused past ``limit`` bytes (before reading, when it says so)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise UploadTooLarge(f"a prediction body is limited to {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise UploadTooLarge(f"a prediction body is limited to {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def enqueue(
    state: Any,
    *,
    model: str,
    body: bytes,
    content_type: str,
    actor: str | None,
    webhook: str | None = None,
    path: str | None = None,
) -> str:
    """Queue one prediction of ``model`` within the quotas; its request_id. When one of
    the model's slots is free, its cell ready and nothing of it queued, the prediction is
    stored running and sent at once; otherwise the worker is woken to take it."""
    settings = state.settings
    if len(content_type) > 200:
        raise BadRequest("Content-Type header too long")
    request_id = secrets.token_hex(16)
    worker = state.worker
    stored = worker.stored

    def queue(slot: bool) -> Claim | None:
        with state.sessions.begin() as session:
            if not slot:  # a reserved slot: the route just resolved says the model exists
                queries.get_model(session, model)
            queued = quotas.check_submission(
                session, settings, stored, model=model, actor=actor, incoming=len(body)
            )
            now = orm.utcnow() if slot and not queued else None
            values = {
                "request_id": request_id,
                "model": model,
                "content_type": content_type,
                "body": body,
                "request_bytes": len(body),
                "webhook": webhook,
                "actor": actor,
                "path": path,
            }
            pid = predictions.add(session, values, running_since=now)
        if now is None:
            return None
        return Claim(pid, request_id, model, content_type, body, webhook, actor, path)

    slot = await worker.reserve(model)
    with anyio.CancelScope(shield=True):  # a row stored running must be started
        try:
            claim = await anyio.to_thread.run_sync(queue, slot)
        except BaseException:
            if slot:
                worker.release(model)
            raise
        if claim is not None:
            worker.start_claimed(claim)
        elif slot:
            worker.release(model)
    stored.add(model, actor, len(body))
    if not state.routes.known(model):
        state.routes.invalidate(model)  # it exists: a cached "unknown" must not fail it
    if claim is None:
        worker.queued(model)
    return request_id


@router.post(
    "/api/v1/models/{model}/predictions",
    status_code=status.HTTP_202_ACCEPTED,
    responses=errors(400, 413, 429, 507),
)
async def submit_prediction(
    model: str,
    request: Request,
    response: Response,
    state: StateDep,
    caller: AsyncPredictAccess,
    webhook: str | None = None,
    path: Annotated[str | None, Query(max_length=MAX_LENGTH)] = None,
) -> dict[str, Any]:
    """Queue a prediction (body as for the cell's /predict, or for the cell ``path`` it
    names: ``api/v1.0/predictions``, ``v2/models/{model}/infer``, ...); poll it by
    request_id. Its result is ``predictions`` of /predict's answer, or another path's
    whole answer."""
    settings = state.settings
    hook = check_url(webhook, AddressPolicy.from_settings(settings)) if webhook else None
    try:
        cell_path = None if path in (None, DEFAULT_PATH) else check_cell_path(path)
    except BadCellPath as exc:
        raise BadRequest(f"path: {exc}") from None
    body = await _read_body(request, settings.max_prediction_bytes)
    content_type = request.headers.get("content-type") or "application/json"
    request_id = await enqueue(
        state,
        model=model,
        body=body,
        content_type=content_type,
        actor=caller.name if caller else None,
        webhook=hook,
        path=cell_path,
    )
    response.headers["Location"] = f"/api/v1/predictions/{request_id}"
    return {"request_id": request_id, "status": PredictionStatus.QUEUED}


def _get(state: Any, request_id: str, who: Viewer) -> orm.Prediction:
    with state.sessions() as session:
        return predictions.visible(session, request_id, who)


async def _open(state: Any, p: orm.Prediction) -> Any:
    try:
        return await anyio.to_thread.run_sync(open_result, state.settings.data_dir, p.request_id)
    except FileNotFoundError:
        raise PredictionNotFound(f"no prediction {p.request_id!r}") from None  # just deleted


@router.get(
    "/api/v1/predictions/{request_id}", response_model=PredictionRead, response_class=Response
)
async def get_prediction(
    request_id: str,
    state: StateDep,
    caller: PredictionAccess,
    wait: Annotated[
        float,
        Query(
            ge=0,
            le=MAX_WAIT,
            description="seconds to wait for the prediction to finish before answering "
            "(a long poll: the answer comes the moment it succeeds or fails)",
        ),
    ] = 0,
) -> dict[str, Any] | Response:
    """The record (yours: a prediction is its submitter's); a JSON result kept in a file
    is streamed into it, never loaded whole. With ``?wait=S``, answered once the prediction
    has finished, or after ``S`` seconds as it is then."""
    found = await db.read(state.sessions, _get, state, request_id, viewer(caller))
    if wait and found.status not in FINISHED_PREDICTIONS:
        found = await state.worker.wait_done(request_id, wait, found) or found
    record = predictions.to_read(found).model_dump(mode="json")
    answer = await with_result(state, found, record, "result")
    return JSONResponse(answer) if isinstance(answer, dict) else answer


async def with_result(
    state: Any, found: orm.Prediction, record: dict[str, Any], key: str
) -> dict[str, Any] | Response:
    """``record`` as the answer, with ``found``'s JSON result under ``key``: as it is when
    inline, streamed from its file into the JSON when kept in one."""
    if found.result_offset is None or found.result_type != JSON_TYPE:
        return record
    fh = await _open(state, found)
    record.pop(key, None)
    head = json.dumps(record)[:-1].encode() + f", {json.dumps(key)}: ".encode()
    offset, end = found.result_offset, found.result_bytes

    async def body() -> AsyncIterator[bytes]:
        yield head
        async for chunk in read_span(fh, offset, end):
            yield chunk
        yield b"}"

    length = len(head) + (end - offset) + 1
    return StreamingResponse(body(), media_type=JSON_TYPE, headers={"content-length": str(length)})


@router.get(
    "/api/v1/predictions/{request_id}/result",
    response_model=None,
    responses=errors(s409="the prediction has not succeeded (yet)"),
)
async def get_prediction_result(
    request_id: str, state: StateDep, caller: PredictionAccess
) -> Response:
    """The result alone, as the cell answered it: JSON, or the cell's own media type."""
    found = await anyio.to_thread.run_sync(_get, state, request_id, viewer(caller))
    if found.status is not PredictionStatus.SUCCEEDED:
        raise Conflict(f"prediction {request_id!r} has no result: it is {found.status}")
    if found.result_offset is None:
        return JSONResponse(found.result)
    fh = await _open(state, found)
    offset, end = found.result_offset, found.result_bytes
    return StreamingResponse(
        read_span(fh, offset, end),
        media_type=found.result_type or "application/octet-stream",
        headers={"content-length": str(end - offset)},
    )


@router.delete("/api/v1/predictions/{request_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_prediction(request_id: str, state: StateDep, caller: PredictionAccess) -> Response:
    """Forget a prediction (yours) and its result; one still running finishes but its
    result is dropped."""
    with state.sessions.begin() as session:
        if not predictions.delete_visible(session, viewer(caller), request_id=request_id):
            raise PredictionNotFound(f"no prediction {request_id!r}")
    remove_result(state.settings.data_dir, request_id)
    state.worker.stored.forget()  # the quota it took is free at once
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/api/v1/predictions")
def list_predictions(
    state: StateDep,
    caller: PredictAccess,
    model: str | None = None,
    status: PredictionStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> PredictionList:
    """Your predictions (an admin's: everyone's), newest first; pass ``next_cursor`` back
    as ``cursor`` for the next page. A result kept in a file is ``null`` here: read it by
    id, or at its ``result_url``."""
    before = queries.decode_cursor(cursor) if cursor else None
    with state.sessions() as session:
        rows = predictions.page(
            session, viewer(caller), model=model, status=status, before=before, limit=limit + 1
        )
        page, next_cursor = queries.paginate(rows, limit, lambda p: p.id)
        return PredictionList(items=[predictions.to_read(p) for p in page], next_cursor=next_cursor)
