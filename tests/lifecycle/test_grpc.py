"""The server's gRPC port with real cells (process and docker runtimes), as tritonclient's
gRPC client uses it: the server's own calls, a model's calls routed to its cell, the
same tokens as /serve, gRPC's own status codes, and the same outputs as V2 REST."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from deployserver.config import Settings
from serving_cell.protocols.v2grpc import inference_pb2 as pb
from serving_cell.protocols.v2grpc import inference_pb2_grpc as pb_grpc
from tests.helpers import ADMIN_TOKEN, multipart, wait_for_status
from tests.lifecycle.conftest import Rig

REAL = pytest.mark.parametrize(
    "runtime_kind",
    ["process", pytest.param("docker", marks=pytest.mark.docker)],
    indirect=True,
)
PROCESS = pytest.mark.parametrize("runtime_kind", ["process"], indirect=True)
pytestmark = pytest.mark.slow

LINEAR = b'''
import json
import os


class Model:
    """A linear classifier in plain Python (the cell image has no numpy): three classes
    scored from four measurements, with weights read from the package."""

    def __init__(self, model_dir):
        with open(os.path.join(model_dir, "weights.json")) as fh:
            self.weights = json.load(fh)

    def predict(self, inputs, **kwargs):
        rows = inputs.tolist() if hasattr(inputs, "tolist") else inputs
        w, b = self.weights["w"], self.weights["b"]
        scores = [[sum(a * x for a, x in zip(ws, row)) + c for ws, c in zip(w, b)] for row in rows]
        best = [s.index(max(s)) for s in scores]
        return {
            "scores": scores,
            "class": best,
            "label": [self.weights["classes"][i] for i in best],
        }
'''
WEIGHTS = {
    "classes": ["setosa", "versicolor", "virginica"],
    "w": [[0.5, 1.5, -2.0, -1.0], [0.25, -0.5, 0.5, -0.75], [-0.75, -1.0, 1.5, 2.0]],
    "b": [0.5, 1.0, -2.5],
}
ROWS = [[5.0, 3.5, 1.5, 0.25], [6.25, 3.0, 5.25, 2.25], [5.75, 2.75, 4.25, 1.25]]
"""Measurements exactly representable in FP32, so JSON and raw bytes carry the same numbers."""
CLASSES = [0, 2, 1]
"""What the weights make of ROWS: one row of each class."""


@pytest.fixture
def lifecycle_settings(settings: Settings) -> Settings:
    """The rig's server with its gRPC port on, on any free port."""
    return settings.model_copy(update={"health_deadline": 60.0, "grpc_port": 0})


@pytest.fixture
def client(rig: Rig) -> Iterator[triton.InferenceServerClient]:
    port = rig.app.state.ds.grpc_port
    assert port, "the server's gRPC listener did not start"
    with triton.InferenceServerClient(f"127.0.0.1:{port}") as grpc_client:
        yield grpc_client


def _deploy(rig: Rig, model: str, files: dict[str, bytes], **meta: Any) -> dict[str, Any]:
    metadata = {"model": model, **meta}
    up = rig.api.post("/api/v1/deployments", files=multipart(metadata, files))
    assert up.status_code == 202, up.text
    record = wait_for_status(rig.api, up.json()["deploy_id"], {"ready", "failed"})
    assert record["status"] == "ready", record["status_reason"]
    return record


def _linear(rig: Rig, model: str = "linear", **meta: Any) -> dict[str, Any]:
    files = {"score.py": LINEAR, "weights.json": json.dumps(WEIGHTS).encode()}
    return _deploy(rig, model, files, **meta)


def _auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def _token(rig: Rig, *scopes: str) -> str:
    body = {"name": "-".join(scopes), "scopes": list(scopes)}
    token: str = rig.api.post("/api/v1/tokens", json=body).json()["token"]
    return token


def _rows(datatype: str = "FP32") -> triton.InferInput:
    rows = triton.InferInput("rows", [len(ROWS), 4], datatype)
    rows.set_data_from_numpy(np.array(ROWS, dtype=triton.triton_to_np_dtype(datatype)))
    return rows


