"""Asynchronous predictions on real cells: succeeded, failed, listed, deleted, resumed
after a server restart (webhooks: tests/security/test_webhook_ssrf.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import bearer, eventually, multipart, server_process, wait_for_status
from tests.lifecycle.conftest import Rig
from tests.lifecycle.packages import package

REAL = pytest.mark.parametrize(
    "runtime_kind", ["process", pytest.param("docker", marks=pytest.mark.docker)], indirect=True
)


def _deploy(api: httpx.Client, behaviour: str, model: str, **meta: Any) -> dict[str, Any]:
    metadata, files = package(behaviour, model, **meta)
    up = api.post("/api/v1/deployments", files=multipart(metadata, files)).json()
    return wait_for_status(api, up["deploy_id"], "ready")


def _until_done(api: httpx.Client, request_id: str) -> dict[str, Any]:
    record: dict[str, Any] = {}

    def done() -> bool:
        record.update(api.get(f"/api/v1/predictions/{request_id}").json())
        return record["status"] in ("succeeded", "failed")

    eventually(done, what=f"prediction {request_id} done")
    return record


@pytest.mark.slow
@REAL
def test_async_prediction_succeeds_fails_lists_and_deletes(rig: Rig) -> None:
    good = _deploy(rig.api, "good", "later", parameters={"tag": "v1"})
    _deploy(rig.api, "raises", "grumpy")
    submitted = rig.api.post("/api/v1/models/later/predictions", json={"inputs": [4, 2]})
    assert submitted.status_code == 202
    body = submitted.json()
    assert body["status"] == "queued" and submitted.headers["location"].endswith(body["request_id"])
    done = _until_done(rig.api, body["request_id"])
    assert done["status"] == "succeeded" and done["error"] is None
    assert done["result"] == {"echo": [4, 2], "tag": "v1"}
    assert done["model"] == "later" and done["deploy_id"] == good["deploy_id"]
    assert done["created_at"] and done["completed_at"]

    bad = rig.api.post("/api/v1/models/grumpy/predictions", json=1).json()
    failed = _until_done(rig.api, bad["request_id"])
    assert failed["status"] == "failed" and "cannot score negative petals" in failed["error"]

    listed = rig.api.get("/api/v1/predictions", params={"model": "grumpy"}).json()["items"]
    assert [p["request_id"] for p in listed] == [bad["request_id"]]
    only_ok = rig.api.get("/api/v1/predictions", params={"status": "succeeded"}).json()["items"]
    assert [p["request_id"] for p in only_ok] == [body["request_id"]]

    assert rig.api.delete(f"/api/v1/predictions/{bad['request_id']}").status_code == 204
    gone = rig.api.get(f"/api/v1/predictions/{bad['request_id']}")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "prediction_not_found"
    unknown = rig.api.post("/api/v1/models/nobody/predictions", json=1)
    assert unknown.status_code == 404


@REAL
def test_a_long_poll_answers_once_the_prediction_is_done(rig: Rig) -> None:
    """``?wait=S`` holds the GET until the prediction finishes: one call, not a poll loop;
    past ``S`` it answers as the prediction is then."""
    _deploy(rig.api, "slowish", "patient", parameters={"delay": 0})
    body = rig.api.post("/api/v1/models/patient/predictions", json={"inputs": [1]}).json()
    done = rig.api.get(f"/api/v1/predictions/{body['request_id']}", params={"wait": 30}).json()
    assert done["status"] == "succeeded", done
    assert done["result"] == [1], done["result"]
    # a model with no ready cell: the wait runs out and the record says it is still queued
    rig.api.post(f"/api/v1/deployments/{_model_active(rig.api, 'patient')}/stop")
    eventually(lambda: _model_active_ready(rig.api, "patient") is False)
    later = rig.api.post("/api/v1/models/patient/predictions", json={"inputs": [2]}).json()
    waited = rig.api.get(f"/api/v1/predictions/{later['request_id']}", params={"wait": 0.5})
    assert waited.status_code == 200 and waited.json()["status"] == "queued"
    too_long = rig.api.get(f"/api/v1/predictions/{later['request_id']}", params={"wait": 61})
    assert too_long.status_code == 422


def _model_active(api: httpx.Client, model: str) -> str:
    return str(api.get(f"/api/v1/models/{model}").json()["active_deploy_id"])


def _model_active_ready(api: httpx.Client, model: str) -> bool:
    active = _model_active(api, model)
    return bool(api.get(f"/api/v1/deployments/{active}").json()["status"] == "ready")


@pytest.mark.slow
@REAL
def test_async_predictions_to_a_batching_model_share_calls_and_split_back(rig: Rig) -> None:
    batching = {"max_batch_size": 8, "max_latency_ms": 1000}
    _deploy(rig.api, "batched", "stacked", batching=batching, parameters={"first_delay": 0.5})
    submitted = [
        rig.api.post("/api/v1/models/stacked/predictions", json={"inputs": i}).json()
        for i in range(6)
    ]
    done = [_until_done(rig.api, s["request_id"]) for s in submitted]
    assert [d["status"] for d in done] == ["succeeded"] * 6
    assert [d["result"]["echo"] for d in done] == list(range(6))
    # the worker sends up to 4 at once: those behind the slow first batch went together
    assert max(d["result"]["batch"] for d in done) > 1


@pytest.mark.slow
def test_queued_prediction_is_resumed_after_a_server_restart(
    tmp_path: Path, database_url: str
) -> None:
    data_dir = tmp_path / "data"
    env = {"DEPLOYSERVER_DATABASE_URL": database_url, "DEPLOYSERVER_RUNTIME": "process"}
    with server_process(data_dir, env) as (url, _proc, token):
        api = httpx.Client(base_url=url, headers=bearer(token), timeout=60)
        ready = _deploy(api, "good", "patient", parameters={"tag": "v1"})
        api.post(f"/api/v1/deployments/{ready['deploy_id']}/stop")
        wait_for_status(api, ready["deploy_id"], "stopped")
        queued = api.post("/api/v1/models/patient/predictions", json={"inputs": 7}).json()
        assert api.get(f"/api/v1/predictions/{queued['request_id']}").json()["status"] == "queued"
        api.close()
    with server_process(data_dir, env) as (url, _proc, token):
        api = httpx.Client(base_url=url, headers=bearer(token), timeout=60)
        assert api.get(f"/api/v1/predictions/{queued['request_id']}").json()["status"] in (
            "queued",
            "running",
        )
        api.post(f"/api/v1/deployments/{ready['deploy_id']}/start")
        done = _until_done(api, queued["request_id"])
        assert done["status"] == "succeeded" and done["result"]["echo"] == 7
        api.post(f"/api/v1/deployments/{ready['deploy_id']}/stop")
        wait_for_status(api, ready["deploy_id"], "stopped")
        api.close()
