"""Cell network isolation: a cell's scoring code tries to connect to another cell, to a
listener on the host and to the cloud metadata address; only a deployment that asked for
egress, on a server that allows it, gets out. Real containers, probed through /serve."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import docker
import httpx
import pytest

from deployserver.config import Settings
from deployserver.main import create_app
from deployserver.runtime.docker import DockerRuntime
from deployserver.runtime.select import instance_id
from tests.helpers import ADMIN_TOKEN, bearer, eventually, serve, wait_for_status
from tests.lifecycle.conftest import reap
from tests.security import probes
from tests.security.probes import cell_address, host_addresses

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@dataclass
class Server:
    api: httpx.Client
    runtime: DockerRuntime

    def deploy(self, model: str, **metadata: Any) -> dict[str, Any]:
        return probes.deploy_prober(self.api, model, **metadata)

    def probe(self, model: str, host: str, port: int) -> str:
        return probes.probe(self.api, model, host, port)


@pytest.fixture
def server(settings: Settings, docker_client: docker.DockerClient) -> Iterator[Server]:
    """A server on the Docker runtime, on the host as in development, allowing egress."""
    settings = settings.model_copy(update={"health_deadline": 60.0, "allow_egress": True})
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    runtime = DockerRuntime(settings, instance_id(settings.data_dir))
    try:
        with (
            serve(create_app(settings, runtime=runtime)) as url,
            httpx.Client(base_url=url, timeout=60, headers=bearer(ADMIN_TOKEN)) as api,
        ):
            yield Server(api, runtime)
    finally:
        reap(runtime)


@pytest.fixture
def host_listener() -> Iterator[int]:
    with probes.host_listener() as port:
        yield port


def test_cells_reach_neither_each_other_nor_the_host_nor_beyond(
    server: Server, host_listener: int, docker_client: docker.DockerClient
) -> None:
    first = server.deploy("first")
    second = server.deploy("second")
    first_host, first_port = cell_address(first)
    second_host, second_port = cell_address(second)
    assert first_host != second_host
    # the probe works: a cell reaches itself, and the test process (the host) reaches both
    assert server.probe("first", first_host, first_port) == "connected"
    for host, port in (cell_address(first), cell_address(second)):
        assert httpx.get(f"http://{host}:{port}/health/ready", timeout=5).status_code == 200

    # another cell, either way round: both answer /serve, neither reaches the other
    assert server.probe("first", second_host, second_port).startswith("refused")
    assert server.probe("second", first_host, first_port).startswith("refused")

    # the host: its address on the cell's own bridge, its network card, Docker's bridge
    cell = docker_client.containers.get(first["cell"]["id"])
    (own,) = cell.attrs["NetworkSettings"]["Networks"].values()  # its own network alone
    own_gateway = own["Gateway"]
    for address in [own_gateway, *host_addresses()]:
        with socket.create_connection((address, host_listener), timeout=5):
            pass  # the listener does answer whoever may reach it
        assert server.probe("first", address, host_listener).startswith("refused"), address
    # the cloud metadata address (never leaves this machine: nothing is forwarded)
    assert server.probe("first", "169.254.169.254", 80).startswith("refused")
    # and no IPv6 beside it, which the host guard would not cover
    assert cell.exec_run("cat /proc/net/if_inet6").output.strip() == b""


def test_a_cell_with_egress_reaches_the_host_but_still_not_other_cells(
    server: Server, host_listener: int, docker_client: docker.DockerClient
) -> None:
    isolated = server.deploy("isolated")
    free = server.deploy("free", network={"egress": True})
    outside = host_addresses()[0]

    assert server.probe("free", outside, host_listener) == "connected"
    assert server.probe("isolated", outside, host_listener).startswith("refused")
    assert server.probe("free", *cell_address(isolated)).startswith("refused")
    assert server.probe("isolated", *cell_address(free)).startswith("refused")

    network = docker_client.networks.get(_network_of(docker_client, free))
    assert network.attrs["Internal"] is False
    assert network.attrs["Labels"]["deployserver.egress"] == "1"
    assert network.attrs["Options"]["com.docker.network.bridge.name"].startswith("dse")


def _network_of(docker_client: docker.DockerClient, record: dict[str, Any]) -> str:
    """The name of the network a deployment's cell is on (its only one)."""
    cell = docker_client.containers.get(record["cell"]["id"])
    (name,) = cell.attrs["NetworkSettings"]["Networks"]
    return str(name)


