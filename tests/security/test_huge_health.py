"""A cell whose /health/ready answer has no end in size (READY, then 128 MiB of blanks, as
fast as loopback carries them): the server reads at most ``MAX_HEALTH_BODY`` (1 MiB) of
any health answer and drops the connection, so no cell fills the control plane's memory
through its health pings. The cell is the fake runtime's, over real loopback HTTP."""

from __future__ import annotations

import httpx

from deployserver.control.health_gate import MAX_HEALTH_BODY
from tests.fakes import FakeRuntime
from tests.helpers import eventually, multipart, package_files, wait_for_status


def test_a_flooding_health_answer_is_not_read_whole(
    api: httpx.Client, fake_runtime: FakeRuntime
) -> None:
    meta = {"model": "flood", "parameters": {"fake": "flood"}}
    up = api.post("/api/v1/deployments", files=multipart(meta, package_files()))
    assert up.status_code == 202, up.text
    record = wait_for_status(api, up.json()["deploy_id"], {"ready", "failed"}, timeout=30)
    assert record["status"] == "ready", record["status_reason"]  # its status said 200
    eventually(lambda: fake_runtime.flooded, timeout=10, what="the answer cut off")
    # what was sent before the server hung up: what it read, plus the sockets' buffers
    assert max(fake_runtime.flooded) < fake_runtime.flood_bytes / 2, fake_runtime.flooded
    print(
        f"\nbytes a flooding cell got out: {fake_runtime.flooded} (read at most {MAX_HEALTH_BODY})"
    )
