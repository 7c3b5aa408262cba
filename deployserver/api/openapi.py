"""The OpenAPI document, with every route's error answers in the API's own error shape.

FastAPI documents the success answer and a 422 in its own validation shape; the errors
this server really sends (``{"error": {"code", "message"}}``: 401/403 from the access
guards, 404 for a path that names nothing, 400 for a body that is not JSON, ...) are
added here from what each route is, plus what a route declares with :func:`errors`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from deployserver.api.deps import public, route_table

ERROR_SCHEMA = "ErrorBody"
REF = f"#/components/schemas/{ERROR_SCHEMA}"
ERROR_COMPONENT: dict[str, Any] = {
    "title": ERROR_SCHEMA,
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "snake_case, stable"},
                "message": {"type": "string", "description": "what happened, for a person"},
                "details": {"type": "object"},
            },
        }
    },
}
DESCRIPTIONS = {
    400: "the request cannot be read (a body that is not JSON, a cursor not handed out)",
    401: "no token, or a bad, revoked or expired one (WWW-Authenticate: Bearer)",
    403: "the token lacks the scope this route needs",
    404: "nothing by that name or id",
    405: "this method is not allowed here",
    408: "the request body stopped arriving",
    409: "the request conflicts with the current state",
    413: "the body is larger than this server accepts",
    415: "the body is not of a type this route takes",
    422: "the request is well-formed but its values are refused",
    429: "too many requests for now (Retry-After)",
    503: "not available right now (Retry-After where known)",
    507: "the server's disk is full; nothing was kept",
}


def documented_error(status: int, description: str | None = None) -> dict[str, Any]:
    """One documented error answer in the API's error shape."""
    return {
        "description": description or DESCRIPTIONS.get(status, "an error"),
        "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_SCHEMA}"}}
        },
    }


def errors(*statuses: int, **described: str) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route decorator: the statuses it may answer beyond the usual
    ones; ``described`` gives a status (as ``s409="..."``) words of its own."""
    found: dict[int | str, dict[str, Any]] = {s: documented_error(s) for s in statuses}
    for key, words in described.items():
        found[int(key.removeprefix("s"))] = documented_error(int(key.removeprefix("s")), words)
    return found


def _usual(path: str, operation: dict[str, Any], guarded: bool) -> list[int]:
    statuses = []
    if guarded:
        statuses += [401, 403]
    if "{" in path:
        statuses.append(404)
    params = operation.get("parameters", [])
    body = operation.get("requestBody", {}).get("content", {})
    if params or body:
        statuses.append(422)
    if "application/json" in body or any(p.get("name") == "cursor" for p in params):
        statuses.append(400)
    return statuses


def document_errors(app: FastAPI, schema: dict[str, Any]) -> dict[str, Any]:
    """Add each operation's error answers (and the error shape) to ``schema``."""
    schema.setdefault("components", {}).setdefault("schemas", {})[ERROR_SCHEMA] = ERROR_COMPONENT
    guarded = {
        (route.path, method.lower()): any(a is not public for a in route.access)
        for route in route_table(app)
        if route.is_api
        for method in route.methods
    }
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            for status in _usual(path, operation, guarded.get((path, method), False)):
                responses[str(status)] = documented_error(status)
            for status, answer in responses.items():
                if status.startswith(("4", "5")) and "content" not in answer:
                    answer.update(documented_error(int(status), answer.get("description")))
    # FastAPI's own validation shapes are never sent: the handler answers in ErrorBody.
    for unused in ("HTTPValidationError", "ValidationError"):
        schema["components"]["schemas"].pop(unused, None)
    return schema
