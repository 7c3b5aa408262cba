"""The committed gRPC stubs: generated from inference.proto as it is now, wire-compatible
with tritonclient's own definition of the protocol, and loadable beside it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest
from conftest import REPO
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from grpc_tools import protoc
from tritonclient.grpc import service_pb2 as triton_pb

from serving_cell.protocols.v2grpc import inference_pb2 as pb
from serving_cell.protocols.v2grpc import inference_pb2_grpc as pb_grpc

PROTO = REPO / "serving_cell" / "protocols" / "v2grpc" / "inference.proto"
SERVICE = "GRPCInferenceService"
METHODS = [
    "ServerLive",
    "ServerReady",
    "ModelReady",
    "ServerMetadata",
    "ModelMetadata",
    "ModelInfer",
]


def _without_json_names(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
    """protoc's descriptor sets name each field's JSON form; generated code leaves it out."""
    for message in messages:
        for field in message.field:
            field.ClearField("json_name")
        _without_json_names(message.nested_type)


def test_the_committed_stubs_are_generated_from_the_proto(tmp_path: Path) -> None:
    out = tmp_path / "inference.desc"
    code = protoc.main(["protoc", f"-I{REPO}", f"--descriptor_set_out={out}", str(PROTO)])
    assert code == 0
    fresh = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    _without_json_names(fresh.message_type)
    committed = descriptor_pb2.FileDescriptorProto.FromString(pb.DESCRIPTOR.serialized_pb)
    assert committed == fresh, "inference.proto changed: run scripts/generate-grpc-stubs.sh"
    assert [m.name for m in fresh.service[0].method] == METHODS
    stub_source = Path(pb_grpc.__file__).read_text()
    for method in METHODS:
        assert f"'/inference.{SERVICE}/{method}'" in stub_source


def _shape(descriptor: Descriptor) -> dict[str, object]:
    """What the wire depends on: each field's number, type, cardinality and oneof."""
    fields: dict[str, object] = {}
    for field in descriptor.fields:
        target = field.message_type
        fields[field.name] = (
            field.number,
            field.type,
            field.is_repeated,
            field.containing_oneof.name if field.containing_oneof else None,
            _shape(target)
            if target is not None and field.type == FieldDescriptor.TYPE_MESSAGE
            else None,
        )
    return fields


@pytest.mark.parametrize("message", sorted(pb.DESCRIPTOR.message_types_by_name))
def test_each_message_matches_tritonclients_definition(message: str) -> None:
    ours = pb.DESCRIPTOR.message_types_by_name[message]
    theirs = triton_pb.DESCRIPTOR.message_types_by_name[message]
    assert ours.full_name == theirs.full_name == f"inference.{message}"
    assert _shape(ours) == _shape(theirs)


def test_each_method_matches_tritonclients_service() -> None:
    ours = pb.DESCRIPTOR.services_by_name[SERVICE]
    theirs = triton_pb.DESCRIPTOR.services_by_name[SERVICE]
    assert ours.full_name == theirs.full_name == f"inference.{SERVICE}"
    for method in ours.methods:
        twin = theirs.methods_by_name[method.name]
        assert (method.input_type.full_name, method.output_type.full_name) == (
            twin.input_type.full_name,
            twin.output_type.full_name,
        )


@pytest.mark.parametrize(
    "imports",
    [
        "import tritonclient.grpc; import serving_cell.protocols.v2grpc.servicer",
        "import serving_cell.protocols.v2grpc.servicer; import tritonclient.grpc",
    ],
    ids=["tritonclient-first", "ours-first"],
)
def test_the_stubs_load_beside_tritonclient(imports: str) -> None:
    """Both define package ``inference``: ours live in a descriptor pool of their own."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", imports], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
