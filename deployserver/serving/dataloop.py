"""Dataloop-style predict servers' paths under ``/serve/{model}/``, on our asynchronous
predictions: which requests they are, and their answers' shape.

Their clients (``requests`` with an ``image`` file part and a ``save_locally`` query
flag) call ``POST /predict`` (blocking), ``POST /asyncPredict``, ``GET /predictResults``
and ``/predictResults/{request_id}``, ``DELETE /delete/{request_id}`` and
``/deleteAll``, and read ``{"request_id", "status": "Pending" | "Success" | "Fail",
"response", "createdAt"}``. The server answers these itself (``api/dataloop.py``);
every other ``/serve`` path goes to the cell.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs

from deployserver.store import orm

SAVE_LOCALLY = "save_locally"
"""The query flag every Dataloop-style client sends; it marks a blocking /predict."""
_OWN = {
    "POST": re.compile(r"asyncPredict"),
    "GET": re.compile(r"predictResults(/[^/]+)?"),
    "DELETE": re.compile(r"delete/[^/]+|deleteAll"),
}
STATUS = {"queued": "Pending", "running": "Pending", "succeeded": "Success", "failed": "Fail"}
CREATED_AT = "%Y-%m-%dT%H:%M:%SZ"


def served_here(method: str, rest: str, query: bytes) -> bool:
    """Whether ``/serve/{rest}`` is a Dataloop-style path the server answers itself:
    ``rest`` is what follows ``/serve/`` (the model, then the path)."""
    _model, _, path = rest.partition("/")
    if method == "POST" and path == "predict":
        # our own /predict unless the Dataloop client's flag is there
        return SAVE_LOCALLY in parse_qs(query.decode("latin-1"), keep_blank_values=True)
    pattern = _OWN.get(method)
    return bool(pattern and pattern.fullmatch(path))


def result_of(p: orm.Prediction) -> dict[str, Any]:
    """One prediction as a Dataloop-style client reads it. ``response`` is the model's
    result once it succeeded (``null`` and ``result_url`` when it is not JSON), the
    error once it failed, ``""`` while pending."""
    status = STATUS[p.status]
    answer: dict[str, Any] = {"request_id": p.request_id, "status": status}
    if status == "Success":
        answer["response"] = p.result
        if p.result_offset is not None:
            answer["result_url"] = f"/api/v1/predictions/{p.request_id}/result"
    else:
        answer["response"] = (p.error or "") if status == "Fail" else ""
    answer["createdAt"] = p.created_at.strftime(CREATED_AT)
    return answer


def message(status: str, response: Any) -> dict[str, Any]:
    """An acknowledgement or an error, in their ``{"status", "response"}`` shape."""
    return {"status": status, "response": response}
