"""Replicas on every runtime: balanced requests, a killed replica costs no request (those
it was answering go once to another), the autoscaler (its clock moved by hand) scales up
and down, and an idle model is paused, then scaled to zero, and woken by a request (and
by an asynchronous prediction)."""

from __future__ import annotations

import re
import threading
from typing import Any

import httpx
import pytest

from tests.helpers import eventually, multipart, wait_for_status
from tests.lifecycle.conftest import Rig
from tests.lifecycle.packages import package

SLOW = 1.5
"""Seconds a held request takes in its cell (fake: ?delay=, real: inputs["sleep"])."""


def _deploy(rig: Rig, model: str, **scaling: Any) -> dict[str, Any]:
    metadata, files = package("whoami", model, scaling=scaling)
    up = rig.api.post("/api/v1/deployments", files=multipart(metadata, files))
    assert up.status_code == 202, up.text
    record = wait_for_status(rig.api, up.json()["deploy_id"], {"ready", "failed"})
    assert record["status"] == "ready", record["status_reason"]
    return record


def _record(rig: Rig, deploy_id: str) -> dict[str, Any]:
    return rig.api.get(f"/api/v1/deployments/{deploy_id}").json()


def _events(rig: Rig, deploy_id: str) -> list[dict[str, Any]]:
    return list(rig.api.get(f"/api/v1/deployments/{deploy_id}/events").json())


def _who(rig: Rig, model: str, *, sleep: float = 0) -> httpx.Response:
    params = {"delay": sleep} if sleep else {}
    return rig.api.post(f"/serve/{model}/predict", params=params, json={"sleep": sleep})


def _tier(rig: Rig, deploy_id: str, tier: str) -> dict[str, Any]:
    eventually(lambda: _record(rig, deploy_id)["replicas"]["tier"] == tier, what=tier)
    return _record(rig, deploy_id)


def test_replicas_share_the_requests_and_a_killed_one_fails_none(rig: Rig) -> None:
    record = _deploy(rig, "pair", min_replicas=2)
    replicas = record["replicas"]
    assert replicas["desired"] == 2 and replicas["ready"] == 2 and replicas["tier"] == "serving"
    ids = [c["id"] for c in replicas["cells"]]
    assert len(set(ids)) == 2 and record["status_reason"] is None
    assert all(
        c["state"] == "ready" and c["node"] and c["restarts"] == 0 for c in replicas["cells"]
    )
    assert record["cell"]["id"] in ids  # the first ready replica, for old clients
    seen = {_who(rig, "pair").json()["predictions"]["cell"] for _ in range(40)}
    assert len(seen) == 2, seen  # both replicas answered

    answers: list[tuple[int, str]] = []
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(base_url=str(rig.api.base_url), headers=rig.api.headers) as client:
            while not stop.is_set():
                resp = client.post("/serve/pair/predict", json={})
                error = resp.json().get("error") if resp.status_code != 200 else None
                code = error.get("code", "") if isinstance(error, dict) else str(error or "")
                answers.append((resp.status_code, code))

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        eventually(lambda: len(answers) > 20, what="load running")
        rig.kill(ids[1])
        before = len(answers)
        eventually(lambda: len(answers) > before + 100, what="answers after the kill")

        def replaced() -> bool:
            now = _record(rig, record["deploy_id"])["replicas"]
            cells = {c["id"] for c in now["cells"]}
            return now["ready"] == 2 and ids[1] not in cells and ids[0] in cells

        eventually(replaced, what="the killed replica replaced")
    finally:
        stop.set()
        for t in threads:
            t.join()
    failed = [a for a in answers if a[0] != 200]
    if rig.kind != "fake":  # a fake cell's address answers for it even once killed
        # those sent to the dead replica after it died were refused and sent elsewhere;
        # those it died holding went once to the other replica
        assert failed == [], failed[:5]
    after = _record(rig, record["deploy_id"])
    assert after["status"] == "ready"
    assert sorted(c["restarts"] for c in after["replicas"]["cells"]) == [0, 1]
    assert any(e["kind"] == "crashed" for e in _events(rig, record["deploy_id"]))


