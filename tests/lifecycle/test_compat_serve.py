"""Older tools' clients through ``/serve`` on a real server (``deployserver serve``, cells
as local processes): Dataloop-style servers' paths, and streamed predictions."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
from httpx_sse import connect_sse

from tests.helpers import bearer, multipart, peak_rss_bytes, server_process, wait_for_status

STREAMS = (Path(__file__).parents[1] / "serving_cell/fixtures/streams/score.py").read_bytes()
DOG = b"""
class Model:
    def __init__(self, model_dir, **parameters):
        pass

    def load(self):
        pass

    def predict(self, inputs, **kwargs):
        if inputs["image"][:4] != b"\\x89PNG":
            raise ValueError("not a PNG picture")
        return {"image": len(inputs["image"]), "label": "Dog"}
"""
PICTURE = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[tuple[str, Any, str]]:
    env = {
        "DEPLOYSERVER_DATABASE_URL": database_url,
        "DEPLOYSERVER_RUNTIME": "process",
        "DEPLOYSERVER_ASYNC_ANONYMOUS": "true",
        "DEPLOYSERVER_ASYNC_POLL_INTERVAL": "0.2",
    }
    with server_process(tmp_path / "data", env) as running:
        yield running


def _deploy(api: httpx.Client, model: str, script: bytes, **meta: Any) -> dict[str, Any]:
    files = multipart({"model": model, **meta}, {"score.py": script})
    up = api.post("/api/v1/deployments", files=files)
    assert up.status_code == 202, up.text
    return wait_for_status(api, up.json()["deploy_id"], "ready")


# Dataloop-style servers, with requests as their test script sends them:
#   requests.post(url, files={"image": ...}, params={"save_locally": ...})


def _send_image(base: str, path: str, headers: dict[str, str], picture: bytes = PICTURE) -> Any:
    return requests.post(
        url=f"{base}/{path}",
        files={"image": ("item.png", picture)},
        params={"save_locally": True},
        headers=headers,
        timeout=120,
    )


def test_dataloop_clients_predict_poll_list_and_delete(server: tuple[str, Any, str]) -> None:
    url, _proc, token = server
    auth = bearer(token)
    with httpx.Client(base_url=url, headers=auth, timeout=120) as api:
        _deploy(api, "dogs", DOG)
        base = f"{url}/serve/dogs"

        blocking = _send_image(base, "predict", auth)
        assert blocking.status_code == 200, blocking.text
        result = blocking.json()
        assert result["status"] == "Success"
        assert result["response"] == {"image": len(PICTURE), "label": "Dog"}
        assert result["createdAt"].endswith("Z") and result["request_id"]

        sent = _send_image(base, "asyncPredict", auth).json()
        assert sent["status"] == "Success" and sent["response"] == "Async request got sent"
        # the same prediction on our own API: same storage
        record = api.get(f"/api/v1/predictions/{sent['request_id']}")
        assert record.json()["model"] == "dogs"
        polled = _poll(base, sent["request_id"], auth)
        assert polled["status"] == "Success" and polled["response"]["label"] == "Dog"

        failed = _poll(
            base, _send_image(base, "asyncPredict", auth, b"GIF8").json()["request_id"], auth
        )
        assert failed["status"] == "Fail" and "not a PNG picture" in failed["response"]

        listed = requests.get(f"{base}/predictResults", headers=auth, timeout=30).json()
        assert [r["request_id"] for r in listed] == [
            failed["request_id"],
            sent["request_id"],
            result["request_id"],
        ]
        gone = requests.delete(f"{base}/delete/{sent['request_id']}", headers=auth, timeout=30)
        assert gone.json() == {
            "status": "Success",
            "response": f"Request Id: '{sent['request_id']}' got deleted",
        }
        again = requests.delete(f"{base}/delete/{sent['request_id']}", headers=auth, timeout=30)
        assert again.status_code == 404 and again.json()["status"] == "Fail"
        missing = requests.get(f"{base}/predictResults/{sent['request_id']}", headers=auth)
        assert missing.status_code == 404
        assert (
            missing.json()["response"] == f"Request Id: {sent['request_id']}, result wasn't found."
        )

        everything = requests.delete(f"{base}/deleteAll", headers=auth, timeout=30)
        assert everything.json() == {
            "status": "Success",
            "response": "All available data got deleted",
        }
        assert requests.get(f"{base}/predictResults", headers=auth, timeout=30).json() == []
        assert api.get("/api/v1/predictions", params={"model": "dogs"}).json()["items"] == []

        # without the Dataloop client's flag, /predict is the cell's own
        own = api.post("/serve/dogs/predict", files={"image": ("a.png", PICTURE)})
        assert own.json() == {"predictions": {"image": len(PICTURE), "label": "Dog"}}
        no_image = requests.post(
            f"{base}/asyncPredict", files={"picture": ("a.png", PICTURE)}, headers=auth
        )
        assert no_image.status_code == 400
        assert no_image.json() == {
            "status": "Fail",
            "response": "no file part named 'image': send the picture as 'image'",
        }


def _poll(base: str, request_id: str, headers: dict[str, str]) -> dict[str, Any]:
    """As their clients poll: GET predictResults/{request_id} until it is not Pending."""
    for _ in range(1200):
        answer = requests.get(f"{base}/predictResults/{request_id}", headers=headers, timeout=30)
        assert answer.status_code == 200, answer.text
        if answer.json()["status"] != "Pending":
            return dict(answer.json())
        threading.Event().wait(0.05)
    raise AssertionError(f"{request_id} still pending")


def test_dataloop_paths_follow_the_async_api_s_access(server: tuple[str, Any, str]) -> None:
    url, _proc, token = server
    with httpx.Client(base_url=url, headers=bearer(token), timeout=120) as api:
        _deploy(api, "open-dogs", DOG, public=True)
        _deploy(api, "closed-dogs", DOG)
    # DEPLOYSERVER_ASYNC_ANONYMOUS=true: a public model's predictions need no token...
    sent = _send_image(f"{url}/serve/open-dogs", "asyncPredict", {})
    assert sent.status_code == 200, sent.text
    assert _poll(f"{url}/serve/open-dogs", sent.json()["request_id"], {})["status"] == "Success"
    # ...a private model's do, and listing or clearing a model's results always does
    closed = _send_image(f"{url}/serve/closed-dogs", "asyncPredict", {})
    listing = requests.get(f"{url}/serve/open-dogs/predictResults", timeout=30)
    clearing = requests.delete(f"{url}/serve/open-dogs/deleteAll", timeout=30)
    for answer in (closed, listing, clearing):
        assert answer.status_code == 401
        assert answer.json()["status"] == "Fail" and "token" in answer.json()["response"]
        assert answer.headers["www-authenticate"] == "Bearer"


# Streaming


def test_a_streamed_prediction_reaches_the_client_item_by_item(
    server: tuple[str, Any, str], tmp_path: Path
) -> None:
    url, _proc, token = server
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    with httpx.Client(base_url=url, headers=bearer(token), timeout=120) as api:
        _deploy(api, "tokens", STREAMS, parameters={"gate": str(gate)})
        with api.stream(
            "POST", "/serve/tokens/predict", json={"kind": "gated", "count": 3}
        ) as resp:
            assert resp.headers["content-type"] == "application/x-ndjson"
            assert "content-length" not in resp.headers
            lines = resp.iter_lines()
            # the script has yielded one item and now waits on the gate: it is here already
            assert json.loads(next(lines)) == {"index": 0, "token": "first"}
            with gate.open("w") as opener:  # unblocks the script
                opener.write("go")
            rest = [json.loads(line) for line in lines if line]
        assert [item["index"] for item in rest] == [1, 2]

        with connect_sse(api, "POST", "/serve/tokens/predict", json={"kind": "async"}) as events:
            received = [json.loads(event.data) for event in events.iter_sse()]
        assert received == [{"index": i, "token": f"a{i}"} for i in range(3)]


LONG_ITEMS, ITEM_BYTES = 64 * 1024, 1024  # 64 MiB of JSON lines


def test_a_long_stream_keeps_the_server_s_memory_flat(server: tuple[str, Any, str]) -> None:
    url, proc, token = server
    with httpx.Client(base_url=url, headers=bearer(token), timeout=300) as api:
        _deploy(api, "long", STREAMS)
        warm = api.post("/serve/long/predict", json={"kind": "long", "count": 2, "size": 10})
        assert warm.status_code == 200
        before = peak_rss_bytes(proc.pid)
        received = items = 0
        request = {"kind": "long", "count": LONG_ITEMS, "size": ITEM_BYTES}
        with api.stream("POST", "/serve/long/predict", json=request) as resp:
            for line in resp.iter_lines():
                received += len(line)
                items += 1
        growth = peak_rss_bytes(proc.pid) - before
    assert items == LONG_ITEMS and received > LONG_ITEMS * ITEM_BYTES
    print(f"server peak RSS growth {growth / 2**20:.1f} MiB for a {received >> 20} MiB stream")
    assert growth < 32 * 1024 * 1024, f"server memory grew {growth / 2**20:.1f} MiB"


# MLflow and V2 clients through /serve


IRIS_COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
TEMPLATES = Path(__file__).parents[2] / "templates"


def _mlflow_package(folder: Path) -> dict[str, bytes]:
    """The MLflow template's model, trained here; its requirements.txt left out, so the
    cell runs on the server's own Python (which has mlflow) with no environment build."""
    import subprocess
    import sys

    subprocess.run(
        [sys.executable, str(TEMPLATES / "mlflow" / "train.py"), str(folder)],
        check=True,
        capture_output=True,
    )
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and p.name not in ("requirements.txt", "conda.yaml", "python_env.yaml")
    }


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")  # mlflow's own
def test_mlflow_s_curl_example_and_error_shape_through_serve(
    server: tuple[str, Any, str], tmp_path: Path
) -> None:
    import subprocess

    from mlflow.exceptions import RestException

    url, _proc, token = server
    files = _mlflow_package(tmp_path / "model")
    with httpx.Client(base_url=url, headers=bearer(token), timeout=120) as api:
        up = api.post("/api/v1/deployments", files=multipart({"model": "iris-mlflow"}, files))
        wait_for_status(api, up.json()["deploy_id"], "ready")

    def curl(body: dict[str, Any]) -> tuple[int, Any]:
        """As MLflow's documents show it: curl with a JSON dataframe_split body."""
        out = subprocess.run(
            [
                *("curl", "-sS", "-X", "POST", "-H", "Content-Type:application/json"),
                *("-H", f"Authorization: Bearer {token}", "-w", "\n%{http_code}"),
                *(f"{url}/serve/iris-mlflow/invocations", "--data", json.dumps(body)),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        text, status = out.rsplit("\n", 1)
        return int(status), json.loads(text)

    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
    ok = curl({"dataframe_split": {"columns": IRIS_COLUMNS, "data": rows}})
    missing = curl(
        {"dataframe_split": {"columns": IRIS_COLUMNS[:3], "data": [r[:3] for r in rows]}}
    )
    text = curl({"dataframe_records": [dict.fromkeys(IRIS_COLUMNS, "wide")]})
    assert ok == (200, {"predictions": [0, 2]})
    for status, body in (missing, text):
        assert status == 400, body
        assert set(body) == {"error_code", "message"}
        assert RestException(body).get_http_status_code() == 400
    assert "petal_width" in missing[1]["message"]


def test_v2_errors_reach_tritonclient_through_serve(server: tuple[str, Any, str]) -> None:
    import numpy as np
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    url, _proc, token = server
    with httpx.Client(base_url=url, headers=bearer(token), timeout=120) as api:
        up = api.post(
            "/api/v1/deployments",
            files=multipart(
                {"model": "iris-seldon"}, {"Model.py": (TEMPLATES / "seldon/Model.py").read_bytes()}
            ),
        )
        wait_for_status(api, up.json()["deploy_id"], "ready")
    auth = bearer(token)
    client = triton.InferenceServerClient(f"{url.removeprefix('http://')}/serve/iris-seldon")
    try:
        assert client.is_model_ready("iris-seldon", headers=auth)
        features = triton.InferInput("features", [1, 4], "FP64")
        features.set_data_from_numpy(np.array([[5.1, 3.5, 1.4, 0.2]]))
        answer = client.infer("iris-seldon", [features], headers=auth)
        assert answer.as_numpy("predictions").argmax() == 0
        with pytest.raises(InferenceServerException) as refused:
            client.infer("iris", [features], headers=auth)
    finally:
        client.close()
    assert refused.value.status() == "404"
    assert refused.value.message() == "model 'iris' not found; this cell serves 'iris-seldon'"


@pytest.mark.parametrize(
    "runtime_kind", ["process", pytest.param("docker", marks=pytest.mark.docker)], indirect=True
)
def test_the_first_item_crosses_every_runtime_before_the_last_is_made(rig: Any) -> None:
    """In a container too: the script yields one item, then waits until a second
    request opens its gate; the first item must reach the client before that."""
    _deploy(rig.api, "held", STREAMS)
    with rig.api.stream("POST", "/serve/held/predict", json={"kind": "held", "count": 3}) as resp:
        lines = resp.iter_lines()
        assert json.loads(next(lines)) == {"index": 0, "token": "first"}
        opened = rig.api.post("/serve/held/predict", json={"kind": "release"})
        assert opened.json() == {"predictions": {"released": True}}
        rest = [json.loads(line) for line in lines if line]
    assert rest == [{"index": 1, "token": "t1"}, {"index": 2, "token": "t2"}]
