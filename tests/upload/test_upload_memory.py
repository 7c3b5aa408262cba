"""A large upload goes through a real server process with its memory staying flat."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from tests.helpers import bearer, package_files, peak_rss_bytes, server_process, streamed_upload

SIZE = 256 * 1024 * 1024


@pytest.mark.slow
def test_large_upload_keeps_server_memory_flat(tmp_path: Path, database_url: str) -> None:
    data_dir = tmp_path / "data"
    env = {"DEPLOYSERVER_DATABASE_URL": database_url, "DEPLOYSERVER_RUNTIME": "process"}
    with (
        server_process(data_dir, env) as (url, proc, token),
        httpx.Client(base_url=url, timeout=300, headers=bearer(token)) as client,
    ):
        # warm up every code path first, then measure the big upload
        warm = client.post(
            "/api/v1/deployments",
            params={"start": "false"},  # no cells: only the server's memory is measured
            files=[
                ("metadata", (None, b'{"model": "warm"}')),
                *[("files", (n, d)) for n, d in package_files().items()],
            ],
        )
        assert warm.status_code == 202, warm.text
        before = peak_rss_bytes(proc.pid)
        ctype, body = streamed_upload({"model": "big"}, package_files(), "weights/big.bin", SIZE)
        resp = client.post(
            "/api/v1/deployments?start=false", content=body, headers={"content-type": ctype}
        )
        after = peak_rss_bytes(proc.pid)
    assert resp.status_code == 202, resp.text
    big = next(f for f in resp.json()["files"] if f["path"] == "weights/big.bin")
    block = bytes(range(256)) * 4096
    assert big["size"] == SIZE
    assert big["sha256"] == hashlib.sha256(block * (SIZE // len(block))).hexdigest()
    stored = data_dir / "deployments" / resp.json()["deploy_id"] / "weights/big.bin"
    assert stored.stat().st_size == SIZE
    growth = after - before
    print(f"peak RSS growth: {growth / 2**20:.1f} MiB for a {SIZE // 2**20} MiB upload")
    assert growth < SIZE / 16, f"server peak memory grew by {growth / 2**20:.1f} MiB"
