"""Large bodies through /serve, both ways, with the server's memory staying flat."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import bearer, multipart, peak_rss_bytes, server_process, wait_for_status
from tests.lifecycle.packages import package

UP = 128 * 1024 * 1024
DOWN = 64 * 1024 * 1024


@pytest.mark.slow
def test_large_bodies_through_serve_keep_server_memory_flat(
    tmp_path: Path, database_url: str
) -> None:
    env = {"DEPLOYSERVER_DATABASE_URL": database_url, "DEPLOYSERVER_RUNTIME": "process"}
    with server_process(tmp_path / "data", env) as (url, proc, token):
        api = httpx.Client(base_url=url, headers=bearer(token), timeout=300)
        metadata, files = package("sizer", "sizer")
        up = api.post("/api/v1/deployments", files=multipart(metadata, files)).json()
        wait_for_status(api, up["deploy_id"], "ready")
        assert api.post(
            "/serve/sizer/predict",
            content=b"warm",
            headers={"content-type": "application/octet-stream"},
        ).is_success
        before = peak_rss_bytes(proc.pid)

        def chunks() -> Iterator[bytes]:
            block = b"\x5a" * (1024 * 1024)
            for _ in range(UP // len(block)):
                yield block

        sent = api.post(
            "/serve/sizer/predict",
            content=chunks(),
            headers={"content-type": "application/octet-stream"},
        )
        assert sent.status_code == 200, sent.text[:300]
        assert sent.json()["predictions"] == {"size": UP}

        received = 0
        with api.stream("POST", "/serve/sizer/predict", json={"answer_bytes": DOWN}) as resp:
            assert resp.status_code == 200
            for chunk in resp.iter_raw():
                received += len(chunk)
        assert received > DOWN
        growth = peak_rss_bytes(proc.pid) - before
        api.post(f"/api/v1/deployments/{up['deploy_id']}/stop")
        wait_for_status(api, up["deploy_id"], "stopped")
        api.close()
    print(
        f"server peak RSS growth {growth / 2**20:.1f} MiB for {UP >> 20} MiB up, "
        f"{DOWN >> 20} MiB down"
    )
    assert growth < 32 * 1024 * 1024, f"server memory grew {growth / 2**20:.1f} MiB"
