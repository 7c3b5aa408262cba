"""BudgetML's endpoints: ``/predict_dict`` and ``/predict_image`` (and ``/predict/``).

A BudgetML predictor's ``async predict(request)`` is given what BudgetML's own server
gives it: the request on ``/predict``, a ``Payload`` (``.payload`` holds the dict) on
``/predict_dict``, the uploaded file (a Starlette ``UploadFile``, as FastAPI's is) on
``/predict_image``. On the last two the answer is what the predictor returned, as
BudgetML answers it (a Response it built is sent as it is); errors are FastAPI's
``{"detail": "..."}``. ``/predict`` keeps this project's ``{"predictions": ...}``.
"""

from __future__ import annotations

from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from serving_cell.cell import Cell
from serving_cell.contracts import Call
from serving_cell.encoding import to_jsonable
from serving_cell.errors import InvalidInput, NotServedHere, UnsupportedMediaType
from serving_cell.protocols.bodies import media_type, parse_json
from serving_cell.protocols.predict import predict
from serving_cell.streaming import is_stream, stream_response

FILE_FIELD = "request"
"""The name of the file part: BudgetML's /predict_image parameter is ``request``."""


class Payload(dict):  # type: ignore[type-arg]
    """What BudgetML's ``/predict_dict`` hands its predictor: ``request.payload`` is the
    dict sent (BudgetML's pydantic ``Payload``); it also reads as that dict itself."""

    @property
    def payload(self) -> dict[str, Any]:
        return dict(self)

    def model_dump(self) -> dict[str, Any]:
        return {"payload": dict(self)}


def _budgetml_cell(request: Request) -> Cell:
    cell: Cell = request.app.state.cell
    adapter = cell.require_ready()
    if adapter.contract != "budgetml":
        raise NotServedHere(
            f"{request.url.path} is served for BudgetML predictors only; this model's "
            f"contract is {adapter.contract!r}: send it to /predict"
        )
    return cell


def _answer(request: Request, result: Any) -> Response:
    if isinstance(result, Response):
        return result
    if is_stream(result):
        return stream_response(request, result)
    return JSONResponse(to_jsonable(result))


async def predict_dict(request: Request) -> Response:
    """BudgetML's dict endpoint: ``{"payload": {...}}`` in (a bare object is taken as the
    payload itself), the predictor's answer out."""
    cell = _budgetml_cell(request)
    body = parse_json(await request.body())
    if not isinstance(body, dict):
        raise InvalidInput('the body must be a JSON object: {"payload": {...}}')
    inner = body.get("payload", body) if set(body) == {"payload"} else body
    if not isinstance(inner, dict):
        raise InvalidInput("'payload' must be a JSON object")
    call = Call(inputs=inner, request=request, argument=Payload(inner))
    return _answer(request, await cell.predict(call, stream=True))


async def predict_image(request: Request) -> Response:
    """BudgetML's image endpoint: a multipart upload whose file part is ``request`` (or
    the only file part), handed to the predictor as the uploaded file."""
    cell = _budgetml_cell(request)
    if media_type(request) != "multipart/form-data":
        raise UnsupportedMediaType(
            f"send the image as multipart/form-data, in a file part named {FILE_FIELD!r}"
        )
    async with request.form() as form:
        files = [(k, v) for k, v in form.multi_items() if isinstance(v, UploadFile)]
        chosen = [v for k, v in files if k == FILE_FIELD] or [v for _k, v in files]
        if len(chosen) != 1:
            raise InvalidInput(f"send one image file, in a file part named {FILE_FIELD!r}")
        call = Call(inputs=chosen[0], request=request, argument=chosen[0])
        result = await cell.predict(call)  # read while the upload is still open
    return _answer(request, result)


def routes() -> list[Route]:
    # Both spellings: BudgetML's paths end in '/', and a redirect from one to the other
    # would name the cell's own address, which callers behind the server cannot reach.
    return [
        Route("/predict/", predict, methods=["POST"]),
        Route("/predict_dict", predict_dict, methods=["POST"]),
        Route("/predict_dict/", predict_dict, methods=["POST"]),
        Route("/predict_image", predict_image, methods=["POST"]),
        Route("/predict_image/", predict_image, methods=["POST"]),
    ]
