"""Turn what scoring scripts return (numpy, pandas, bytes, ...) into plain JSON values."""

from __future__ import annotations

import base64
import dataclasses
import math
from collections.abc import Mapping
from typing import Any


def to_jsonable(value: Any) -> Any:
    """A JSON-serialisable copy of ``value``; duck-typed so numpy/pandas stay optional."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None  # JSON has no NaN
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(dataclasses.asdict(value))
    if hasattr(value, "to_dict") and hasattr(value, "columns"):  # pandas DataFrame
        return to_jsonable(value.to_dict(orient="records"))
    if hasattr(value, "tolist"):  # numpy arrays and scalars, pandas Series
        return to_jsonable(value.tolist())
    if hasattr(value, "item"):
        return to_jsonable(value.item())
    return str(value)
