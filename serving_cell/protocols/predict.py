"""``POST /predict``: JSON, multipart uploads or raw bytes in, ``{"predictions": ...}`` out."""

from __future__ import annotations

import json
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from serving_cell.cell import Cell
from serving_cell.contracts import Call
from serving_cell.encoding import to_jsonable
from serving_cell.errors import InvalidInput, UnsupportedMediaType
from serving_cell.specs import check_inputs, check_outputs

RAW_TYPES = ("application/octet-stream", "image/", "audio/", "video/")


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"the body is not valid JSON: {exc}") from exc


async def read_form(request: Request) -> dict[str, Any]:
    """Form fields as text, file parts as bytes; a repeated name becomes a list."""
    fields: dict[str, Any] = {}
    async with request.form() as form:
        for name, value in form.multi_items():
            item = await value.read() if isinstance(value, UploadFile) else value
            if name in fields:
                previous = fields[name]
                fields[name] = [*previous, item] if isinstance(previous, list) else [previous, item]
            else:
                fields[name] = item
    return fields


def unwrap(body: Any) -> tuple[Any, dict[str, Any]]:
    """``{"inputs": x, "parameters": {...}}`` -> (x, parameters); anything else as it is."""
    if isinstance(body, dict) and "inputs" in body and set(body) <= {"inputs", "parameters"}:
        parameters = body.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise InvalidInput("'parameters' must be a JSON object")
        return body["inputs"], parameters
    return body, {}


async def read_call(request: Request, cell: Cell) -> Call:
    """The request's inputs, checked against input_spec."""
    spec = cell.settings.input_spec
    kind = media_type(request)
    body = await request.body()  # cached on the request, so BudgetML can read it again
    kwargs: dict[str, Any] = {}
    form = False
    if kind == "multipart/form-data":
        inputs, form = await read_form(request), True
    elif kind == "application/json" or kind.endswith("+json"):
        inputs, kwargs = unwrap(parse_json(body))
    elif kind in ("", "application/x-www-form-urlencoded"):
        # curl -d sends JSON labelled as a urlencoded form; take it for what it is.
        try:
            inputs, kwargs = unwrap(json.loads(body))
        except (json.JSONDecodeError, UnicodeDecodeError):
            inputs, form = await read_form(request), True
    elif kind.startswith(RAW_TYPES):
        inputs = body
        if spec and len(spec) == 1 and spec[0].get("data_type") == "file":
            inputs = {spec[0]["name"]: body}  # same shape as the multipart upload
    elif kind.startswith("text/"):
        inputs = body.decode("utf-8", errors="replace")
    else:
        raise UnsupportedMediaType(
            f"cannot read {kind!r}: send JSON, multipart/form-data, "
            "application/octet-stream or image/*"
        )
    inputs = check_inputs(spec, inputs, form=form)
    return Call(inputs=inputs, kwargs=kwargs, request=request)


def answer(cell: Cell, predictions: Any) -> Response:
    """``{"predictions": ...}``; a Response the script built itself is passed through."""
    if isinstance(predictions, Response):
        return predictions
    predictions = to_jsonable(predictions)
    check_outputs(cell.settings.output_spec, predictions)
    return JSONResponse({"predictions": predictions})


async def predict(request: Request) -> Response:
    cell: Cell = request.app.state.cell
    cell.require_ready()  # a 503 before parsing, so a loading cell answers at once
    return answer(cell, await cell.predict(await read_call(request, cell)))