def _outputs(result: triton.InferResult) -> dict[str, tuple[str, list[int], list[Any]]]:
    outputs = {}
    for output in result.get_response().outputs:
        data = result.as_numpy(output.name).reshape(-1).tolist()
        data = [v.decode() if isinstance(v, bytes) else v for v in data]
        outputs[output.name] = (output.datatype, list(output.shape), data)
    return outputs


def _refused(call: Any, *args: Any, **kwargs: Any) -> tuple[str, str]:
    with pytest.raises(InferenceServerException) as caught:
        call(*args, **kwargs)
    return str(caught.value.status()), str(caught.value.message())


@REAL
def test_triton_grpc_client_through_the_server_gets_what_v2_rest_gets(
    rig: Rig, client: triton.InferenceServerClient
) -> None:
    record = _linear(rig)
    admin = _auth(ADMIN_TOKEN)
    assert client.is_server_live() and client.is_server_ready()
    assert client.get_server_metadata().name == "deployserver"
    assert client.is_model_ready("linear", headers=admin)
    meta = client.get_model_metadata("linear", headers=admin, as_json=True)
    rest_meta = rig.api.get("/serve/linear/v2/models/linear").json()
    assert (meta["name"], meta["platform"]) == ("linear", "model")
    assert meta.get("versions", []) == rest_meta["versions"]

    result = client.infer("linear", [_rows()], headers=admin, request_id="q-1")
    assert result.get_response().id == "q-1"
    assert result.get_response().model_name == "linear"
    via_grpc = _outputs(result)
    assert via_grpc["label"] == ("BYTES", [3], ["setosa", "virginica", "versicolor"])
    assert via_grpc["class"] == ("INT64", [3], CLASSES)
    assert via_grpc["scores"][:2] == ("FP64", [3, 3])

    rest = rig.api.post(
        "/serve/linear/v2/models/linear/infer",
        json={"inputs": [{"name": "rows", "datatype": "FP32", "shape": [3, 4], "data": ROWS}]},
    )
    assert rest.status_code == 200, rest.text
    via_rest = {o["name"]: (o["datatype"], o["shape"], o["data"]) for o in rest.json()["outputs"]}
    assert via_grpc == via_rest
    cell = rig.api.get(f"/api/v1/deployments/{record['deploy_id']}").json()["cell"]
    assert cell["grpc_address"], "the cell's gRPC address is recorded beside its url"


@REAL
def test_grpc_takes_the_tokens_serve_takes(rig: Rig, client: triton.InferenceServerClient) -> None:
    _linear(rig, "private")
    _linear(rig, "open", public=True)
    status, message = _refused(client.infer, "private", [_rows()])
    assert status == "StatusCode.UNAUTHENTICATED" and "needs a token" in message
    status, _ = _refused(client.infer, "private", [_rows()], headers=_auth("not-a-token"))
    assert status == "StatusCode.UNAUTHENTICATED"
    reader = _auth(_token(rig, "read"))
    for call, args in (
        (client.infer, ("private", [_rows()])),
        (client.is_model_ready, ("private",)),
        (client.get_model_metadata, ("private",)),
    ):
        status, message = _refused(call, *args, headers=reader)
        assert status == "StatusCode.PERMISSION_DENIED" and "'predict' scope" in message
    predictor = _auth(_token(rig, "predict"))
    assert _outputs(client.infer("private", [_rows()], headers=predictor))["class"][2] == CLASSES
    # a public model needs none, as on /serve
    assert client.is_model_ready("open")
    assert _outputs(client.infer("open", [_rows()]))["class"][2] == CLASSES
    # an unknown model is not found, token or none
    for headers in (None, _auth(ADMIN_TOKEN)):
        status, message = _refused(client.infer, "nobody", [_rows()], headers=headers)
        assert status == "StatusCode.NOT_FOUND" and message == "no model 'nobody'"


