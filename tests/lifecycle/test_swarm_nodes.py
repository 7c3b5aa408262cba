"""Two Swarm nodes on this machine (../shared/recipes/two-node-swarm.md): the replicas of
a deployment are placed on both, predictions reach both, and a drained node's replicas
move to the other while requests go on, with none lost that could not be resent."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from deployserver.config import Settings
from deployserver.runtime.base import CellInfo
from tests.helpers import eventually, multipart, wait_for_status
from tests.lifecycle.conftest import SWARM, Rig
from tests.lifecycle.packages import package
from tests.swarmkit import SwarmSession
from tests.swarmnodes import SecondNode, second_node

pytestmark = [pytest.mark.parametrize("runtime_kind", [SWARM], indirect=True)]
REPLICAS = 4


@pytest.fixture
def two_nodes(
    swarm: SwarmSession, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[SecondNode, str]]:
    folder = tmp_path_factory.mktemp("two-nodes")
    with second_node(swarm, folder / "registry", folder) as found:
        yield found


@pytest.fixture
def swarm_registry(two_nodes: tuple[SecondNode, str]) -> str:
    """The registry both nodes reach at one address (this module's, not the session's)."""
    return two_nodes[1]


@pytest.fixture
def lifecycle_settings(lifecycle_settings: Settings) -> Settings:
    """A first cell on the new node pulls the image first (over loopback, on a busy
    machine): more time than the suite's minute."""
    return lifecycle_settings.model_copy(update={"health_deadline": 300.0})


def _cells(rig: Rig, deploy_id: str) -> list[CellInfo]:
    return [c for c in rig.runtime.list_cells() if c.deploy_id == deploy_id and c.running]


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health/ready", timeout=2).status_code == 200
    except httpx.HTTPError:  # the overlay converges a few seconds after a task starts
        return False


def _settled(rig: Rig, deploy_id: str, nodes: set[str]) -> bool:
    cells = _cells(rig, deploy_id)
    return (
        len(cells) == REPLICAS
        and {c.node for c in cells} == nodes
        and all(c.url and _answers(c.url) for c in cells)
    )


class Traffic:
    """Predictions sent one after another to the replicas in turn, each on a connection
    of its own; one refused before it was sent goes to the next replica (resent), any
    other failure is kept."""

    def __init__(self, rig: Rig, deploy_id: str) -> None:
        self.rig, self.deploy_id = rig, deploy_id
        self.answered: Counter[str] = Counter()
        self.resent = 0
        self.failures: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            cells = _cells(self.rig, self.deploy_id)
            for cell in cells:
                n += 1
                try:
                    resp = httpx.post(f"{cell.url}/predict", json={"inputs": n}, timeout=30)
                except httpx.ConnectError:  # refused or unreachable: nothing was sent
                    self.resent += 1
                    continue
                except httpx.HTTPError as exc:
                    self.failures.append(f"{cell.node}: {exc!r}")
                    continue
                if resp.status_code == 200 and resp.json()["predictions"]["echo"] == n:
                    self.answered[str(cell.node)] += 1
                else:
                    self.failures.append(f"{cell.node}: {resp.status_code} {resp.text[:200]}")


@pytest.mark.slow
def test_replicas_spread_over_two_nodes_and_a_drain_moves_them(
    two_nodes: tuple[SecondNode, str], rig: Rig, tmp_path: Path
) -> None:
    worker, _registry = two_nodes
    client = rig.runtime.client  # type: ignore[attr-defined]
    manager = str(client.info()["Swarm"]["NodeID"])
    metadata, files = package("good", "spread", parameters={"tag": "v1"})
    up = rig.api.post("/api/v1/deployments", files=multipart(metadata, files)).json()
    record = wait_for_status(rig.api, up["deploy_id"], {"ready", "failed"}, timeout=300)
    assert record["status"] == "ready", record["status_reason"]

    scaling = {"min_replicas": REPLICAS, "max_replicas": REPLICAS}
    resp = rig.api.put(f"/api/v1/deployments/{up['deploy_id']}/scaling", json=scaling)
    assert resp.status_code == 200, resp.text
    eventually(
        lambda: _settled(rig, up["deploy_id"], {manager, worker.node_id}),
        timeout=300,
        what=f"{REPLICAS} replicas answering on both nodes",
    )
    for cell in _cells(rig, up["deploy_id"]):  # each replica answers, on either node
        resp = httpx.post(f"{cell.url}/predict", json={"inputs": [1]}, timeout=30)
        assert resp.status_code == 200 and resp.json()["predictions"]["tag"] == "v1"
    served = rig.api.post("/serve/spread/predict", json={"inputs": [2]})
    assert served.status_code == 200, served.text

    # Drain the node that does not run the replica the record names (its `cell`), so
    # that the record's first replica stays put while the others move.
    recorded = rig.runtime.inspect(record["cell"]["id"])
    assert recorded is not None and recorded.node in (manager, worker.node_id)
    assert record["cell"]["node"] == recorded.node
    drained = worker.node_id if recorded.node == manager else manager
    kept = manager if drained == worker.node_id else worker.node_id
    traffic = Traffic(rig, up["deploy_id"])
    sender = threading.Thread(target=traffic.run)
    sender.start()
    try:
        eventually(lambda: traffic.answered[drained] > 0, what="the node to drain answering")
        node = client.nodes.get(drained)
        spec = node.attrs["Spec"]
        spec["Availability"] = "drain"
        assert node.update(spec)
        eventually(
            lambda: _settled(rig, up["deploy_id"], {kept}),
            timeout=300,
            what="the drained node's replicas moved to the other node",
        )
        before = traffic.answered[kept]
        eventually(lambda: traffic.answered[kept] > before + REPLICAS, what="traffic after")
    finally:
        traffic.stop.set()
        sender.join(60)
    assert traffic.failures == []
    assert traffic.answered[drained] > 0 and traffic.answered[kept] > 0
    record = rig.api.get(f"/api/v1/deployments/{up['deploy_id']}").json()
    assert record["status"] == "ready"
