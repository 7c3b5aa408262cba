"""MLflow scoring protocol: ``POST /invocations`` as ``mlflow models serve`` takes it.

Errors are MLflow's ``{"error_code", "message"}`` with MLflow's statuses: a request the
model's signature refuses (a missing column, text for a double) is a 400, as is any
error an MLflow model raises while predicting. ``GET /ping`` and ``/version`` answer
as MLflow's scoring server does, for its clients' readiness checks.
"""

from __future__ import annotations

import io
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from serving_cell import __version__
from serving_cell.cell import Cell
from serving_cell.contracts import Call
from serving_cell.encoding import to_jsonable
from serving_cell.errors import (
    InvalidInput,
    ModelRejectedInput,
    PredictionFailed,
    UnsupportedMediaType,
)
from serving_cell.protocols.bodies import media_type, parse_json

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")


def is_payload(body: Any) -> bool:
    """Whether a JSON body is an MLflow scoring request (one format key, maybe params)."""
    if not isinstance(body, dict):
        return False
    present = [key for key in FORMATS if key in body]
    return len(present) == 1 and set(body) <= {present[0], "params"}


def _records(split: Any) -> list[dict[str, Any]]:
    if not isinstance(split, dict) or not isinstance(split.get("data"), list):
        raise InvalidInput("dataframe_split needs 'data' (a list of rows) and 'columns'")
    rows = split["data"]
    columns = split.get("columns") or [str(i) for i in range(len(rows[0]) if rows else 0)]
    return [dict(zip(columns, row, strict=True)) for row in rows]


def read_payload(payload: Any, *, pandas: bool) -> tuple[Any, dict[str, Any]]:
    """(inputs, params) from an MLflow request; DataFrames only for MLflow models.

    Scripts of the other contracts get plain records, so they need no pandas.
    """
    if not isinstance(payload, dict):
        raise InvalidInput(f"the body must be a JSON object with one of {list(FORMATS)}")
    present = [key for key in FORMATS if key in payload]
    if len(present) != 1:
        raise InvalidInput(f"the body needs exactly one of {list(FORMATS)}, got {present}")
    key = present[0]
    params = payload.get("params") or {}
    if not isinstance(params, dict):
        raise InvalidInput("'params' must be a JSON object")
    value = payload[key]
    try:
        if key == "dataframe_split" and pandas:
            import pandas as pd

            split = value if isinstance(value, dict) else {}
            frame = pd.DataFrame(
                data=split.get("data"), columns=split.get("columns"), index=split.get("index")
            )
            return frame, params
        if key == "dataframe_split":
            return _records(value), params
        if key == "dataframe_records" and pandas:
            import pandas as pd

            return pd.DataFrame(value), params
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"{key} cannot be read as a table: {exc}") from exc
    return value, params


async def invocations(request: Request) -> Response:
    cell: Cell = request.app.state.cell
    adapter = cell.require_ready()
    pandas = adapter.contract == "mlflow"
    kind = media_type(request)
    body = await request.body()
    if kind == "text/csv":
        if not pandas:
            raise UnsupportedMediaType("text/csv is read for MLflow models only; send JSON")
        import pandas as pd

        try:
            inputs, params = pd.read_csv(io.BytesIO(body)), dict[str, Any]()
        except ValueError as exc:
            raise InvalidInput(f"the body is not valid CSV: {exc}") from exc
    elif kind in ("application/json", ""):
        inputs, params = read_payload(parse_json(body), pandas=pandas)
    else:
        raise UnsupportedMediaType(f"cannot read {kind!r}: send application/json or text/csv")
    call = Call(inputs=inputs, kwargs={"params": params} if params else {}, request=request)
    try:
        predictions = await cell.predict(call)
    except PredictionFailed as exc:
        raise _as_mlflow_answers(exc, pandas) from exc
    return JSONResponse({"predictions": to_jsonable(predictions)})


def _as_mlflow_answers(exc: PredictionFailed, mlflow_model: bool) -> Exception:
    """A failed prediction as MLflow's scoring server answers it: an MlflowException (the
    signature check's) with its own code and status; any other error of an MLflow model a
    400 BAD_REQUEST. Scripts of the other contracts keep their 500."""
    cause = exc.__cause__
    get_status = getattr(cause, "get_http_status_code", None)
    native = getattr(cause, "error_code", None)
    if callable(get_status) and isinstance(native, str):
        status = int(get_status())
        return ModelRejectedInput(exc.message, status_code=status, native_code=native)
    if mlflow_model:
        message = f"the model failed on this input (check it against its signature): {exc}"
        return ModelRejectedInput(message, native_code="BAD_REQUEST")
    return exc


async def ping(request: Request) -> Response:
    """200 once the model is loaded, as MLflow's ``/ping`` and ``/health``."""
    ready = request.app.state.cell.health.ready
    return Response("\n", status_code=200 if ready else 503, media_type="application/json")


async def version(request: Request) -> Response:
    """MLflow's version for MLflow models (what its ``/version`` says), else the cell's."""
    cell: Cell = request.app.state.cell
    found = __version__
    if cell.adapter is not None and cell.adapter.contract == "mlflow":
        import mlflow

        found = mlflow.__version__
    return Response(found, media_type="application/json")


def routes() -> list[Route]:
    return [
        Route("/invocations", invocations, methods=["POST"]),
        Route("/ping", ping, methods=["GET"]),
        Route("/health", ping, methods=["GET"]),
        Route("/version", version, methods=["GET"]),
    ]
