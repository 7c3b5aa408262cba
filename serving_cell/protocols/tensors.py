"""V2 tensors <-> Python values: numpy arrays when numpy is installed, nested lists if not."""

from __future__ import annotations

import math
import struct
from types import ModuleType
from typing import Any

np: ModuleType | None
try:
    import numpy as np
except ImportError:  # numpy is optional in the cell image
    np = None

NUMPY_TYPES = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
    "BYTES": "object",
}
_BY_KIND = {"b": "BOOL", "i": "INT", "u": "UINT", "f": "FP"}


class TensorError(ValueError):
    """A tensor that cannot be read; becomes a V2 ``{"error": ...}`` 400."""


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    flat: list[Any] = []
    for item in data:
        flat.extend(_flatten(item))
    return flat


def _nest(flat: list[Any], shape: list[int]) -> Any:
    if len(shape) <= 1:
        return flat if shape else flat[0]
    step = len(flat) // shape[0] if shape[0] else 0
    return [_nest(flat[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


def _split_bytes(raw: bytes) -> list[bytes]:
    """BYTES elements in the binary extension: a 4-byte little-endian length, then data."""
    items, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise TensorError("truncated BYTES tensor")
        (size,) = struct.unpack_from("<I", raw, offset)
        items.append(raw[offset + 4 : offset + 4 + size])
        offset += 4 + size
    return items


def decode(tensor: Any, raw: bytes | None = None) -> Any:
    """A request tensor as an array; ``raw`` holds its bytes for the binary extension."""
    if not isinstance(tensor, dict):
        raise TensorError("each input must be an object with name, datatype, shape, data")
    name = tensor.get("name")
    datatype, shape = tensor.get("datatype"), tensor.get("shape")
    if not isinstance(name, str) or datatype not in NUMPY_TYPES:
        raise TensorError(f"input {name!r}: unknown datatype {datatype!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise TensorError(f"input {name!r}: shape must be a list of non-negative integers")
    if raw is None and "data" not in tensor:
        raise TensorError(f"input {name!r} has no data")
    if raw is not None and datatype != "BYTES":
        if np is None:
            raise TensorError("binary tensor data needs numpy installed in the cell")
        try:
            return np.frombuffer(raw, dtype=NUMPY_TYPES[datatype]).reshape(shape)
        except ValueError as exc:
            raise TensorError(f"input {name!r}: {exc}") from exc
    flat = _split_bytes(raw) if raw is not None else _flatten(tensor["data"])
    if len(flat) != math.prod(shape):
        raise TensorError(
            f"input {name!r}: shape {shape} needs {math.prod(shape)} values, got {len(flat)}"
        )
    if datatype == "BYTES":
        flat = [v.decode("utf-8", errors="replace") if isinstance(v, bytes) else v for v in flat]
    if np is None:
        return _nest(flat, shape)
    try:
        return np.array(flat, dtype=NUMPY_TYPES[datatype]).reshape(shape)
    except (ValueError, TypeError, OverflowError) as exc:
        raise TensorError(f"input {name!r}: data is not {datatype}: {exc}") from exc


def _leaf_type(flat: list[Any]) -> str:
    if all(isinstance(v, bool) for v in flat):
        return "BOOL"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in flat):
        return "INT64"
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in flat):
        return "FP64"
    return "BYTES"


def _shape(value: Any) -> list[int]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        value = value[0] if value else None
    return shape


def encode(name: str, value: Any) -> dict[str, Any]:
    """A response tensor (JSON data, row-major) for a prediction value."""
    if np is not None and not isinstance(value, str | bytes):
        array = np.asarray(value)
        kind = _BY_KIND.get(array.dtype.kind)
        if kind == "BOOL":
            datatype = kind
        elif kind:
            datatype = f"{kind}{array.dtype.itemsize * 8}"
        else:
            datatype = "BYTES"
        data = array.reshape(-1).tolist()
        shape = list(array.shape)
    else:
        value = value.tolist() if hasattr(value, "tolist") else value
        data, shape = _flatten(value), _shape(value)
        datatype = _leaf_type(data)
    if datatype == "BYTES":
        data = [
            v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v) for v in data
        ]
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}
