"""The cell path an asynchronous prediction is sent to (``predict`` unless it says).

A caller names a path under its model's cell (``api/v1.0/predictions``,
``v2/models/iris/infer``, ``predict_dict``): checked here to be a plain relative path,
so it can only ever name an endpoint of that cell. No leading ``/``, no ``.`` or ``..``
segment, no scheme, query, fragment, percent-escape, backslash or empty segment.
"""

from __future__ import annotations

import re

from deployserver.store.predictions import DEFAULT_PATH as DEFAULT_PATH

MAX_LENGTH = 256
_SEGMENT = re.compile(r"[A-Za-z0-9_~-][A-Za-z0-9._~-]*")


class BadCellPath(ValueError):
    """A path that is not a plain relative path under the cell; says why."""


def check_cell_path(value: str) -> str:
    """``value`` when it is a plain relative path under the cell, else BadCellPath."""
    if not value or len(value) > MAX_LENGTH:
        raise BadCellPath(f"a cell path has 1 to {MAX_LENGTH} characters")
    if value.startswith("/"):
        raise BadCellPath(f"{value!r} must be relative to the cell, with no leading '/'")
    # One '/' may end it (BudgetML's paths are spelled that way); none may be doubled.
    segments = value.removesuffix("/").split("/")
    for segment in segments:
        if not _SEGMENT.fullmatch(segment):  # a first character that is no "." rules out ".."
            raise BadCellPath(
                f"{value!r} is not a plain path under the cell: each part is letters, "
                "digits, '.', '_', '~' or '-' (no '..', no scheme, query or escapes)"
            )
    return value


def is_default(path: str) -> bool:
    """Whether ``path`` is the cell's own ``/predict`` (its answer is ``{"predictions"}``)."""
    return path.removesuffix("/") == DEFAULT_PATH
