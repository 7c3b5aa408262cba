"""The lifecycle on every runtime: rise with health gate, fail with the reason, stop,
start, restart, delete, replace without downtime, keep the old one when the new one
fails, restart a crashed cell, roll back."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from sqlalchemy import select

from deployserver.store import orm
from tests.helpers import eventually, make_wheel, multipart, wait_for_status
from tests.lifecycle.conftest import SWARM, Rig
from tests.lifecycle.packages import package


def _upload(rig: Rig, behaviour: str, model: str, **meta: Any) -> dict[str, Any]:
    metadata, files = package(behaviour, model, **meta)
    resp = rig.api.post("/api/v1/deployments", files=multipart(metadata, files))
    assert resp.status_code == 202, resp.text
    return resp.json()


def _events(rig: Rig, deploy_id: str) -> list[str]:
    return [e["kind"] for e in rig.api.get(f"/api/v1/deployments/{deploy_id}/events").json()]


def _model(rig: Rig, name: str) -> dict[str, Any]:
    return rig.api.get(f"/api/v1/models/{name}").json()


def _predict(rig: Rig, record: dict[str, Any], payload: Any) -> Any:
    if rig.kind == "fake":
        return None
    import httpx

    resp = httpx.post(f"{record['cell']['url']}/predict", json=payload, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()["predictions"]


def test_upload_rises_to_ready_and_becomes_active(rig: Rig) -> None:
    up = _upload(rig, "good", "iris", parameters={"tag": "v1"})
    record = wait_for_status(rig.api, up["deploy_id"], "ready")
    assert record["active"] is True and record["status_reason"] is None
    cell = record["cell"]
    assert cell["runtime"] == rig.runtime.name
    # process cells listen on loopback; containers are reached on their own network
    assert cell["url"].startswith("http://127.0.0.1:") != (rig.kind in ("docker", "swarm"))
    assert cell["restarts"] == 0 and cell["started_at"] and cell["last_health_at"]
    assert cell["node"]  # where it runs: the host, or on Swarm the node it was placed on
    assert _events(rig, up["deploy_id"])[:4] == ["received", "starting", "ready", "activated"]
    assert _model(rig, "iris")["active_deploy_id"] == up["deploy_id"]
    if rig.kind != "fake":
        assert _predict(rig, record, {"inputs": [1, 2]}) == {"echo": [1, 2], "tag": "v1"}


@pytest.mark.parametrize("runtime_kind", ["process", "docker", SWARM], indirect=True)
def test_a_cell_knows_its_version(rig: Rig) -> None:
    _upload(rig, "good", "versioned")
    up = _upload(rig, "good", "versioned")
    record = wait_for_status(rig.api, up["deploy_id"], "ready")
    import httpx

    meta = httpx.get(f"{record['cell']['url']}/v2/models/versioned", timeout=30).json()
    assert meta["versions"] == ["2"], meta


def test_load_failure_ends_failed_with_the_exception(rig: Rig) -> None:
    up = _upload(rig, "fail", "broken")
    record = wait_for_status(rig.api, up["deploy_id"], "failed")
    assert "ValueError: weights are corrupt" in record["status_reason"]
    assert record["active"] is False and record["cell"] is None
    assert rig.runtime.list_cells() == []


def test_cell_that_exits_fails_with_its_exit_code_and_output(rig: Rig) -> None:
    up = _upload(rig, "exit", "exits")
    record = wait_for_status(rig.api, up["deploy_id"], "failed")
    assert "exited with code 3" in record["status_reason"]
    assert "no module named torch" in record["status_reason"]
    logs = rig.api.get(f"/api/v1/deployments/{up['deploy_id']}/logs")
    assert logs.status_code == 200 and "no module named torch" in logs.text


def test_stop_start_restart_delete(rig: Rig) -> None:
    up = _upload(rig, "good", "cycle")
    deploy_id = up["deploy_id"]
    first = wait_for_status(rig.api, deploy_id, "ready")["cell"]

    assert rig.api.post(f"/api/v1/deployments/{deploy_id}/stop").status_code == 202
    stopped = wait_for_status(rig.api, deploy_id, "stopped")
    assert stopped["cell"] is None and rig.runtime.list_cells() == []

    assert rig.api.post(f"/api/v1/deployments/{deploy_id}/start").status_code == 202
    again = wait_for_status(rig.api, deploy_id, "ready")
    assert again["cell"]["id"] != first["id"]

    resp = rig.api.post(f"/api/v1/deployments/{deploy_id}/restart")
    assert resp.status_code == 202
    wait_for_status(rig.api, deploy_id, {"stopping", "starting", "ready"})
    restarted = rig.api.get(f"/api/v1/deployments/{deploy_id}").json()
    while restarted["cell"] is None or restarted["cell"]["restarts"] < 1:
        restarted = wait_for_status(rig.api, deploy_id, "ready")
    assert restarted["cell"]["id"] != again["cell"]["id"]
    assert "restart_requested" in _events(rig, deploy_id)

    assert rig.api.delete(f"/api/v1/deployments/{deploy_id}").status_code == 204
    assert rig.api.get(f"/api/v1/deployments/{deploy_id}").status_code == 404
    assert not (rig.settings.deployments_dir / deploy_id).exists()
    assert rig.runtime.list_cells() == []
    assert _model(rig, "cycle")["active_deploy_id"] is None


def test_new_version_replaces_the_old_one(rig: Rig) -> None:
    v1 = _upload(rig, "good", "swap", parameters={"tag": "v1"})
    wait_for_status(rig.api, v1["deploy_id"], "ready")
    v2 = _upload(rig, "good", "swap", parameters={"tag": "v2"})
    record = wait_for_status(rig.api, v2["deploy_id"], "ready")
    assert record["active"] is True
    old = wait_for_status(rig.api, v1["deploy_id"], "stopped")
    assert old["active"] is False and "replaced" in _events(rig, v1["deploy_id"])
    if rig.kind != "fake":
        assert _predict(rig, record, 1)["tag"] == "v2"


def test_starting_a_version_while_the_active_one_is_stopped_makes_it_active(rig: Rig) -> None:
    v1 = _upload(rig, "good", "restarted", parameters={"tag": "v1"})
    wait_for_status(rig.api, v1["deploy_id"], "ready")
    v2 = rig.api.post(
        "/api/v1/deployments",
        params={"start": "false"},
        files=multipart(*package("good", "restarted", parameters={"tag": "v2"})),
    ).json()
    rig.api.post(f"/api/v1/deployments/{v1['deploy_id']}/stop")
    wait_for_status(rig.api, v1["deploy_id"], "stopped")
    rig.api.post(f"/api/v1/deployments/{v2['deploy_id']}/start")
    record = wait_for_status(rig.api, v2["deploy_id"], "ready")
    eventually(lambda: _model(rig, "restarted")["active_deploy_id"] == v2["deploy_id"])
    assert "activated" in _events(rig, v2["deploy_id"])
    if rig.kind != "fake":
        assert _predict(rig, record, 1)["tag"] == "v2"


def test_starting_an_older_version_beside_the_active_one_leaves_it_active(rig: Rig) -> None:
    v1 = _upload(rig, "good", "beside", parameters={"tag": "v1"})
    wait_for_status(rig.api, v1["deploy_id"], "ready")
    v2 = _upload(rig, "good", "beside", parameters={"tag": "v2"})
    wait_for_status(rig.api, v2["deploy_id"], "ready")
    wait_for_status(rig.api, v1["deploy_id"], "stopped")
    rig.api.post(f"/api/v1/deployments/{v1['deploy_id']}/start")
    old = wait_for_status(rig.api, v1["deploy_id"], "ready")
    assert old["active"] is False
    assert _model(rig, "beside")["active_deploy_id"] == v2["deploy_id"]


def test_broken_new_version_leaves_the_old_one_serving(rig: Rig) -> None:
    v1 = _upload(rig, "good", "keep", parameters={"tag": "v1"})
    first = wait_for_status(rig.api, v1["deploy_id"], "ready")
    v2 = _upload(rig, "fail", "keep")
    wait_for_status(rig.api, v2["deploy_id"], "failed")
    still = rig.api.get(f"/api/v1/deployments/{v1['deploy_id']}").json()
    assert still["status"] == "ready" and still["active"] is True
    assert _model(rig, "keep")["active_deploy_id"] == v1["deploy_id"]
    if rig.kind != "fake":
        assert _predict(rig, first, 1)["tag"] == "v1"


def test_crashed_cell_is_restarted_then_failed_past_the_budget(rig: Rig) -> None:
    up = _upload(rig, "good", "crashy")
    deploy_id = up["deploy_id"]
    cell = wait_for_status(rig.api, deploy_id, "ready")["cell"]
    # (on Swarm, Swarm starts the new task itself and the server adopts it)
    for n in range(1, rig.settings.crash_loop_budget + 1):
        rig.kill(cell["id"])
        record = rig.api.get(f"/api/v1/deployments/{deploy_id}").json()
        while record["cell"] is None or record["cell"]["id"] == cell["id"]:
            record = wait_for_status(rig.api, deploy_id, "ready")
        assert record["cell"]["restarts"] == n and record["active"] is True
        if rig.kind != "fake":
            assert _predict(rig, record, n)["echo"] == n
        cell = record["cell"]
    assert _events(rig, deploy_id).count("crashed") == rig.settings.crash_loop_budget
    if rig.kind == "swarm":  # the replacements were Swarm's own, adopted
        events = rig.api.get(f"/api/v1/deployments/{deploy_id}/events").json()
        assert sum("restarted by swarm" in e["message"] for e in events) == n
    rig.kill(cell["id"])
    failed = wait_for_status(rig.api, deploy_id, "failed")
    assert "crash loop" in failed["status_reason"]


def test_rollback_makes_an_old_version_active_again(rig: Rig) -> None:
    v1 = _upload(rig, "good", "rb", parameters={"tag": "v1"})
    wait_for_status(rig.api, v1["deploy_id"], "ready")
    v2 = _upload(rig, "good", "rb", parameters={"tag": "v2"})
    wait_for_status(rig.api, v2["deploy_id"], "ready")
    wait_for_status(rig.api, v1["deploy_id"], "stopped")
    resp = rig.api.post("/api/v1/models/rb/rollback", json={"version": 1})
    assert resp.status_code == 202 and resp.json()["deploy_id"] == v1["deploy_id"]
    back = wait_for_status(rig.api, v1["deploy_id"], "ready")
    wait_for_status(rig.api, v2["deploy_id"], "stopped")
    assert back["active"] is True
    assert _model(rig, "rb")["active_deploy_id"] == v1["deploy_id"]
    missing = rig.api.post("/api/v1/models/rb/rollback", json={"version": 9})
    assert missing.status_code == 404
    bad = rig.api.post("/api/v1/models/rb/rollback", json={"version": 1, "deploy_id": "x"})
    assert bad.status_code == 422


def _tiny_wheel() -> bytes:
    """dstiny, VALUE = 42; new content each run, so no environment image cached by an
    earlier run fits."""
    module = f"VALUE = 42\nRUN = {secrets.token_hex(8)!r}\n".encode()
    return make_wheel("dstiny", "0.1", {"dstiny.py": module})


def test_requirements_build_an_environment_once(rig: Rig) -> None:
    wheel = _tiny_wheel()
    metadata, files = package("library", "withlib")
    files["libraries/dstiny-0.1-py3-none-any.whl"] = wheel
    v1 = rig.api.post("/api/v1/deployments", files=multipart(metadata, files)).json()
    record = wait_for_status(rig.api, v1["deploy_id"], {"ready", "failed"}, timeout=600)
    assert record["status"] == "ready", record["status_reason"]
    assert _events(rig, v1["deploy_id"])[:3] == ["received", "building", "starting"]
    if rig.kind != "fake":
        assert _predict(rig, record, 1) == {"value": 42}
    # a new version with the same requirements starts with no build at all
    v2 = rig.api.post("/api/v1/deployments", files=multipart(metadata, files)).json()
    wait_for_status(rig.api, v2["deploy_id"], "ready", timeout=300)
    assert "building" not in _events(rig, v2["deploy_id"])


def test_unresolvable_requirement_fails_the_build(rig: Rig) -> None:
    metadata, files = package("good", "nolib", requirements=["does-not-exist-ds==0.0.1"])
    up = rig.api.post("/api/v1/deployments", files=multipart(metadata, files)).json()
    record = wait_for_status(rig.api, up["deploy_id"], "failed", timeout=300)
    assert "environment build failed" in record["status_reason"]
    assert "does-not-exist-ds" in record["status_reason"]


def test_bad_requirement_is_refused_at_upload(rig: Rig) -> None:
    for bad in ("--index-url http://evil.example/simple", "pkg @ file:///etc/passwd", "-e ."):
        metadata, files = package("good", "badreq", requirements=[bad])
        resp = rig.api.post("/api/v1/deployments", files=multipart(metadata, files))
        assert resp.status_code == 422, (bad, resp.text)
        assert resp.json()["error"]["code"] == "invalid_metadata"


@pytest.mark.parametrize("runtime_kind", ["fake"], indirect=True)
def test_a_long_healthy_cell_has_its_crashes_forgiven(rig: Rig) -> None:
    """The reconciler's rule, the same on every runtime: crashes far apart are no loop."""
    rig.settings.crash_forgive_seconds = 0.01
    rig.settings.watch_interval = 0.05
    up = _upload(rig, "good", "forgiven")
    cell = wait_for_status(rig.api, up["deploy_id"], "ready")["cell"]
    rig.kill(cell["id"])
    record = rig.api.get(f"/api/v1/deployments/{up['deploy_id']}").json()
    while record["cell"] is None or record["cell"]["id"] == cell["id"]:
        record = wait_for_status(rig.api, up["deploy_id"], "ready")

    def forgiven() -> bool:
        with rig.app.state.ds.sessions() as session:
            return all(c.crashes == 0 for c in session.scalars(select(orm.Cell)))

    eventually(forgiven, timeout=30, what="crash count forgiven")
    assert record["cell"]["restarts"] == 1  # restarts still count every restart


def test_rollback_to_a_version_that_is_still_ready(rig: Rig) -> None:
    v1 = _upload(rig, "good", "rbready", parameters={"tag": "v1"})
    wait_for_status(rig.api, v1["deploy_id"], "ready")
    v2 = _upload(rig, "good", "rbready", parameters={"tag": "v2"})
    wait_for_status(rig.api, v2["deploy_id"], "ready")
    wait_for_status(rig.api, v1["deploy_id"], "stopped")
    rig.api.post(f"/api/v1/deployments/{v1['deploy_id']}/start")  # ready, but not serving
    assert wait_for_status(rig.api, v1["deploy_id"], "ready")["active"] is False
    rig.api.post("/api/v1/models/rbready/rollback", json={"version": 1})
    eventually(
        lambda: _model(rig, "rbready")["active_deploy_id"] == v1["deploy_id"],
        what="rolled back to the ready version",
    )
    wait_for_status(rig.api, v2["deploy_id"], "stopped")