@pytest.mark.parametrize("runtime_kind", ["process"], indirect=True)
@pytest.mark.parametrize("resend", [True, False], ids=["resend", "opted-out"])
def test_a_request_its_replica_dies_holding_goes_once_to_another(rig: Rig, resend: bool) -> None:
    # a request that kills any replica it reaches: resent once (two replicas die, the
    # third never sees it), or with resend_dropped false not at all (one dies)
    model = "fatal" if resend else "fatal-once"
    record = _deploy(rig, model, min_replicas=3, resend_dropped=resend)
    resp = rig.api.post(f"/serve/{model}/predict", json={"die": True})
    assert resp.status_code == 502 and resp.json()["error"]["code"] == "cell_dropped"
    died = 2 if resend else 1

    def restarted() -> list[int]:
        now = _record(rig, record["deploy_id"])["replicas"]
        return sorted(c["restarts"] for c in now["cells"]) if now["ready"] == 3 else []

    eventually(lambda: sum(restarted()) == died, what=f"{died} replicas restarted")
    assert restarted() == [0] * (3 - died) + [1] * died
    assert _who(rig, model).status_code == 200


def test_the_autoscaler_follows_requests_in_flight(rig: Rig) -> None:
    record = _deploy(rig, "busy", min_replicas=1, max_replicas=3, target_concurrency=1)
    deploy_id = record["deploy_id"]
    with httpx.Client(base_url=str(rig.api.base_url), headers=rig.api.headers) as client:
        held: list[int] = []

        def slow() -> None:
            resp = client.post("/serve/busy/predict", params={"delay": SLOW}, json={"sleep": SLOW})
            held.append(resp.status_code)

        threads = [threading.Thread(target=slow) for _ in range(3)]
        for t in threads:
            t.start()
        eventually(lambda: rig.app.state.ds.load.inflight(deploy_id) == 3, what="3 in flight")
        rig.clock.advance(10)  # ten seconds with three requests in flight, as it sees it
        for t in threads:
            t.join()
    assert held == [200, 200, 200]
    eventually(lambda: _record(rig, deploy_id)["replicas"]["ready"] == 3, what="3 ready")
    scaled = [e["message"] for e in _events(rig, deploy_id) if e["kind"] == "scaled"]
    # a pass may see the second request before the third: 1 → 2 → 3 then, as load rose
    assert scaled and scaled[0].startswith("scaled 1 → "), scaled
    assert re.match(r"scaled [12] → 3: 3\.0 in flight, target 1 \(panic\)", scaled[-1]), scaled
    # quiet: fewer only after the scale-down delay has passed with fewer wanted
    reconciler = rig.app.state.ds.reconciler
    rig.clock.advance(120)
    seen = reconciler.passes
    eventually(lambda: reconciler.passes > seen + 1, what="a pass at the new time")
    assert _record(rig, deploy_id)["replicas"]["desired"] == 3
    rig.clock.advance(rig.settings.scale_down_delay + 1)
    eventually(lambda: _record(rig, deploy_id)["replicas"]["ready"] == 1, what="back to 1")
    scaled = [e["message"] for e in _events(rig, deploy_id) if e["kind"] == "scaled"]
    assert scaled[-1].startswith("scaled 3 → 1: 0.0 in flight"), scaled
    eventually(lambda: len(rig.runtime.list_cells()) == 1, what="the drained ones stopped")