@REAL
def test_the_cells_errors_arrive_as_grpc_codes(rig: Rig) -> None:
    """A tensor one element short of its shape: the cell's INVALID_ARGUMENT, its words."""
    _linear(rig, "open", public=True)
    tensor = pb.ModelInferRequest.InferInputTensor(name="rows", datatype="FP32", shape=[3, 4])
    short = pb.ModelInferRequest(
        model_name="open", inputs=[tensor], raw_input_contents=[b"\x00" * 44]
    )
    with grpc.insecure_channel(f"127.0.0.1:{rig.app.state.ds.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(short)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "input 'rows'" in caught.value.details()
        short.inputs[0].datatype = "COMPLEX"
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(short)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "unknown datatype 'COMPLEX'" in caught.value.details()


@REAL
def test_a_model_without_a_ready_cell_is_unavailable(
    rig: Rig, client: triton.InferenceServerClient
) -> None:
    record = _linear(rig, "open", public=True)
    assert client.is_model_ready("open")
    rig.api.post(f"/api/v1/deployments/{record['deploy_id']}/stop")
    wait_for_status(rig.api, record["deploy_id"], "stopped")
    assert not client.is_model_ready("open")
    for call, args in ((client.infer, ("open", [_rows()])), (client.get_model_metadata, ("open",))):
        status, message = _refused(call, *args)
        assert status == "StatusCode.UNAVAILABLE"
        assert message == "model 'open' has no ready cell serving gRPC"
    # the server itself answers on
    assert client.is_server_live() and client.is_server_ready()


@PROCESS
def test_a_scikit_learn_model_answers_grpc_as_it_answers_rest(
    rig: Rig, client: triton.InferenceServerClient, tmp_path: Path
) -> None:
    """The sklearn template as a user trains and deploys it. Process cells only: its
    packages are in their interpreter already, where a docker cell would first need an
    environment image built from the network."""
    import subprocess
    import sys

    template = Path(__file__).resolve().parents[2] / "templates" / "sklearn"
    subprocess.run([sys.executable, str(template / "train.py"), str(tmp_path)], check=True)
    metadata = json.loads((template / "metadata.json").read_text())
    metadata.pop("requirements")  # installed here already: no environment to build
    files = {
        "score.py": (template / "score.py").read_bytes(),
        "model.joblib": (tmp_path / "model.joblib").read_bytes(),
    }
    _deploy(rig, metadata.pop("model"), files, **metadata)
    admin = _auth(ADMIN_TOKEN)
    via_grpc = _outputs(client.infer("iris-sklearn", [_rows("FP64")], headers=admin))
    rest = rig.api.post(
        "/serve/iris-sklearn/v2/models/iris-sklearn/infer",
        json={"inputs": [{"name": "rows", "datatype": "FP64", "shape": [3, 4], "data": ROWS}]},
    )
    assert rest.status_code == 200, rest.text
    via_rest = {o["name"]: (o["datatype"], o["shape"], o["data"]) for o in rest.json()["outputs"]}
    assert via_grpc == via_rest
    (datatype, shape, answers) = via_grpc["predictions"]
    assert (datatype, shape) == ("BYTES", [3])
    assert "'label': 'setosa'" in answers[0] and "'label': 'virginica'" in answers[1]


GOOD = b"""
class Model:
    def __init__(self, model_dir, **parameters):
        self.tag = parameters["tag"]

    def predict(self, inputs, **kwargs):
        return {"tag": [self.tag] * len(inputs)}
"""


@REAL
def test_a_version_switch_loses_no_grpc_call(rig: Rig) -> None:
    """Calls keep coming while v2 replaces v1: each is answered, by one version or the other."""
    _deploy(rig, "switch", {"score.py": GOOD}, public=True, parameters={"tag": "v1"})
    answers: list[str] = []
    stop = threading.Event()
    address = f"127.0.0.1:{rig.app.state.ds.grpc_port}"

    def hammer() -> None:
        with triton.InferenceServerClient(address) as client:
            while not stop.is_set():
                try:
                    result = client.infer("switch", [_rows()])
                    answers.append(result.as_numpy("tag")[0].decode())
                except InferenceServerException as exc:
                    answers.append(f"{exc.status()}: {exc.message()}")

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        first = rig.api.get("/api/v1/deployments", params={"model": "switch"}).json()["items"][0]
        _deploy(rig, "switch", {"score.py": GOOD}, public=True, parameters={"tag": "v2"})
        wait_for_status(rig.api, first["deploy_id"], "stopped")
        seen = len(answers)
        while len(answers) < seen + 50:
            threading.Event().wait(0.01)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    failures = [a for a in answers if a not in ("v1", "v2")]
    assert failures == [], failures[:5]
    assert answers[0] == "v1" and answers[-1] == "v2"