def test_networks_go_with_their_cells(server: Server, docker_client: docker.DockerClient) -> None:
    """Stopped, or removed behind the server's back: no network of the old cell stays
    (the spare one, made ahead for the next cell, aside)."""
    label = f"deployserver.instance={server.runtime.instance}"
    cells = server.runtime.networks

    def networks() -> set[str]:
        with cells.lock:
            found = docker_client.networks.list(filters={"label": label})
            return {n.id for n in found if n.name != cells.spare}

    def network_of(record: dict[str, Any]) -> str:
        return str(docker_client.networks.get(_network_of(docker_client, record)).id)

    kept, stopped, vanished = (server.deploy(name) for name in ("kept", "stopped", "vanished"))
    before = {network_of(r) for r in (kept, stopped, vanished)}
    assert networks() == before and len(before) == 3

    server.api.post(f"/api/v1/deployments/{stopped['deploy_id']}/stop")
    wait_for_status(server.api, stopped["deploy_id"], "stopped")
    docker_client.containers.get(vanished["cell"]["id"]).remove(force=True)

    def replaced() -> bool:
        record = server.api.get(f"/api/v1/deployments/{vanished['deploy_id']}").json()
        return record["status"] == "ready" and record["cell"]["id"] != vanished["cell"]["id"]

    eventually(replaced, what="the vanished cell replaced")
    again = server.api.get(f"/api/v1/deployments/{vanished['deploy_id']}").json()
    assert networks() == {network_of(kept), network_of(again)}
    assert network_of(again) not in before


def test_a_network_left_by_a_crash_is_removed_at_start(
    server: Server, docker_client: docker.DockerClient
) -> None:
    """A network of this server's instance with no cell (the server died between creating
    it and its cell, or between removing both) goes when the next server starts."""
    runtime = server.runtime
    leftover = docker_client.networks.create(
        f"ds-crashed-v1-00000000-{runtime.instance[:4]}",
        internal=True,
        labels={"deployserver.managed": "1", "deployserver.instance": runtime.instance},
    )
    other = docker_client.networks.create(
        "ds-test-not-ours", internal=True, labels={"deployserver.test": "1"}
    )
    try:
        DockerRuntime(runtime.settings, runtime.instance)  # the next start of this server
        with pytest.raises(docker.errors.NotFound):
            docker_client.networks.get(leftover.id)
        docker_client.networks.get(other.id)  # never touches what is not its own
    finally:
        other.remove()


def test_a_cell_takes_the_network_made_ahead_and_the_next_one_is_made(
    server: Server, docker_client: docker.DockerClient
) -> None:
    """A cell start does not wait for its network: the one made ahead is taken, isolated
    as any other, and the next is made; the server's stop removes the one left."""
    cells = server.runtime.networks
    first = server.deploy("ahead-first")
    eventually(lambda: cells.spare is not None, what="a network made ahead")
    spare = cells.spare
    assert spare is not None and spare != _network_of(docker_client, first)
    second = server.deploy("ahead-second")
    assert _network_of(docker_client, second) == spare
    network = docker_client.networks.get(spare)
    assert network.attrs["Internal"] is True
    assert network.attrs["Options"]["com.docker.network.bridge.name"].startswith("dsc")
    assert server.probe("ahead-second", *cell_address(first)).startswith("refused")
    assert server.probe("ahead-first", *cell_address(second)).startswith("refused")
    eventually(lambda: cells.spare not in (None, spare), what="the next network made ahead")
    following = cells.spare
    assert following is not None
    server.runtime.close()
    assert cells.spare is None
    with pytest.raises(docker.errors.NotFound):
        docker_client.networks.get(following)
    docker_client.networks.get(spare)  # the second cell's own stays with it
