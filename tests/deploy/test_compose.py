"""docker-compose.yml's server, run by docker-compose itself as the README says (the Docker
socket mounted, the data folder at the same path inside and out): it deploys and serves a
model from inside its container, reaching its cells on their networks; the cells still
reach neither each other nor the host, and a recreated server container adopts them.

PostgreSQL is left out (``up --no-deps server``, the embedded SQLite instead): no image
registry can be reached from the test machines, and the database is not what this tests.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import httpx
import pytest

from tests.helpers import (
    ADMIN_TOKEN,
    bearer,
    free_port,
    multipart,
    reap_instance,
    wait_for_status,
)
from tests.lifecycle.packages import package
from tests.security import probes

pytestmark = [pytest.mark.docker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SERVER_UID = 10000  # the server image's user (Dockerfile)


def _compose(project: str, files: list[Path], env: dict[str, str], *args: str) -> str:
    """Run docker-compose for ``project``; its output (raises with it on failure)."""
    command = ["docker-compose", "--no-ansi", "-p", project]
    for path in files:
        command += ["-f", str(path)]
    done = subprocess.run(
        [*command, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    if done.returncode != 0:
        raise AssertionError(f"docker-compose {' '.join(args)}:\n{done.stdout}{done.stderr}")
    return done.stdout + done.stderr


@dataclass
class Composed:
    url: str
    recreate: Callable[[], None]
    """Replace the server's container by a new one (as an upgrade does)."""


@pytest.fixture
def compose_server(tmp_path: Path, docker_client: docker.DockerClient) -> Iterator[Composed]:
    """The server of docker-compose.yml, up, and how to recreate its container."""
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose is not installed (apt-get install docker-compose)")
    if os.geteuid() != 0:
        pytest.skip("the data folder must be handed to the server's uid 10000: needs root")
    image = subprocess.run(
        ["scripts/build-server-image.sh"],
        env={**os.environ, "PYTHON": sys.executable},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert image.returncode == 0, image.stderr
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    os.chown(data, SERVER_UID, SERVER_UID)
    port = free_port()
    override = tmp_path / "compose.test.yml"  # JSON is YAML
    override.write_text(
        json.dumps(
            {
                "services": {
                    "server": {
                        "environment": {
                            "DEPLOYSERVER_DATABASE_URL": "",
                            "DEPLOYSERVER_ADMIN_TOKEN": ADMIN_TOKEN,
                            "DEPLOYSERVER_HEALTH_DEADLINE": "60",
                        },
                        "labels": {"deployserver.test": "1"},
                    }
                }
            }
        )
    )
    project = f"dstest{secrets.token_hex(4)}"
    files = [ROOT / "docker-compose.yml", override]
    env = {
        **os.environ,
        "DEPLOYSERVER_DATA_DIR": str(data),
        "DEPLOYSERVER_PUBLISH": f"127.0.0.1:{port}",
        "DEPLOYSERVER_SERVER_IMAGE": image.stdout.strip(),
        "DOCKER_GID": str(os.stat("/var/run/docker.sock").st_gid),
    }
    url = f"http://127.0.0.1:{port}"

    def up(*flags: str) -> None:
        _compose(project, files, env, "up", "-d", "--no-deps", "--no-build", *flags, "server")
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                logs = _compose(project, files, env, "logs", "--no-color", "server")
                raise AssertionError(f"the server did not come up:\n{logs}")
            time.sleep(0.2)

    try:
        up()
        yield Composed(url, lambda: up("--force-recreate"))
    finally:
        try:
            (tmp_path / "server.log").write_text(
                _compose(project, files, env, "logs", "--no-color", "server")
            )
        finally:
            _compose(project, files, env, "down", "-v", "--remove-orphans", "--timeout", "5")
            reap_instance(data)  # cells outlive their server by design


def test_compose_deploys_and_serves_with_isolated_cells(
    compose_server: Composed, docker_client: docker.DockerClient
) -> None:
    url = compose_server.url
    with httpx.Client(base_url=url, timeout=60, headers=bearer(ADMIN_TOKEN)) as api:
        metadata, files = package("good", "composed", parameters={"tag": "compose"})
        up = api.post("/api/v1/deployments", files=multipart(metadata, files))
        assert up.status_code == 202, up.text
        record = wait_for_status(api, up.json()["deploy_id"], {"ready", "failed"})
        assert record["status"] == "ready", record["status_reason"]
        served = api.post("/serve/composed/predict", json={"inputs": [1, 2]})
        assert served.status_code == 200, served.text
        assert served.json()["predictions"] == {"echo": [1, 2], "tag": "compose"}

        # the server's container joined the cell's network; the host has no address there
        cell = docker_client.containers.get(record["cell"]["id"])
        network = docker_client.networks.get(cell.name)
        members = {c.name for c in network.containers}
        assert cell.name in members and any(m.endswith("_server_1") for m in members)
        assert network.attrs["Options"]["com.docker.network.bridge.inhibit_ipv4"] == "true"

        first = probes.deploy_prober(api, "first")
        second = probes.deploy_prober(api, "second")
        with probes.host_listener() as port:
            assert probes.probe(api, "first", *probes.cell_address(first)) == "connected"
            assert probes.probe(api, "first", *probes.cell_address(second)).startswith("refused")
            assert probes.probe(api, "second", *probes.cell_address(first)).startswith("refused")
            for address in probes.host_addresses():
                assert probes.probe(api, "first", address, port).startswith("refused"), address

        # a new server container (an upgrade) adopts the running cell and joins its network
        compose_server.recreate()
        after = api.get(f"/api/v1/deployments/{record['deploy_id']}").json()
        assert after["status"] == "ready" and after["cell"]["id"] == record["cell"]["id"]
        served = api.post("/serve/composed/predict", json={"inputs": [3]})
        assert served.status_code == 200, served.text
        assert served.json()["predictions"] == {"echo": [3], "tag": "compose"}
        members = {c.name for c in docker_client.networks.get(cell.name).containers}
        assert len(members) == 2  # the cell and the new server container only
