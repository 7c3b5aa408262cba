"""A cell that drips its /health/ready answer a byte at a time, so that no single read
ever times out: it must not freeze the reconciler (the health watch runs beside the passes,
one round at a time, with a bounded number of pings in flight), and every ping, the new-cell
gate's included, is cut at its total deadline.

The dripping cells are the fake runtime's, answering over real loopback HTTP; the server is
real too (uvicorn on loopback), with its reconciler running as in production."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from deployserver.config import Settings
from tests.fakes import FakeRuntime
from tests.helpers import eventually, multipart, package_files, wait_for_status


@pytest.fixture
def ping_timeout() -> float:
    """Long by default, so a drip outlasts what the test watches; tests may parametrize it."""
    return 20.0


@pytest.fixture
def settings(settings: Settings, ping_timeout: float) -> Settings:
    return settings.model_copy(
        update={"watch_interval": 0.2, "health_ping_timeout": ping_timeout, "watch_concurrency": 2}
    )


def _upload(api: httpx.Client, model: str, **parameters: Any) -> str:
    meta = {"model": model, "parameters": parameters}
    resp = api.post("/api/v1/deployments", files=multipart(meta, package_files()))
    assert resp.status_code == 202, resp.text
    return str(resp.json()["deploy_id"])


def _ready(api: httpx.Client, model: str) -> tuple[str, float]:
    """Upload ``model`` and wait until it is ready: (deploy_id, seconds it took)."""
    started = time.monotonic()
    deploy_id = _upload(api, model)
    record = wait_for_status(api, deploy_id, {"ready", "failed"}, timeout=20)
    assert record["status"] == "ready", record["status_reason"]
    return deploy_id, time.monotonic() - started


def test_a_dripping_cell_does_not_hold_up_other_deployments(
    api: httpx.Client, app: FastAPI, fake_runtime: FakeRuntime
) -> None:
    reconciler = app.state.ds.reconciler
    dripper, _ = _ready(api, "dripper")
    victim, _ = _ready(api, "victim")
    _, normal = _ready(api, "baseline")
    fake_runtime.drip(dripper, every=0.5)  # 60 bytes: 30 s for the whole answer
    eventually(lambda: fake_runtime.drips.open == 1, timeout=10, what="a dripping ping")
    passes = reconciler.passes

    _, during = _ready(api, "during")
    assert api.post(f"/api/v1/deployments/{victim}/stop").status_code == 202
    wait_for_status(api, victim, "stopped", timeout=20)

    # ... all while that one ping is still dripping, and no second round started beside it
    drips = fake_runtime.drips
    assert (drips.started, drips.open, drips.sent) == (1, 1, [])
    assert reconciler.watching
    assert reconciler.passes > passes
    print(
        f"\nupload to ready: {normal:.2f} s alone, {during:.2f} s beside a dripping cell "
        f"(+{during - normal:.2f} s)"
    )


@pytest.mark.parametrize("ping_timeout", [1.0])
def test_a_dripping_health_answer_is_cut_at_the_ping_deadline(
    api: httpx.Client, fake_runtime: FakeRuntime
) -> None:
    dripper, _ = _ready(api, "dripper")
    # a byte every 0.2 s: no read ever waits the 1 s, only a total deadline ends the ping
    fake_runtime.drip(dripper, every=0.2)
    eventually(lambda: len(fake_runtime.drips.sent) >= 2, timeout=20, what="two pings cut")
    whole = fake_runtime.drip_bytes
    assert all(sent < whole for sent in fake_runtime.drips.sent), fake_runtime.drips
    print(f"\nbytes a dripping cell got to send per ping: {fake_runtime.drips.sent}")


def test_watch_pings_are_concurrent_but_bounded(
    api: httpx.Client, app: FastAPI, fake_runtime: FakeRuntime
) -> None:
    reconciler = app.state.ds.reconciler
    cells = [_ready(api, f"drip{i}")[0] for i in range(4)]
    for deploy_id in cells:
        fake_runtime.drip(deploy_id, every=0.5)
    eventually(lambda: fake_runtime.drips.open == 2, timeout=10, what="two dripping pings")
    passes = reconciler.passes
    eventually(lambda: reconciler.passes >= passes + 5, timeout=20, what="five more passes")
    assert (fake_runtime.drips.started, fake_runtime.drips.open) == (2, 2)  # two wait a slot

    fake_runtime.drip_every = 0.001  # the answers now finish: the waiting pings go next
    eventually(lambda: len(fake_runtime.drips.sent) >= 4, timeout=20, what="four answers")
    assert fake_runtime.drips.max_open == 2


@pytest.mark.parametrize("ping_timeout", [1.0])
def test_the_new_cell_gate_cuts_a_dripping_ping(
    api: httpx.Client, settings: Settings, fake_runtime: FakeRuntime
) -> None:
    # whole, the dripped answer says READY after 12 s; the gate's deadline comes first
    fake_runtime.drip_every = 0.2
    deploy_id = _upload(api, "dripnew", fake="drip")
    record = wait_for_status(api, deploy_id, {"ready", "failed"}, timeout=20)
    assert record["status"] == "failed"
    assert record["status_reason"] == (
        f"no ready answer from the cell in {settings.health_deadline:g} s"
    )
    assert fake_runtime.drips.started >= 2  # each ping cut, the gate pinged again
    assert all(sent < fake_runtime.drip_bytes for sent in fake_runtime.drips.sent)
