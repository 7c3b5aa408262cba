"""Log flooding: a cell that prints without end cannot fill the host's disk. Docker cells'
json-file logs rotate at DEPLOYSERVER_CELL_LOG_MAX_BYTES (DEPLOYSERVER_CELL_LOG_FILES
kept); a process cell's log file is rotated the same way on the reconciler's passes."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest

from deployserver.config import Settings
from deployserver.main import create_app
from deployserver.runtime.base import CellSpec
from deployserver.runtime.docker import DockerRuntime
from deployserver.runtime.hostpip import PipSandbox
from deployserver.runtime.process import ProcessRuntime
from deployserver.runtime.select import instance_id
from tests.helpers import ADMIN_TOKEN, bearer, eventually, multipart, serve, wait_for_status
from tests.lifecycle.conftest import reap

CAP = 64 * 1024
FLOOD_BYTES = 4 * 1024 * 1024

CHATTY = f"""
import sys


class Model:
    def __init__(self, model_dir, **parameters):
        pass

    def load(self):
        line = "x" * 1023 + "\\n"
        for _ in range({FLOOD_BYTES // 1024}):
            sys.stdout.write(line)
        print("LAST LINE OF THE FLOOD", flush=True)

    def predict(self, inputs, **kwargs):
        return inputs
""".encode()


@pytest.fixture
def capped(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"health_deadline": 60.0, "cell_log_max_bytes": CAP, "cell_log_files": 2}
    )


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="reading Docker's log files needs root")
def test_a_docker_cell_flooding_its_log_keeps_only_the_cap(
    capped: Settings, docker_client: docker.DockerClient
) -> None:
    capped.data_dir.mkdir(parents=True, exist_ok=True)
    runtime = DockerRuntime(capped, instance_id(capped.data_dir))
    try:
        with (
            serve(create_app(capped, runtime=runtime)) as url,
            httpx.Client(base_url=url, timeout=60, headers=bearer(ADMIN_TOKEN)) as api,
        ):
            files = multipart({"model": "chatty"}, {"score.py": CHATTY})
            up = api.post("/api/v1/deployments", files=files).json()
            record = wait_for_status(api, up["deploy_id"], {"ready", "failed"})
            assert record["status"] == "ready", record["status_reason"]
            container = docker_client.containers.get(record["cell"]["id"])
            config = container.attrs["HostConfig"]["LogConfig"]["Config"]
            assert config == {"max-size": str(CAP), "max-file": "2"}

            def flood_done() -> bool:
                return b"LAST LINE OF THE FLOOD" in container.logs(tail=5)

            eventually(flood_done, what="the flood written")
            log_files = glob.glob(container.attrs["LogPath"] + "*")
            on_disk = sum(os.path.getsize(f) for f in log_files)
            # json-file wraps each line (about 1.1 KiB each here); the flood was 4 MiB
            assert len(log_files) <= 2
            assert on_disk <= 2 * (CAP + 4 * 1024), on_disk
            logs = api.get(f"/api/v1/deployments/{up['deploy_id']}/logs", params={"tail": 3})
            assert "LAST LINE OF THE FLOOD" in logs.text
    finally:
        reap(runtime)


@pytest.fixture
def process_runtime(capped: Settings) -> Iterator[ProcessRuntime]:
    runtime = ProcessRuntime(
        capped.data_dir,
        "test-logs",
        sandbox=PipSandbox.from_settings(capped),
        log_max_bytes=CAP,
        log_files=2,
    )
    try:
        yield runtime
    finally:
        for info in runtime.list_cells():
            runtime.stop(info.id, timeout=5)


@pytest.mark.slow
def test_a_process_cell_flooding_its_log_is_rotated(
    process_runtime: ProcessRuntime, tmp_path: Path
) -> None:
    model_dir = tmp_path / "chatty"
    model_dir.mkdir()
    (model_dir / "score.py").write_bytes(CHATTY)
    spec = CellSpec("c" * 24, "chatty", 1, model_dir, "score.py:Model", {})
    info = process_runtime.start(spec)
    log = process_runtime.root / f"{info.id}.log"

    def ready() -> bool:
        try:
            return httpx.get(f"{info.url}/health/ready", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    eventually(ready, what="the cell ready")
    assert log.stat().st_size > FLOOD_BYTES  # flooded, and not yet rotated

    (listed,) = process_runtime.list_cells()  # a reconciler pass rotates it
    assert listed.running
    rotated = log.with_name(log.name + ".1")
    assert log.stat().st_size <= CAP and rotated.stat().st_size == CAP
    assert not log.with_name(log.name + ".2").exists()  # 2 files kept, the current included
    assert "LAST LINE OF THE FLOOD" in process_runtime.logs(info.id, tail=3)

    # the cell goes on writing to the same, truncated file (uvicorn's access log)
    assert httpx.post(f"{info.url}/predict", json={"inputs": [1]}, timeout=10).status_code == 200
    eventually(lambda: "/predict" in log.read_text(), what="the next line logged")
    assert log.stat().st_size <= CAP
    process_runtime.stop(info.id, timeout=5)
    assert not log.exists() and not rotated.exists()
