#!/usr/bin/env bash
# Regenerate the Python modules of the Open Inference Protocol's gRPC service from
# serving_cell/protocols/v2grpc/inference.proto: inference_pb2.py (messages), its .pyi
# (types) and inference_pb2_grpc.py (service stubs), with grpcio-tools (the test extra).
# The generated modules are committed; run this after changing the .proto, and commit them.
#
# One step beyond protoc: the messages are loaded into a descriptor pool of their own,
# not protobuf's default one. The protocol's package is `inference`, and so is that of
# every other implementation's generated code (tritonclient.grpc's, for one): two of them
# in protobuf's default pool fail with "duplicate symbol 'inference.ServerLiveRequest'".
# With a pool of their own, a scoring script (or a test) may import tritonclient.grpc
# beside the cell's service. The wire format is the same either way.
#
# Usage: scripts/generate-grpc-stubs.sh      (PYTHON: interpreter with grpcio-tools)
set -euo pipefail
cd "$(dirname "$0")/.."

proto=serving_cell/protocols/v2grpc/inference.proto
"${PYTHON:-python3}" -m grpc_tools.protoc -I . \
    --python_out=. --pyi_out=. --grpc_python_out=. "$proto"
"${PYTHON:-python3}" - "${proto%.proto}_pb2.py" <<'PY'
import sys
from pathlib import Path

path = Path(sys.argv[1])
default = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
own = "DESCRIPTOR = _descriptor_pool.DescriptorPool().AddSerializedFile("
text = path.read_text()
if text.count(default) != 1:
    sys.exit(f"{path}: protoc's output changed shape (no single {default!r}); update this script")
path.write_text(text.replace(default, own))
PY
echo "generated ${proto%.proto}_pb2.py, _pb2.pyi and _pb2_grpc.py" >&2
