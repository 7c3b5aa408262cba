"""Routes for asynchronous predictions: submit (202 at once), read, list, delete."""

from __future__ import annotations

import secrets
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Query, Request, Response, status
from pydantic import AnyHttpUrl
from sqlalchemy import select

from deployserver import orm, records
from deployserver.api.deps import (
    ModelPredictAccess,
    StateDep,
    prediction_access,
    require_scope,
)
from deployserver.errors import BadRequest, PredictionNotFound, UploadTooLarge
from deployserver.predictions import to_record

router = APIRouter(tags=["predictions"])
PredictionStatus = Literal["queued", "running", "succeeded", "failed"]


@router.post("/api/v1/models/{model}/predictions", status_code=status.HTTP_202_ACCEPTED)
async def submit_prediction(
    model: str,
    request: Request,
    response: Response,
    state: StateDep,
    caller: ModelPredictAccess,
    webhook: AnyHttpUrl | None = None,
) -> dict[str, Any]:
    """Queue a prediction (body as for the cell's /predict); poll it by request_id."""
    limit = state.settings.max_prediction_bytes
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise UploadTooLarge(f"a prediction body is limited to {limit} bytes")
    content_type = request.headers.get("content-type") or "application/json"
    if len(content_type) > 200:
        raise BadRequest("Content-Type header too long")
    request_id = secrets.token_hex(16)

    def queue() -> None:
        with state.sessions.begin() as session:
            records.get_model(session, model)
            session.add(
                orm.Prediction(
                    request_id=request_id,
                    model=model,
                    status="queued",
                    content_type=content_type,
                    body=bytes(body),
                    webhook=str(webhook) if webhook else None,
                    actor=caller.name if caller else None,
                )
            )

    await anyio.to_thread.run_sync(queue)
    if not state.routes.known(model):
        state.routes.invalidate(model)  # it exists: a cached "unknown" must not fail it
    state.worker.wake()
    response.headers["Location"] = f"/api/v1/predictions/{request_id}"
    return {"request_id": request_id, "status": "queued"}


def _get(state: Any, request_id: str) -> orm.Prediction:
    with state.sessions() as session:
        found = session.scalar(
            select(orm.Prediction).where(orm.Prediction.request_id == request_id)
        )
    if found is None:
        raise PredictionNotFound(f"no prediction {request_id!r}")
    return found


@router.get("/api/v1/predictions/{request_id}", dependencies=[prediction_access])
def get_prediction(request_id: str, state: StateDep) -> dict[str, Any]:
    return to_record(_get(state, request_id))


@router.delete(
    "/api/v1/predictions/{request_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=[prediction_access],
)
def delete_prediction(request_id: str, state: StateDep) -> Response:
    """Forget a prediction; one still running finishes but its result is dropped."""
    with state.sessions.begin() as session:
        found = session.scalar(
            select(orm.Prediction).where(orm.Prediction.request_id == request_id)
        )
        if found is None:
            raise PredictionNotFound(f"no prediction {request_id!r}")
        session.delete(found)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/api/v1/predictions", dependencies=[require_scope("predict")])
def list_predictions(
    state: StateDep,
    model: str | None = None,
    status: PredictionStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> dict[str, Any]:
    """Newest first; pass ``next_cursor`` back as ``cursor`` for the next page."""
    stmt = select(orm.Prediction)
    if model is not None:
        stmt = stmt.where(orm.Prediction.model == model)
    if status is not None:
        stmt = stmt.where(orm.Prediction.status == status)
    if cursor:
        stmt = stmt.where(orm.Prediction.id < records.decode_cursor(cursor))
    with state.sessions() as session:
        rows = session.scalars(stmt.order_by(orm.Prediction.id.desc()).limit(limit + 1)).all()
    page, next_cursor = records.paginate(rows, limit, lambda p: p.id)
    return {"items": [to_record(p) for p in page], "next_cursor": next_cursor}
