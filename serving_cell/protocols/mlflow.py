"""MLflow scoring protocol: ``POST /invocations`` as ``mlflow models serve`` takes it."""

from __future__ import annotations

import io
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from serving_cell.cell import Cell
from serving_cell.contracts import Call
from serving_cell.encoding import to_jsonable
from serving_cell.errors import InvalidInput, UnsupportedMediaType
from serving_cell.protocols.predict import media_type, parse_json

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")


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
            inputs, params = pd.read_csv(io.BytesIO(body)), {}
        except ValueError as exc:
            raise InvalidInput(f"the body is not valid CSV: {exc}") from exc
    elif kind in ("application/json", ""):
        inputs, params = read_payload(parse_json(body), pandas=pandas)
    else:
        raise UnsupportedMediaType(f"cannot read {kind!r}: send application/json or text/csv")
    call = Call(inputs=inputs, kwargs={"params": params} if params else {}, request=request)
    return JSONResponse({"predictions": to_jsonable(await cell.predict(call))})


def routes() -> list[Route]:
    return [Route("/invocations", invocations, methods=["POST"])]