def test_an_idle_model_is_paused_then_scaled_to_zero_and_woken(rig: Rig) -> None:
    rig.settings.zero_after_paused = 30
    record = _deploy(rig, "sleepy", min_replicas=0, idle_seconds=5)
    deploy_id = record["deploy_id"]
    cell = record["replicas"]["cells"][0]["id"]
    rig.clock.advance(6)
    paused = _tier(rig, deploy_id, "paused")
    assert paused["status"] == "ready" and paused["replicas"]["cells"][0]["state"] == "paused"
    eventually(lambda: rig.runtime.inspect(cell).paused, what="the cell frozen")  # type: ignore[union-attr]

    woken = _who(rig, "sleepy")  # answered by the same replica, thawed
    assert woken.status_code == 200, woken.text
    assert not rig.runtime.inspect(cell).paused  # type: ignore[union-attr]
    again = _tier(rig, deploy_id, "serving")
    assert again["replicas"]["cells"][0]["id"] == cell
    assert any(e["kind"] == "woken" for e in _events(rig, deploy_id))

    rig.clock.advance(6)
    _tier(rig, deploy_id, "paused")
    rig.clock.advance(31)
    _tier(rig, deploy_id, "scaled to zero")
    eventually(lambda: rig.runtime.list_cells() == [], what="its cell removed")
    eventually(lambda: _record(rig, deploy_id)["replicas"]["cells"] == [], what="no replica")
    assert _record(rig, deploy_id)["status"] == "ready"
    cold = _who(rig, "sleepy")  # held while a replica starts, then answered by it
    assert cold.status_code == 200, cold.text
    awake = _record(rig, deploy_id)
    assert awake["replicas"]["ready"] == 1 and awake["replicas"]["tier"] == "serving"
    kinds = [e["kind"] for e in _events(rig, deploy_id)]
    assert kinds.count("scaled") >= 2  # to zero, then woken
    assert any("scaled to zero" in e["message"] for e in _events(rig, deploy_id))


def test_an_asynchronous_prediction_wakes_a_model_at_zero(rig: Rig) -> None:
    rig.settings.zero_after_paused = 1
    record = _deploy(rig, "queued", min_replicas=0, idle_seconds=1)
    rig.clock.advance(5)
    _tier(rig, record["deploy_id"], "scaled to zero")
    eventually(lambda: rig.runtime.list_cells() == [], what="its cell removed")
    sent = rig.api.post("/api/v1/models/queued/predictions", json={"inputs": 1})
    assert sent.status_code == 202, sent.text
    request_id = sent.json()["request_id"]

    def done() -> bool:
        found = rig.api.get(f"/api/v1/predictions/{request_id}").json()
        return bool(found["status"] == "succeeded")

    eventually(done, what="the prediction answered by a woken replica")


@pytest.mark.parametrize("runtime_kind", ["fake"], indirect=True)
def test_past_the_hold_queue_a_waking_model_answers_429(rig: Rig) -> None:
    rig.settings.zero_after_paused = 1
    record = _deploy(rig, "crowded", min_replicas=0, idle_seconds=1)
    rig.clock.advance(5)
    _tier(rig, record["deploy_id"], "scaled to zero")
    rig.settings.wake_queue = 0
    resp = _who(rig, "crowded")
    assert resp.status_code == 429 and resp.headers["retry-after"] == "1"
    assert resp.json()["error"]["code"] == "model_waking"


def test_a_new_version_has_its_replicas_ready_before_the_switch(rig: Rig) -> None:
    v1 = _deploy(rig, "swap2", min_replicas=2)
    metadata, files = package("whoami", "swap2", scaling={"min_replicas": 2})
    v2 = rig.api.post("/api/v1/deployments", files=multipart(metadata, files)).json()
    record = wait_for_status(rig.api, v2["deploy_id"], "ready")
    assert record["replicas"]["ready"] == 2 and record["active"] is True
    kinds = [e["kind"] for e in _events(rig, v2["deploy_id"])]
    assert kinds.index("ready") < kinds.index("activated")
    old = wait_for_status(rig.api, v1["deploy_id"], "stopped")
    assert old["replicas"]["cells"] == [] and old["cell"] is None
    eventually(lambda: len(rig.runtime.list_cells()) == 2, what="only the new replicas left")
