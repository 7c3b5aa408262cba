"""deploy/stack.yml, deployed for real with ``docker stack deploy`` on a one-node swarm:
the server runs as a Swarm service on the cells' overlay, deploys a model as a service of
its own, and serves it. PostgreSQL is left out (no image registry can be reached from the
test machines): an override file scales it to 0 and gives the server its SQLite."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest

from tests.helpers import ADMIN_TOKEN, bearer, multipart, wait_for_status
from tests.lifecycle.packages import package
from tests.swarmkit import SwarmSession, free_port, remove_network

pytestmark = [pytest.mark.docker, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]

OVERRIDE = """\
version: "3.8"
services:
  postgres:
    deploy:
      replicas: 0
  server:
    environment:
      DEPLOYSERVER_DATABASE_URL: "sqlite:////var/lib/deployserver/deployserver.db"
      DEPLOYSERVER_ADMIN_TOKEN: "{token}"
      DEPLOYSERVER_HEALTH_DEADLINE: "120"
"""


def _stack(*args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        ["docker", "stack", *args],
        env={**os.environ, **(env or {})},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise AssertionError(f"docker stack {' '.join(args)}:\n{done.stdout}{done.stderr}")
    return done.stdout


def _cache_volumes(client: docker.DockerClient) -> set[str]:
    rows = client.api.volumes(filters={"label": "deployserver.managed=1"}).get("Volumes") or []
    return {str(row["Name"]) for row in rows}


@pytest.fixture
def stack(
    swarm: SwarmSession,
    swarm_registry: str,
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> Iterator[str]:
    """The stack up, from a server image of this checkout; yields the server's URL."""
    swarm.ensure()
    tag = f"deployserver/server:stack-test-{secrets.token_hex(4)}"
    build = subprocess.run(
        ["scripts/build-server-image.sh", "--offline"],
        env={**os.environ, "PYTHON": sys.executable, "DEPLOYSERVER_SERVER_IMAGE": tag},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if build.returncode != 0:
        pytest.fail(f"the server image did not build:\n{build.stderr[-3000:]}")
    cache_volumes = _cache_volumes(docker_client)  # the stack's cells add theirs
    name = f"dstest{secrets.token_hex(3)}"
    network = f"{name}-cells"
    port = free_port()
    override = tmp_path / "override.yml"
    override.write_text(OVERRIDE.format(token=ADMIN_TOKEN))
    env = {
        "DEPLOYSERVER_SERVER_IMAGE": tag,
        "DEPLOYSERVER_REGISTRY": swarm_registry,
        "DEPLOYSERVER_SWARM_NETWORK": network,
        "DEPLOYSERVER_PORT": str(port),
        "DOCKER_GID": str(os.stat("/var/run/docker.sock").st_gid),
    }
    try:
        _stack("deploy", "-c", "deploy/stack.yml", "-c", str(override), name, env=env)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                logs = subprocess.run(
                    ["docker", "service", "logs", f"{name}_server"], capture_output=True, text=True
                )
                pytest.fail(f"the stack's server did not answer:\n{logs.stdout}{logs.stderr}")
            time.sleep(1)
        yield url
    finally:
        with contextlib.suppress(AssertionError):
            _stack("rm", name)
        for row in docker_client.api.services(filters={"label": "deployserver.managed=1"}):
            networks = row["Spec"]["TaskTemplate"].get("Networks") or []
            ids = {n["Target"] for n in networks}
            found = [r for r in docker_client.api.networks(names=[network]) if r["Name"] == network]
            if found and found[0]["Id"] in ids:  # cells of the stack's server
                docker_client.api.remove_service(row["ID"])
        remove_network(docker_client, network)
        deadline = time.monotonic() + 60
        volumes = [f"{name}_deployserver-data", f"{name}_postgres-data"]
        volumes += sorted(_cache_volumes(docker_client) - cache_volumes)
        while volumes and time.monotonic() < deadline:
            for volume in list(volumes):
                try:
                    docker_client.api.remove_volume(volume)
                    volumes.remove(volume)
                except docker.errors.NotFound:
                    volumes.remove(volume)
                except docker.errors.APIError:
                    time.sleep(0.5)
        with contextlib.suppress(docker.errors.APIError):
            docker_client.images.remove(tag, noprune=False)


def test_the_stack_s_server_deploys_and_serves_on_the_swarm(stack: str) -> None:
    with httpx.Client(base_url=stack, timeout=60, headers=bearer(ADMIN_TOKEN)) as api:
        metadata, files = package("good", "stacked", parameters={"tag": "v1"})
        up = api.post("/api/v1/deployments", files=multipart(metadata, files))
        assert up.status_code == 202, up.text
        record = wait_for_status(api, up.json()["deploy_id"], {"ready", "failed"}, timeout=300)
        assert record["status"] == "ready", record["status_reason"]
        assert record["cell"]["runtime"] == "swarm" and record["cell"]["node"]
        resp = api.post("/serve/stacked/predict", json={"inputs": [1, 2]})
        assert resp.status_code == 200, resp.text
        assert resp.json()["predictions"] == {"echo": [1, 2], "tag": "v1"}
        assert api.delete(f"/api/v1/deployments/{record['deploy_id']}").status_code == 204
