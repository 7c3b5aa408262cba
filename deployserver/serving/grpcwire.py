"""The one field the gRPC gateway reads of a call it forwards: the model's name.

ModelReady, ModelMetadata and ModelInfer requests all name their model in field 1, a
string. The gateway reads it from the serialized request without decoding the rest
(tensors can be large): it walks the message's top-level fields, stepping over each by
its length, and, as protobuf does, takes the last occurrence of field 1.
"""

from __future__ import annotations

NAME_FIELD = 1
_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5


class MalformedMessage(ValueError):
    """The bytes are no protobuf message (or field 1 is not a string)."""


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise MalformedMessage("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift >= 64:
            raise MalformedMessage("varint longer than 10 bytes")


def model_name(message: bytes) -> str:
    """Field 1 of ``message`` as text ('' when absent), reading nothing else of it."""
    data = memoryview(message)
    pos, name = 0, b""
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise MalformedMessage("field number 0")
        if wire_type == _VARINT:
            _, pos = _varint(data, pos)
        elif wire_type == _FIXED64:
            pos += 8
        elif wire_type == _FIXED32:
            pos += 4
        elif wire_type == _LENGTH_DELIMITED:
            length, pos = _varint(data, pos)
            if number == NAME_FIELD:
                name = bytes(data[pos : pos + length])
            pos += length
        else:  # groups (3, 4) are not proto3, the rest are no wire types at all
            raise MalformedMessage(f"wire type {wire_type}")
        if number == NAME_FIELD and wire_type != _LENGTH_DELIMITED:
            raise MalformedMessage("field 1 is not a string")
        if pos > len(data):
            raise MalformedMessage("truncated field")
    try:
        return name.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedMessage("field 1 is not UTF-8") from exc
