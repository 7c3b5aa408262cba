"""Each protocol's own error shape: a client reads errors the way its tool taught it.

The path says whose client is asking: V2 clients (tritonclient, KServe's) read
``{"error": "..."}``, MLflow's ``{"error_code", "message"}``, Seldon's a ``status``
object, BudgetML's (FastAPI) ``{"detail": "..."}``; everything else gets this
project's ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from starlette.responses import JSONResponse

MLFLOW_PATHS = frozenset({"/invocations", "/ping", "/version"})
SELDON_PATHS = frozenset({"/api/v1.0/predictions", "/predictions"})
BUDGETML_PATHS = frozenset({"/predict_dict", "/predict_image"})

# MLflow's error codes for the statuses the cell answers (its REST API's names).
MLFLOW_CODES = {
    400: "BAD_REQUEST",
    404: "ENDPOINT_NOT_FOUND",
    405: "BAD_REQUEST",
    413: "BAD_REQUEST",
    415: "BAD_REQUEST",
    503: "TEMPORARILY_UNAVAILABLE",
}


class Shape(StrEnum):
    OURS = "ours"
    V2 = "v2"
    MLFLOW = "mlflow"
    SELDON = "seldon"
    BUDGETML = "budgetml"


def shape_for(path: str) -> Shape:
    """Whose client calls ``path``."""
    if path == "/v2" or path.startswith("/v2/"):
        return Shape.V2
    if path in MLFLOW_PATHS:
        return Shape.MLFLOW
    if path in SELDON_PATHS:
        return Shape.SELDON
    if path.rstrip("/") in BUDGETML_PATHS:
        return Shape.BUDGETML
    return Shape.OURS


def error_body(
    shape: Shape, status: int, code: str, message: str, *, native_code: str | None = None
) -> dict[str, Any]:
    """The error in ``shape``; ``native_code`` is the tool's own code when one is known
    (an MLflow model's own ``error_code``)."""
    if shape is Shape.V2:
        return {"error": message}
    if shape is Shape.MLFLOW:
        fallback = MLFLOW_CODES.get(status, "BAD_REQUEST" if status < 500 else "INTERNAL_ERROR")
        return {"error_code": native_code or fallback, "message": message}
    if shape is Shape.SELDON:
        reason = "MICROSERVICE_BAD_DATA" if status < 500 else "MICROSERVICE_INTERNAL_ERROR"
        return {"status": {"status": 1, "info": message, "code": -1, "reason": reason}}
    if shape is Shape.BUDGETML:
        return {"detail": message}
    return {"error": {"code": code, "message": message}}


def error_response(
    path: str,
    status: int,
    code: str,
    message: str,
    *,
    native_code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = error_body(shape_for(path), status, code, message, native_code=native_code)
    return JSONResponse(body, status_code=status, headers=headers)
