"""``POST /predict``: JSON, multipart uploads or raw bytes in, ``{"predictions": ...}`` out.

A contract's own request works here too: a SeldonMessage for a Seldon ``Model.py``, an
MLflow payload (``dataframe_split``, ...) for an MLflow model. A script that returns a
generator streams its items (see ``serving_cell.streaming``).
"""

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
from serving_cell.protocols import mlflow, seldon
from serving_cell.protocols.bodies import media_type, parse_json
from serving_cell.specs import check_inputs, check_outputs
from serving_cell.streaming import is_stream, stream_response

RAW_TYPES = ("application/octet-stream", "image/", "audio/", "video/")
__all__ = ["media_type", "parse_json", "predict", "read_call"]


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


def native_call(cell: Cell, body: Any, request: Request) -> Call | None:
    """The call for a request in the model's own contract's protocol, else None."""
    contract = cell.adapter.contract if cell.adapter else ""
    if contract == "seldon" and seldon.is_message(body):
        _kind, features, names = seldon.read_message(body)
        kwargs = {"meta": body.get("meta") or {}}
        return Call(inputs=features, kwargs=kwargs, feature_names=names, request=request)
    if contract == "mlflow" and mlflow.is_payload(body):
        inputs, params = mlflow.read_payload(body, pandas=True)
        return Call(inputs=inputs, kwargs={"params": params} if params else {}, request=request)
    return None


async def read_call(request: Request, cell: Cell) -> Call:
    """The request's inputs, checked against input_spec."""
    spec = cell.settings.input_spec
    kind = media_type(request)
    body = await request.body()  # cached on the request, so BudgetML can read it again
    kwargs: dict[str, Any] = {}
    form = is_json = False
    document: Any = None
    inputs: Any = None
    if kind == "multipart/form-data":
        inputs, form = await read_form(request), True
    elif kind == "application/json" or kind.endswith("+json"):
        document, is_json = parse_json(body), True
    elif kind in ("", "application/x-www-form-urlencoded"):
        # curl -d sends JSON labelled as a urlencoded form; take it for what it is.
        try:
            document, is_json = json.loads(body), True
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
    if is_json:
        native = native_call(cell, document, request)
        if native is not None:  # checked by its own protocol, not by input_spec
            return native
        inputs, kwargs = unwrap(document)
    inputs = check_inputs(spec, inputs, form=form)
    return Call(inputs=inputs, kwargs=kwargs, request=request)


def answer(request: Request, cell: Cell, predictions: Any) -> Response:
    """``{"predictions": ...}``; a Response the script built itself is passed through, and
    a generator streams its items."""
    if isinstance(predictions, Response):
        return predictions
    if is_stream(predictions):
        return stream_response(request, predictions)
    predictions = to_jsonable(predictions)
    check_outputs(cell.settings.output_spec, predictions)
    return JSONResponse({"predictions": predictions})


async def predict(request: Request) -> Response:
    cell: Cell = request.app.state.cell
    cell.require_ready()  # a 503 before parsing, so a loading cell answers at once
    call = await read_call(request, cell)
    return answer(request, cell, await cell.predict(call, stream=True))
