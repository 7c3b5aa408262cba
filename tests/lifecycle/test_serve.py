"""/serve/{model}/... through the server to real cells (process, docker, swarm runtimes):
the cell's protocols, errors, access, and a version switch with no failed request."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest

from tests.helpers import ADMIN_TOKEN, bearer, multipart, wait_for_status
from tests.lifecycle.conftest import SWARM, Rig
from tests.lifecycle.packages import package

REAL = pytest.mark.parametrize(
    "runtime_kind",
    ["process", pytest.param("docker", marks=pytest.mark.docker), SWARM],
    indirect=True,
)
pytestmark = [pytest.mark.slow, REAL]


def _deploy(rig: Rig, behaviour: str, model: str, **meta: Any) -> dict[str, Any]:
    metadata, files = package(behaviour, model, **meta)
    up = rig.api.post("/api/v1/deployments", files=multipart(metadata, files)).json()
    record = wait_for_status(rig.api, up["deploy_id"], {"ready", "failed"})
    assert record["status"] == "ready", record["status_reason"]
    return record


def _token(rig: Rig, *scopes: str) -> dict[str, str]:
    body = {"name": "-".join(scopes) or "none", "scopes": list(scopes)}
    return bearer(rig.api.post("/api/v1/tokens", json=body).json()["token"])


def test_predict_v2_and_seldon_through_serve(rig: Rig) -> None:
    _deploy(rig, "good", "echo", parameters={"tag": "v1"})
    resp = rig.api.post("/serve/echo/predict", json={"inputs": [1, 2, 3]})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"predictions": {"echo": [1, 2, 3], "tag": "v1"}}

    v2 = rig.api.post(
        "/serve/echo/v2/models/echo/infer",
        json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1.5, 2.5]}]},
    )
    assert v2.status_code == 200, v2.text
    assert v2.json()["model_name"] == "echo" and v2.json()["outputs"]
    assert rig.api.get("/serve/echo/v2/models/echo/ready").status_code == 200

    seldon = rig.api.post(
        "/serve/echo/api/v1.0/predictions", json={"data": {"ndarray": [[5.1, 3.5, 1.4, 0.2]]}}
    )
    assert seldon.status_code == 200, seldon.text
    assert "data" in seldon.json() or "jsonData" in seldon.json()
    assert rig.api.get("/serve/echo/health/ready").json()["state"] == "READY"


def test_serve_errors_are_json(rig: Rig) -> None:
    record = _deploy(rig, "raises", "raiser")
    unknown = rig.api.post("/serve/nobody/predict", json=1)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    failing = rig.api.post("/serve/raiser/predict", json=1)
    assert failing.status_code == 500
    assert "cannot score negative petals" in failing.text
    rig.api.post(f"/api/v1/deployments/{record['deploy_id']}/stop")
    wait_for_status(rig.api, record["deploy_id"], "stopped")
    down = rig.api.post("/serve/raiser/predict", json=1)
    assert down.status_code == 503 and down.json()["error"]["code"] == "no_ready_cell"


def test_serve_needs_predict_unless_public(rig: Rig) -> None:
    _deploy(rig, "good", "private")
    _deploy(rig, "good", "open", public=True)
    url = str(rig.api.base_url)
    with httpx.Client(base_url=url, timeout=30) as anon:
        missing = anon.post("/serve/private/predict", json=1)
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        wrong = anon.post("/serve/private/predict", json=1, headers=_token(rig, "read"))
        assert wrong.status_code == 403
        assert anon.post(
            "/serve/private/predict", json=1, headers=_token(rig, "predict")
        ).is_success
        assert anon.post("/serve/open/predict", json=1).status_code == 200
    # the server's token never reaches the cell
    seen = rig.api.post("/serve/private/predict", json={"inputs": "x"}).json()
    assert ADMIN_TOKEN not in str(seen)


def test_version_switch_loses_no_request(rig: Rig) -> None:
    _deploy(rig, "good", "switch", parameters={"tag": "v1"})
    answers: list[tuple[int, str]] = []
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(base_url=str(rig.api.base_url), headers=rig.api.headers) as client:
            while not stop.is_set():
                resp = client.post("/serve/switch/predict", json={"inputs": 1})
                tag = resp.json()["predictions"]["tag"] if resp.status_code == 200 else resp.text
                answers.append((resp.status_code, tag))

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        metadata, files = package("good", "switch", parameters={"tag": "v2"})
        v2 = rig.api.post("/api/v1/deployments", files=multipart(metadata, files)).json()
        wait_for_status(rig.api, v2["deploy_id"], "ready")
        old = rig.api.get("/api/v1/deployments", params={"model": "switch"}).json()["items"][-1]
        wait_for_status(rig.api, old["deploy_id"], "stopped")
        seen_v2 = len(answers)
        while len(answers) < seen_v2 + 50:
            threading.Event().wait(0.01)
    finally:
        stop.set()
        for t in threads:
            t.join()
    failures = [a for a in answers if a[0] != 200]
    assert failures == [], failures[:5]
    tags = [tag for _, tag in answers]
    assert tags[0] == "v1" and tags[-1] == "v2" and "v2" in tags


def test_server_metrics_count_serve_requests_and_cells(rig: Rig) -> None:
    _deploy(rig, "good", "counted")
    for _ in range(3):
        assert rig.api.post("/serve/counted/predict", json=1).status_code == 200
    rig.api.post("/serve/nobody/predict", json=1)
    text = rig.api.get("/metrics").text
    assert 'deployserver_serve_requests_total{model="counted",status="200"} 3.0' in text
    assert 'deployserver_serve_requests_total{model="_unknown",status="404"} 1.0' in text
    assert "nobody" not in text  # callers cannot mint metric labels
    assert 'deployserver_serve_latency_seconds_count{model="counted"} 3.0' in text
    assert 'deployserver_deployments{status="ready"} 1.0' in text
    assert 'deployserver_async_queue_depth{status="queued"} 0.0' in text
