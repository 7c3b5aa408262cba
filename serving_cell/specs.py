"""Check requests and answers against a deployment's input_spec / output_spec.

A spec is a list of ``{"name", "data_type"}`` fields; data types are ``int``,
``double``, ``string``, ``bool``, ``dict``, ``file`` and ``array_<type>``.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from serving_cell.errors import CellError, InputSpecMismatch, OutputSpecMismatch

BASE_TYPES = ("int", "double", "string", "bool", "dict", "file")
_FORM_TRUE, _FORM_FALSE = {"true", "1", "yes"}, {"false", "0", "no"}


class _Mismatch(Exception):
    pass


def _describe(value: Any) -> str:
    names = {
        bool: "bool",
        int: "int",
        float: "double",
        str: "string",
        dict: "dict",
        list: "array",
        bytes: "file",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)


def _from_form(value: Any, data_type: str) -> Any:
    """Form fields arrive as text; read them as the type the spec names."""
    if not isinstance(value, str) or data_type in ("string", "file"):
        return value
    try:
        if data_type == "int":
            return int(value)
        if data_type == "double":
            return float(value)
        if data_type == "bool" and value.lower() in _FORM_TRUE | _FORM_FALSE:
            return value.lower() in _FORM_TRUE
        if data_type == "dict" or data_type.startswith("array_"):
            return json.loads(value)
    except ValueError as exc:
        raise _Mismatch(f"should be {data_type}, got {value!r}") from exc
    return value


def _convert(value: Any, data_type: str, *, incoming: bool) -> Any:
    """``value`` as ``data_type`` (file fields become bytes on the way in), else _Mismatch."""
    if data_type.startswith("array_"):
        if not isinstance(value, list):
            raise _Mismatch(f"should be {data_type}, got {_describe(value)}")
        item_type = data_type.removeprefix("array_")
        return [_convert(item, item_type, incoming=incoming) for item in value]
    ok = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "double": isinstance(value, int | float) and not isinstance(value, bool),
        "string": isinstance(value, str),
        "bool": isinstance(value, bool),
        "dict": isinstance(value, dict),
        "file": isinstance(value, bytes | str),
    }
    if data_type not in ok:
        raise _Mismatch(f"has an unknown data_type {data_type!r} in the spec")
    if not ok[data_type]:
        raise _Mismatch(f"should be {data_type}, got {_describe(value)}")
    if data_type == "file" and incoming and isinstance(value, str):
        try:  # JSON can only carry a file as base64 text
            return base64.b64decode(value, validate=True)
        except binascii.Error as exc:
            raise _Mismatch("is a file: upload it as multipart/form-data or base64") from exc
    return value


def _check(
    spec: list[dict[str, str]], value: Any, error: type[CellError], what: str, *, form: bool
) -> dict[str, Any]:
    names = [field["name"] for field in spec]
    if not isinstance(value, dict):
        raise error(f"{what} should be an object with fields {names}, got {_describe(value)}")
    missing = [name for name in names if name not in value]
    unknown = sorted(set(value) - set(names))
    if missing or unknown:
        parts = [
            f"missing fields {missing}" if missing else "",
            f"unknown fields {unknown}" if unknown else "",
        ]
        raise error(f"{what} does not match the spec: {'; '.join(p for p in parts if p)}")
    checked: dict[str, Any] = {}
    for field in spec:
        name, data_type = field["name"], field.get("data_type", "")
        try:
            raw = _from_form(value[name], data_type) if form else value[name]
            checked[name] = _convert(raw, data_type, incoming=error is InputSpecMismatch)
        except _Mismatch as exc:
            raise error(f"{what} field {name!r} {exc}") from None
    return checked


def check_inputs(spec: list[dict[str, str]] | None, inputs: Any, *, form: bool = False) -> Any:
    """The inputs, converted per spec (form text to numbers, base64 to bytes); 400 if wrong."""
    if not spec:
        return inputs
    return _check(spec, inputs, InputSpecMismatch, "input", form=form)


def check_outputs(spec: list[dict[str, str]] | None, outputs: Any) -> None:
    """Raise OutputSpecMismatch when the script's JSON-ready answer breaks output_spec."""
    if spec:
        _check(spec, outputs, OutputSpecMismatch, "the model's output", form=False)
