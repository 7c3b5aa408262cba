"""Reading a forwarded request's model name without decoding the request: protobuf's
answer for every well-formed message, an error for every malformed one."""

from __future__ import annotations

import pytest

from deployserver.serving.grpcwire import MalformedMessage, model_name
from serving_cell.protocols.v2grpc import inference_pb2 as pb


def _infer_request() -> pb.ModelInferRequest:
    tensor = pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[2, 2])
    tensor.parameters["binary_data_size"].int64_param = 16
    request = pb.ModelInferRequest(
        model_name="iris-v2",
        model_version="3",
        id="r",
        inputs=[tensor],
        raw_input_contents=[b"\x00" * 16],
    )
    request.parameters["threshold"].double_param = 0.5  # a fixed64 inside a nested message
    return request


@pytest.mark.parametrize(
    "message",
    [
        pb.ModelReadyRequest(name="m", version="1"),
        pb.ModelMetadataRequest(name="ümlaut-model"),
        pb.ModelMetadataRequest(),
        _infer_request(),
    ],
    ids=["ready", "metadata-utf8", "no-name", "infer"],
)
def test_the_name_is_what_protobuf_reads(message: object) -> None:
    data = message.SerializeToString()  # type: ignore[attr-defined]
    parsed = pb.ModelInferRequest.FromString(data)
    assert model_name(data) == parsed.model_name


def test_fields_before_the_name_and_a_repeated_name() -> None:
    """Field order is the sender's choice, and protobuf keeps the last of a repeated field."""
    tail = pb.ModelInferRequest(id="r", raw_input_contents=[b"\x01" * 300]).SerializeToString()
    first = pb.ModelInferRequest(model_name="first").SerializeToString()
    last = pb.ModelInferRequest(model_name="last").SerializeToString()
    data = tail + first + tail + last
    assert pb.ModelInferRequest.FromString(data).model_name == "last"
    assert model_name(data) == "last"
    # an unknown varint, fixed32 and fixed64 field are stepped over too
    unknown = bytes([0x78, 0x96, 0x01, 0x85, 0x01, 1, 2, 3, 4, 0x81, 0x01, *range(8)])
    assert model_name(unknown + first) == "first"


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\x0a\x05ab", "truncated field"),
        (b"\x0a", "truncated varint"),
        (b"\x0a\x02\xff\xfe", "not UTF-8"),
        (b"\x08\x01", "field 1 is not a string"),
        (b"\x00\x01", "field number 0"),
        (b"\x0b", "wire type 3"),
        (b"\x0a" + b"\xff" * 11, "varint longer"),
    ],
)
def test_malformed_bytes_are_refused(data: bytes, why: str) -> None:
    with pytest.raises(MalformedMessage, match=why):
        model_name(data)
