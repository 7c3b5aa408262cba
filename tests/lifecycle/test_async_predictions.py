"""Asynchronous predictions on real cells: succeeded, failed, listed, deleted, resumed
after a server restart, and a webhook whose signature the receiver verifies."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.helpers import bearer, eventually, multipart, serve, server_process, wait_for_status
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


@pytest.mark.slow
@REAL
def test_webhook_is_signed_and_verifiable(rig: Rig) -> None:
    received: list[tuple[bytes, str]] = []
    arrived = threading.Event()

    async def hook(request: Request) -> Response:
        received.append((await request.body(), request.headers["x-deployserver-signature"]))
        arrived.set()
        return Response(status_code=204)

    _deploy(rig.api, "good", "hooked")
    with serve(Starlette(routes=[Route("/hook", hook, methods=["POST"])])) as hook_url:
        sub = rig.api.post(
            "/api/v1/models/hooked/predictions",
            params={"webhook": f"{hook_url}/hook"},
            json={"inputs": "ping"},
        ).json()
        assert arrived.wait(60), "no webhook arrived"
    body, signature = received[0]
    secret = (rig.settings.data_dir / "webhook-secret").read_text().strip().encode()
    expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(signature, expected)
    record = json.loads(body)
    assert record["request_id"] == sub["request_id"] and record["status"] == "succeeded"
    eventually(
        lambda: (
            rig.api.get(f"/api/v1/predictions/{sub['request_id']}").json()["webhook_status"]
            == "delivered"
        ),
        what="webhook delivery recorded",
    )


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
