"""Open Inference Protocol (V2) endpoints, as KServe, Triton and MLServer speak it.

Errors here keep V2's own shape, ``{"error": "message"}``, so V2 clients can read them.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from serving_cell import __version__
from serving_cell.cell import Cell
from serving_cell.contracts import Call
from serving_cell.errors import CellError, InvalidInput, ModelNotFound
from serving_cell.protocols import tensors

SPEC_TO_V2 = {"int": "INT64", "double": "FP64", "bool": "BOOL"}
HEADER_LENGTH = "inference-header-content-length"
"""Binary data extension: the JSON part's size; tensor bytes follow it in the body."""

Endpoint = Callable[[Request], Awaitable[Response]]


def v2_errors(endpoint: Endpoint) -> Endpoint:
    """Answer the cell's errors in V2's ``{"error": "..."}`` shape."""

    async def wrapped(request: Request) -> Response:
        try:
            return await endpoint(request)
        except CellError as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status_code)
        except tensors.TensorError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)

    return wrapped


def _cell(request: Request) -> Cell:
    cell: Cell = request.app.state.cell
    name = request.path_params.get("name")
    if name is not None and name != cell.name:
        raise ModelNotFound(f"model {name!r} not found; this cell serves {cell.name!r}")
    return cell


def _spec_tensors(spec: list[dict[str, str]] | None) -> list[dict[str, Any]]:
    tensors_ = []
    for field in spec or []:
        data_type = field.get("data_type", "")
        base = data_type.removeprefix("array_")
        shape = [-1] if base != data_type else [1]
        tensors_.append(
            {"name": field["name"], "datatype": SPEC_TO_V2.get(base, "BYTES"), "shape": shape}
        )
    return tensors_


async def server_metadata(request: Request) -> Response:
    return JSONResponse({"name": "deployserver-cell", "version": __version__, "extensions": []})


async def live(request: Request) -> Response:
    return JSONResponse({"live": True})


async def ready(request: Request) -> Response:
    is_ready = _cell(request).health.ready
    return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)


def metadata_of(cell: Cell) -> dict[str, Any]:
    """The model's V2 metadata; the gRPC service answers the same."""
    version = cell.settings.model_version
    return {
        "name": cell.name,
        "versions": [version] if version else [],
        "platform": cell.adapter.contract if cell.adapter else "",
        "inputs": _spec_tensors(cell.settings.input_spec),
        "outputs": _spec_tensors(cell.settings.output_spec),
    }


async def model_metadata(request: Request) -> Response:
    return JSONResponse(metadata_of(_cell(request)))


def _split_body(request: Request, body: bytes) -> tuple[dict[str, Any], bytes]:
    length = request.headers.get(HEADER_LENGTH)
    if length is not None and not (length.isdigit() and int(length) <= len(body)):
        raise InvalidInput(f"{HEADER_LENGTH} {length!r} is not a size within the body")
    head, rest = (body, b"") if length is None else (body[: int(length)], body[int(length) :])
    try:
        payload = json.loads(head)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"the inference request is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise InvalidInput("the inference request must be a JSON object")
    return payload, rest


def _read_inputs(payload: dict[str, Any], binary: bytes) -> dict[str, Any]:
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput("the inference request needs a non-empty 'inputs' list")
    values: dict[str, Any] = {}
    offset = 0
    for tensor in inputs:
        if not isinstance(tensor, dict):
            raise InvalidInput("each input must be an object with name, datatype, shape, data")
        parameters = tensor.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise InvalidInput(f"input {tensor.get('name')!r}: 'parameters' must be an object")
        size = parameters.get("binary_data_size")
        raw = None
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise InvalidInput(
                    f"input {tensor.get('name')!r}: binary_data_size {size!r} does not fit "
                    "the binary data sent"
                )
            raw, offset = binary[offset : offset + size], offset + size
        values[str(tensor.get("name"))] = tensors.decode(tensor, raw)
    return values


def _outputs(predictions: Any, requested: list[str]) -> list[dict[str, Any]]:
    """One output per key of a dict answer, else one output (named as asked, if asked)."""
    if isinstance(predictions, dict):
        missing = [n for n in requested if n not in predictions]
        if missing:
            raise InvalidInput(f"the model has no outputs named {missing}")
        names = requested or list(predictions)
        return [tensors.encode(n, predictions[n]) for n in names]
    return [tensors.encode(requested[0] if len(requested) == 1 else "predictions", predictions)]


async def run_inference(
    cell: Cell,
    values: dict[str, Any],
    parameters: Any,
    requested: list[str],
    request: Request | None = None,
) -> dict[str, Any]:
    """One inference on decoded input tensors: the answer's model name, version and
    outputs (V2 tensors with JSON data). REST and gRPC both answer through here."""
    call = Call(
        inputs=next(iter(values.values())) if len(values) == 1 else values,
        kwargs=parameters if isinstance(parameters, dict) else {},
        feature_names=list(values),
        request=request,
    )
    predictions = await cell.predict(call)
    body: dict[str, Any] = {"model_name": cell.name, "outputs": _outputs(predictions, requested)}
    if cell.settings.model_version:
        body["model_version"] = cell.settings.model_version
    return body


async def infer(request: Request) -> Response:
    cell = _cell(request)
    cell.require_ready()
    payload, binary = _split_body(request, await request.body())
    values = _read_inputs(payload, binary)
    wanted = payload.get("outputs") or []
    if not isinstance(wanted, list):
        raise InvalidInput("'outputs' must be a list of {\"name\": ...} objects")
    requested = [str(o.get("name")) for o in wanted if isinstance(o, dict)]
    body = await run_inference(cell, values, payload.get("parameters") or {}, requested, request)
    if "id" in payload:
        body["id"] = payload["id"]
    return JSONResponse(body)


def routes() -> list[Route]:
    model = "/v2/models/{name}"
    return [
        Route("/v2", v2_errors(server_metadata), methods=["GET"]),
        Route("/v2/health/live", v2_errors(live), methods=["GET"]),
        Route("/v2/health/ready", v2_errors(ready), methods=["GET"]),
        Route(model, v2_errors(model_metadata), methods=["GET"]),
        Route(f"{model}/ready", v2_errors(ready), methods=["GET"]),
        Route(f"{model}/infer", v2_errors(infer), methods=["POST"]),
        # tritonclient puts the version in the path when one is given; one version here.
        Route(f"{model}/versions/{{version}}", v2_errors(model_metadata), methods=["GET"]),
        Route(f"{model}/versions/{{version}}/ready", v2_errors(ready), methods=["GET"]),
        Route(f"{model}/versions/{{version}}/infer", v2_errors(infer), methods=["POST"]),
    ]
