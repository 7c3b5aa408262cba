"""kill -9 the server mid-deploy: the restarted server adopts the cell it left loading
(the same one, not restarted), removes orphans it owns, and leaves nothing stuck."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import httpx
import pytest

from deployserver.runtime.select import instance_id
from tests.helpers import bearer, eventually, multipart, server_process, wait_for_status
from tests.lifecycle.packages import package


def _cells(kind: str, data_dir: Path) -> dict[str, str]:
    """cell id -> deploy_id of this server's cells, seen from outside the server."""
    if kind == "process":
        out = {}
        for path in (data_dir / "cells").glob("*.json"):
            if not path.name.endswith(".metadata.json"):
                state = json.loads(path.read_text())
                if Path(f"/proc/{state['pid']}").exists():
                    out[path.stem] = state["deploy_id"]
        return out
    import docker

    client = docker.from_env()
    found = client.containers.list(
        filters={"label": f"deployserver.instance={instance_id(data_dir)}"}
    )
    return {c.id: c.labels["deployserver.deploy_id"] for c in found}


def _orphan(kind: str, data_dir: Path) -> str:
    """A running cell of this server's instance for a deployment it never had."""
    if kind == "process":
        import subprocess
        import sys

        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import time; time.sleep(600)",
                "serving_cell",
                "0000000000ffffffffffffff",
            ],
            start_new_session=True,
        )
        cell_id = "0000000000ffffffffffffff-1"
        (data_dir / "cells" / f"{cell_id}.json").write_text(
            json.dumps(
                {
                    "pid": proc.pid,
                    "port": 1,
                    "deploy_id": "0000000000ffffffffffffff",
                    "instance": instance_id(data_dir),
                }
            )
        )
        return cell_id
    import docker

    from deployserver.runtime.images import cell_image_tag

    container = docker.from_env().containers.run(
        cell_image_tag(),
        detach=True,
        entrypoint=["sleep", "600"],
        labels={
            "deployserver.managed": "1",
            "deployserver.instance": instance_id(data_dir),
            "deployserver.deploy_id": "0000000000ffffffffffffff",
        },
    )
    return str(container.id)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["process", pytest.param("docker", marks=pytest.mark.docker)])
def test_server_killed_mid_deploy_converges(
    kind: str, tmp_path: Path, database_url: str, request: pytest.FixtureRequest
) -> None:
    if kind == "docker":
        request.getfixturevalue("docker_client")
    data_dir = tmp_path / "data"
    env = {"DEPLOYSERVER_DATABASE_URL": database_url, "DEPLOYSERVER_RUNTIME": kind}
    metadata, files = package("slowish", "phoenix", parameters={"delay": 4})
    with server_process(data_dir, env, reap=False) as (url, proc, token):  # cells live on
        api = httpx.Client(base_url=url, timeout=60, headers=bearer(token))
        ready_one = api.post(
            "/api/v1/deployments", files=multipart(*package("good", "steady"))
        ).json()
        wait_for_status(api, ready_one["deploy_id"], "ready")
        up = api.post("/api/v1/deployments", files=multipart(metadata, files)).json()
        record = wait_for_status(api, up["deploy_id"], "starting")
        while record["cell"] is None:
            record = api.get(f"/api/v1/deployments/{up['deploy_id']}").json()
        loading_cell = record["cell"]["id"]
        os.kill(proc.pid, signal.SIGKILL)  # mid-deploy: the cell is still loading
        proc.wait()
        api.close()
    before = _cells(kind, data_dir)
    assert loading_cell in before  # cells outlive the server
    orphan = _orphan(kind, data_dir)

    with (
        server_process(data_dir, env) as (url, _proc, token),
        httpx.Client(base_url=url, headers=bearer(token)) as api,
    ):
        adopted = wait_for_status(api, up["deploy_id"], "ready")
        assert adopted["cell"]["id"] == loading_cell, "the loading cell is adopted, not replaced"
        steady = api.get(f"/api/v1/deployments/{ready_one['deploy_id']}").json()
        assert steady["status"] == "ready"
        assert steady["cell"]["id"] == ready_one_cell(before, ready_one["deploy_id"])
        eventually(lambda: orphan not in _cells(kind, data_dir), what="orphan removed")
        after = _cells(kind, data_dir)
        assert orphan not in after
        assert sorted(after.values()) == sorted([up["deploy_id"], ready_one["deploy_id"]])
        statuses = {d["status"] for d in api.get("/api/v1/deployments").json()["items"]}
        assert statuses == {"ready"}
        for cell_id in after:  # leave nothing running
            api.post(f"/api/v1/deployments/{after[cell_id]}/stop")
        for deploy_id in after.values():
            wait_for_status(api, deploy_id, "stopped")


def ready_one_cell(cells: dict[str, str], deploy_id: str) -> str:
    return next(cell for cell, owner in cells.items() if owner == deploy_id)
