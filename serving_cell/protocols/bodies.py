"""Reading request bodies the same way in every protocol: the media type and JSON."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from serving_cell.errors import InvalidInput


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"the body is not valid JSON: {exc}") from exc
