"""Dataloop-style predict servers' routes under ``/serve/{model}/``, answered by the
server on its own asynchronous predictions: the same queue, storage, quotas and access
(a ``predict`` token; none for a public model only when asynchronous predictions allow
anonymous callers). Answers and errors are in those servers' ``{"status", "response"}``
shape (``serving/dataloop.py``); ``ServeProxy`` hands these paths here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from deployserver.api.deps import (
    AsyncPredictAccess,
    PredictAccess,
    PredictionAccess,
    StateDep,
    viewer,
)
from deployserver.api.openapi import errors
from deployserver.api.predictions import _read_body, enqueue, with_result
from deployserver.errors import BadRequest, DeployServerError, PredictionNotFound, TryAgainLater
from deployserver.serving import dataloop
from deployserver.serving.results import remove_result
from deployserver.store import orm, predictions
from deployserver.store.predictions import Viewer

IMAGE_FIELD = "image"
LIST_LIMIT = 500
"""Results answered by ``GET predictResults`` at most, newest first (``?limit=`` fewer)."""


class DataloopRoute(APIRoute):
    """Errors, the access checks' included, in the Dataloop servers' shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def shaped(request: Request) -> Response:
            try:
                return await handler(request)
            except DeployServerError as exc:
                headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else {}
                if isinstance(exc, TryAgainLater):
                    headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
                return _fail(exc.status_code, exc.message, headers)
            except RequestValidationError as exc:
                problems = "; ".join(str(e.get("msg")) for e in exc.errors())
                return _fail(422, problems)
            except HTTPException as exc:
                return _fail(exc.status_code, str(exc.detail), dict(exc.headers or {}))

        return shaped


def _fail(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(dataloop.message("Fail", message), status_code=status, headers=headers)


router = APIRouter(tags=["compatibility: Dataloop-style servers"], route_class=DataloopRoute)
SaveLocally = Annotated[
    bool, Query(description="accepted as their clients send it; images are never kept")
]


async def _image_body(request: Request) -> tuple[bytes, str]:
    """The raw multipart body (queued as it came) once it holds an ``image`` file part."""
    body = await _read_body(request, request.app.state.ds.settings.max_prediction_bytes)
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise BadRequest(f"send the picture as multipart/form-data, in a file part {IMAGE_FIELD!r}")

    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        async with Request(request.scope, replay).form(max_files=8, max_fields=32) as form:
            has_image = isinstance(form.get(IMAGE_FIELD), UploadFile)
    except HTTPException as exc:  # a body that is not multipart after all
        raise BadRequest(f"the multipart body cannot be read: {exc.detail}") from None
    if not has_image:
        raise BadRequest(f"no file part named {IMAGE_FIELD!r}: send the picture as 'image'")
    return body, content_type


async def _submit(request: Request, model: str, caller: Any) -> str:
    body, content_type = await _image_body(request)
    actor = caller.name if caller else None
    state = request.app.state.ds
    return await enqueue(state, model=model, body=body, content_type=content_type, actor=actor)


@router.post("/serve/{model}/asyncPredict", responses=errors(400, 413, 429, 507))
async def async_predict(
    model: str, request: Request, caller: AsyncPredictAccess, save_locally: SaveLocally = False
) -> dict[str, Any]:
    """Queue a prediction of the ``image`` file part; poll ``predictResults/{request_id}``."""
    request_id = await _submit(request, model, caller)
    return {"request_id": request_id, **dataloop.message("Success", "Async request got sent")}


@router.post("/serve/{model}/predict", response_model=None, responses=errors(400, 413, 429, 507))
async def blocking_predict(
    model: str,
    request: Request,
    state: StateDep,
    caller: AsyncPredictAccess,
    save_locally: Annotated[bool, Query(description="marks a Dataloop-style client's call")],
) -> dict[str, Any] | Response:
    """Only with ``?save_locally=`` (every Dataloop-style client sends it; without it
    this path is the cell's own ``/predict``): queue the ``image`` and answer its result
    once done, or as ``Pending`` after the asynchronous call timeout."""
    request_id = await _submit(request, model, caller)
    found = await state.worker.wait_done(request_id, state.settings.async_timeout)
    if found is None:
        raise PredictionNotFound(f"Request Id: '{request_id}' was deleted while it ran")
    return await with_result(state, found, dataloop.result_of(found), "response")


def _of_model(state: Any, model: str, request_id: str, who: Viewer) -> orm.Prediction:
    try:
        with state.sessions() as session:
            return predictions.visible(session, request_id, who, model=model)
    except PredictionNotFound:
        raise PredictionNotFound(f"Request Id: {request_id}, result wasn't found.") from None


@router.get("/serve/{model}/predictResults")
def predict_results(
    model: str,
    state: StateDep,
    caller: PredictAccess,
    limit: Annotated[int, Query(ge=1, le=LIST_LIMIT)] = LIST_LIMIT,
) -> list[dict[str, Any]]:
    """Your predictions of the model, newest first; a result kept in a file has
    ``response`` null and a ``result_url``."""
    with state.sessions() as session:
        rows = predictions.page(session, viewer(caller), model=model, limit=limit)
        return [dataloop.result_of(p) for p in rows]


@router.get("/serve/{model}/predictResults/{request_id}", response_model=None)
async def predict_result(
    model: str, request_id: str, state: StateDep, caller: PredictionAccess
) -> dict[str, Any] | Response:
    """One prediction of the model (yours); a JSON result kept in a file is streamed in."""
    found = await anyio.to_thread.run_sync(_of_model, state, model, request_id, viewer(caller))
    return await with_result(state, found, dataloop.result_of(found), "response")


@router.delete("/serve/{model}/delete/{request_id}")
def delete_result(
    model: str, request_id: str, state: StateDep, caller: PredictionAccess
) -> dict[str, Any]:
    """Forget one prediction of the model (yours) and its result."""
    with state.sessions.begin() as session:
        found = predictions.delete_visible(
            session, viewer(caller), model=model, request_id=request_id
        )
    if not found:
        raise PredictionNotFound(f"Request Id: '{request_id}' wasn't found")
    remove_result(state.settings.data_dir, request_id)
    state.worker.stored.forget()
    return dataloop.message("Success", f"Request Id: '{request_id}' got deleted")


@router.delete("/serve/{model}/deleteAll")
def delete_all(model: str, state: StateDep, caller: PredictAccess) -> dict[str, Any]:
    """Forget every prediction of the model that is yours (an admin's: everyone's), and
    their results; one still running finishes but its result is dropped."""
    with state.sessions.begin() as session:
        gone = predictions.delete_visible(session, viewer(caller), model=model)
    for request_id in gone:
        remove_result(state.settings.data_dir, request_id)
    state.worker.stored.forget()
    return dataloop.message("Success", "All available data got deleted")
