"""Seldon protocol: ``POST /api/v1.0/predictions`` with a SeldonMessage in and out.

Errors are Seldon's ``{"status": {"status": 1, "info", "code": -1, "reason"}}`` (see
``protocols.shapes``); a ``Model.py`` model also takes a SeldonMessage on ``/predict``.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from serving_cell.cell import Cell
from serving_cell.contracts import Call, SeldonAdapter
from serving_cell.encoding import to_jsonable
from serving_cell.errors import InvalidInput
from serving_cell.protocols import tensors
from serving_cell.protocols.bodies import parse_json

KINDS = ("ndarray", "tensor", "jsonData", "strData", "binData")
MESSAGE_FIELDS = frozenset({"data", "meta", "jsonData", "strData", "binData", "status"})


def _array(value: Any) -> Any:
    """Seldon hands features to the script as a numpy array when numpy is there."""
    if tensors.np is None:
        return value
    try:
        return tensors.np.array(value)
    except ValueError:  # ragged rows: leave them as lists
        return value


def is_message(body: Any) -> bool:
    """Whether a JSON body is a SeldonMessage: an object of SeldonMessage fields only,
    carrying its data in one of them."""
    if not isinstance(body, dict) or not body or not set(body) <= MESSAGE_FIELDS:
        return False
    return isinstance(body.get("data"), dict) or any(k in body for k in KINDS[2:])


def read_message(message: Any) -> tuple[str, Any, list[str]]:
    """(kind, features, names) from a SeldonMessage."""
    if not isinstance(message, dict):
        raise InvalidInput("a SeldonMessage must be a JSON object")
    data = message.get("data")
    if isinstance(data, dict):
        names = data.get("names") or []
        if "ndarray" in data:
            return "ndarray", _array(data["ndarray"]), names
        if "tensor" in data:
            tensor = data["tensor"]
            if not isinstance(tensor, dict) or "values" not in tensor:
                raise InvalidInput("data.tensor needs 'shape' and 'values'")
            values, shape = tensor["values"], tensor.get("shape") or [len(tensor["values"])]
            if tensors.np is None:
                return "tensor", values, names
            try:
                return "tensor", tensors.np.array(values).reshape(shape), names
            except ValueError as exc:
                raise InvalidInput(f"data.tensor values do not fit shape {shape}") from exc
        if "tftensor" in data:
            raise InvalidInput("data.tftensor is not read here: send data.ndarray or data.tensor")
        # Seldon's own wrapper reads a 'data' without either as no features at all (the
        # PrimeHub example request is {"data": {}}).
        return "ndarray", _array([]), names
    if "jsonData" in message:
        return "jsonData", message["jsonData"], []
    if "strData" in message:
        return "strData", message["strData"], []
    if "binData" in message:
        try:
            return "binData", base64.b64decode(message["binData"], validate=True), []
        except (binascii.Error, TypeError) as exc:
            raise InvalidInput("binData must be base64") from exc
    raise InvalidInput(
        f"a SeldonMessage needs one of data.ndarray, data.tensor, {', '.join(KINDS[2:])}"
    )


def _names(cell: Cell, result: Any) -> list[str]:
    """Column names: the script's ``class_names`` if it has them, else Seldon's ``t:i``."""
    adapter = cell.adapter
    names = adapter.class_names if isinstance(adapter, SeldonAdapter) else None
    if names:
        return names
    if isinstance(result, list) and result and isinstance(result[0], list):
        return [f"t:{i}" for i in range(len(result[0]))]
    return []


def _message(cell: Cell, kind: str, result: Any) -> dict[str, Any]:
    """Answer in the kind the request used, as Seldon does."""
    if kind in ("jsonData", "strData", "binData") or isinstance(result, dict | str | bytes):
        if isinstance(result, bytes):
            return {"binData": to_jsonable(result), "meta": {}}
        if isinstance(result, str):
            return {"strData": result, "meta": {}}
        return {"jsonData": to_jsonable(result), "meta": {}}
    numpy = tensors.np
    shape = list(numpy.shape(result)) if numpy is not None else None
    plain = to_jsonable(result)
    if not isinstance(plain, list):
        plain = [plain]
    data: dict[str, Any] = {"names": _names(cell, plain)}
    if kind == "tensor" and numpy is not None and shape is not None:
        data["tensor"] = {"shape": shape or [1], "values": list(numpy.ravel(plain).tolist())}
    else:
        data["ndarray"] = plain
    return {"data": data, "meta": {}}


async def predictions(request: Request) -> Response:
    cell: Cell = request.app.state.cell
    cell.require_ready()
    body = await request.body()
    kind_header = request.headers.get("content-type", "")
    if kind_header.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        # Seldon's older clients post json=<message> as a form field.
        async with request.form() as form:
            raw = form.get("json")
        message = parse_json(raw.encode() if isinstance(raw, str) else body)
    else:
        message = parse_json(body)
    kind, features, names = read_message(message)
    kwargs = {"meta": message.get("meta") or {}}
    call = Call(inputs=features, kwargs=kwargs, feature_names=names, request=request)
    return JSONResponse(_message(cell, kind, await cell.predict(call)))


def routes() -> list[Route]:
    return [
        Route("/api/v1.0/predictions", predictions, methods=["POST"]),
        Route("/predictions", predictions, methods=["POST"]),  # Seldon's microservice path
    ]
