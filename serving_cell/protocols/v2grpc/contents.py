"""gRPC tensors <-> the V2 tensors of ``protocols.tensors``: raw little-endian bytes or
typed contents in, raw bytes out. numpy when the cell has it; ``struct`` when it has not
(the cell image itself ships without numpy)."""

from __future__ import annotations

import struct
from typing import Any

from serving_cell.protocols import tensors
from serving_cell.protocols.tensors import TensorError
from serving_cell.protocols.v2grpc import inference_pb2 as pb

RAW_FORMATS = {
    "BOOL": "?",
    "UINT8": "B",
    "UINT16": "H",
    "UINT32": "I",
    "UINT64": "Q",
    "INT8": "b",
    "INT16": "h",
    "INT32": "i",
    "INT64": "q",
    "FP16": "e",
    "FP32": "f",
    "FP64": "d",
}
"""``struct`` formats of each fixed-size datatype (little-endian, as the protocol sends)."""
CONTENTS_FIELDS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
"""The field of ``InferTensorContents`` each datatype travels in; FP16 has none."""
_LENGTH = struct.Struct("<I")


def parameters_of(parameters: Any) -> dict[str, Any]:
    """A ``map<string, InferParameter>`` as plain values (what V2 REST reads from JSON)."""
    values = {}
    for key, parameter in parameters.items():
        kind = parameter.WhichOneof("parameter_choice")
        if kind is not None:
            values[key] = getattr(parameter, kind)
    return values


def read_inputs(request: pb.ModelInferRequest) -> dict[str, Any]:
    """Each input tensor by name, decoded as V2 REST decodes its tensors."""
    if not request.inputs:
        raise TensorError("the inference request needs at least one input")
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise TensorError(
            f"raw_input_contents holds {len(raw)} entries for {len(request.inputs)} inputs; "
            "send one per input, or none and each input's contents"
        )
    values: dict[str, Any] = {}
    for index, tensor in enumerate(request.inputs):
        spec: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
        }
        if tensor.datatype not in tensors.NUMPY_TYPES:
            raise TensorError(f"input {tensor.name!r}: unknown datatype {tensor.datatype!r}")
        if raw:
            values[tensor.name] = _from_raw(spec, raw[index])
        else:
            spec["data"] = _from_contents(tensor)
            values[tensor.name] = tensors.decode(spec)
    return values


def _from_raw(spec: dict[str, Any], raw: bytes) -> Any:
    if tensors.np is not None:
        return tensors.decode(spec, raw)
    spec["data"] = _unpack(spec["name"], spec["datatype"], raw)
    return tensors.decode(spec)  # checks the count against the shape, and nests


def _from_contents(tensor: pb.ModelInferRequest.InferInputTensor) -> list[Any]:
    field = CONTENTS_FIELDS.get(tensor.datatype)
    if field is None:
        raise TensorError(
            f"input {tensor.name!r}: {tensor.datatype} has no typed contents; "
            "send it in raw_input_contents"
        )
    return list(getattr(tensor.contents, field))


def _unpack(name: str, datatype: str, raw: bytes) -> list[Any]:
    if datatype == "BYTES":
        return split_bytes(name, raw)
    fmt = RAW_FORMATS[datatype]
    size = struct.calcsize(fmt)
    if len(raw) % size:
        raise TensorError(f"input {name!r}: {len(raw)} bytes are no whole number of {datatype}")
    return list(struct.unpack(f"<{len(raw) // size}{fmt}", raw))


def split_bytes(name: str, raw: bytes) -> list[bytes]:
    """BYTES elements of a raw tensor: each a 4-byte little-endian length, then its bytes."""
    items, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise TensorError(f"input {name!r}: truncated BYTES element")
        (size,) = _LENGTH.unpack_from(raw, offset)
        if offset + 4 + size > len(raw):
            raise TensorError(f"input {name!r}: truncated BYTES element")
        items.append(raw[offset + 4 : offset + 4 + size])
        offset += 4 + size
    return items


def write_outputs(
    outputs: list[dict[str, Any]],
) -> tuple[list[pb.ModelInferResponse.InferOutputTensor], list[bytes]]:
    """The answer's output tensors (V2 tensors with JSON data) as gRPC outputs and their
    raw contents, in the same order."""
    described, raws = [], []
    for tensor in outputs:
        described.append(
            pb.ModelInferResponse.InferOutputTensor(
                name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"]
            )
        )
        raws.append(pack(tensor["datatype"], tensor["data"]))
    return described, raws


def pack(datatype: str, data: list[Any]) -> bytes:
    """Flat row-major elements as the raw bytes of ``datatype``."""
    if datatype == "BYTES":
        items = [v if isinstance(v, bytes) else str(v).encode("utf-8") for v in data]
        return b"".join(_LENGTH.pack(len(item)) + item for item in items)
    if tensors.np is not None:
        return bytes(tensors.np.asarray(data, dtype=tensors.NUMPY_TYPES[datatype]).tobytes())
    return struct.pack(f"<{len(data)}{RAW_FORMATS[datatype]}", *data)
