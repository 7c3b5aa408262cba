"""What only the swarm runtime does: a hardened service pinned by digest on an internal
overlay, the node of each cell, adoption of its services after a restart and removal of
its orphans."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from deployserver.config import Settings
from deployserver.main import create_app
from deployserver.runtime.select import instance_id
from deployserver.runtime.swarm import SwarmRuntime
from tests.helpers import ADMIN_TOKEN, bearer, eventually, multipart, serve, wait_for_status
from tests.lifecycle.conftest import SWARM, Rig, _place, _tell_cells, reap
from tests.lifecycle.packages import package
from tests.swarmkit import sweep_after

pytestmark = [pytest.mark.parametrize("runtime_kind", [SWARM], indirect=True)]


def _deploy(api: Any, model: str) -> dict[str, Any]:
    metadata, files = package("good", model, parameters={"tag": "v1"})
    up = api.post("/api/v1/deployments", files=multipart(metadata, files)).json()
    record: dict[str, Any] = wait_for_status(api, up["deploy_id"], {"ready", "failed"})
    assert record["status"] == "ready", record["status_reason"]
    return record


def _cell_process_status(container: Any) -> dict[str, str]:
    """/proc/<pid>/status of the cell's Python, the child of the container's init."""
    init = container.attrs["State"]["Pid"]
    child = Path(f"/proc/{init}/task/{init}/children").read_text().split()[0]
    lines = Path(f"/proc/{child}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def test_a_deployment_is_a_hardened_pinned_service_on_an_internal_overlay(rig: Rig) -> None:
    record = _deploy(rig.api, "hardened")
    runtime: Any = rig.runtime
    task = runtime.api.inspect_task(record["cell"]["id"])
    service = runtime.api.inspect_service(task["ServiceID"])["Spec"]
    spec = service["TaskTemplate"]["ContainerSpec"]
    assert spec["Image"].startswith(f"{rig.settings.registry}/deployserver/cell")
    assert "@sha256:" in spec["Image"]  # pinned by digest: the same bytes on every node
    assert spec["ReadOnly"] is True and spec["CapabilityDrop"] == ["ALL"] and spec["Init"]
    assert "--no-new-privileges" in spec["Args"]
    assert {m["Type"] for m in spec["Mounts"]} == {"tmpfs", "volume"}  # no host path
    (secret,) = spec["Secrets"]
    assert secret["File"]["Mode"] == 0o400 and secret["File"]["UID"] == "10001"
    assert service["Labels"]["deployserver.instance"] == runtime.instance
    assert service["Labels"]["deployserver.deploy_id"] == record["deploy_id"]
    limits = service["TaskTemplate"]["Resources"]["Limits"]
    assert limits["Pids"] == rig.settings.pids_limit
    assert limits["NanoCPUs"] == int(rig.settings.default_cpus * 1e9)
    assert service["EndpointSpec"]["Mode"] == "dnsrr"  # tasks by address, no virtual IP
    (network,) = service["TaskTemplate"]["Networks"]
    overlay = runtime.client.networks.get(network["Target"]).attrs
    assert overlay["Driver"] == "overlay" and overlay["Internal"] and overlay["Attachable"]
    address = runtime.network.address_of(task)
    assert record["cell"]["url"] == f"http://{address}:{rig.settings.cell_port}"
    assert runtime.inspect(record["cell"]["id"]).node == task["NodeID"]
    assert record["cell"]["node"] == task["NodeID"]  # the record shows where it runs

    container = runtime.client.containers.get(task["Status"]["ContainerStatus"]["ContainerID"])
    host = container.attrs["HostConfig"]
    assert host["ReadonlyRootfs"] and host["CapDrop"] == ["ALL"] and not host["Privileged"]
    assert host["PidsLimit"] == rig.settings.pids_limit
    status = _cell_process_status(container)
    assert status["NoNewPrivs"] == "1", status
    assert status["Uid"].split()[0] == "10001" and status["CapEff"] == "0" * 16


def test_egress_joins_a_second_overlay_and_replicas_share_their_node_s_cache(rig: Rig) -> None:
    rig.settings.allow_egress = True
    metadata, files = package("good", "outward", network={"egress": True})
    up = rig.api.post("/api/v1/deployments", files=multipart(metadata, files)).json()
    record = wait_for_status(rig.api, up["deploy_id"], {"ready", "failed"})
    assert record["status"] == "ready", record["status_reason"]
    runtime: Any = rig.runtime
    task = runtime.api.inspect_task(record["cell"]["id"])
    service = runtime.api.inspect_service(task["ServiceID"])["Spec"]
    internal, egress = (
        runtime.client.networks.get(n["Target"]).attrs for n in service["TaskTemplate"]["Networks"]
    )
    assert internal["Internal"] and not egress["Internal"]
    assert egress["Name"] == f"{rig.settings.swarm_network}-egress"

    scaling = {"min_replicas": 2, "max_replicas": 2}  # a second replica, on the same node
    resp = rig.api.put(f"/api/v1/deployments/{up['deploy_id']}/scaling", json=scaling)
    assert resp.status_code == 200, resp.text

    def both_ready() -> bool:
        cells = [c for c in runtime.list_cells() if c.deploy_id == up["deploy_id"]]
        return len(cells) == 2 and all("model outward ready" in runtime.logs(c.id) for c in cells)

    eventually(both_ready, timeout=120, what="two replicas ready")
    mine = [c for c in runtime.list_cells() if c.deploy_id == up["deploy_id"]]
    other = next(c for c in mine if c.id != record["cell"]["id"])
    assert "sha256 checked" in runtime.logs(record["cell"]["id"])
    assert "from this node's cache" in runtime.logs(other.id)


def _orphan(runtime: SwarmRuntime) -> str:
    """A service labelled as this server's, for a deployment it never had."""
    body = {
        "Name": f"ds-orphan-{runtime.instance[:8]}",
        "Labels": {
            "deployserver.managed": "1",
            "deployserver.instance": runtime.instance,
            "deployserver.deploy_id": "0000000000ffffffffffffff",
        },
        "TaskTemplate": {
            "ContainerSpec": {"Image": runtime.cell_image, "Command": ["sleep", "600"]},
            "Networks": [{"Target": runtime.network.id}],
        },
        "Mode": {"Replicated": {"Replicas": 1}},
        "EndpointSpec": {"Mode": "dnsrr"},
    }
    api = runtime.api
    return str(api._result(api._post_json(api._url("/services/create"), data=body), True)["ID"])


def test_a_restarted_server_adopts_its_services_and_removes_orphans(
    runtime_kind: str, lifecycle_settings: Settings
) -> None:
    settings = lifecycle_settings
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    first = SwarmRuntime(settings, instance_id(settings.data_dir))
    try:
        with _place(runtime_kind, settings, first) as host:
            app = create_app(settings, runtime=first)
            with (
                serve(app, host) as url,
                _tell_cells(runtime_kind, settings, url),
                httpx.Client(base_url=url, timeout=60, headers=bearer(ADMIN_TOKEN)) as api,
            ):
                record = _deploy(api, "adopted")
            orphan = _orphan(first)  # while the server is down

            second = SwarmRuntime(settings, instance_id(settings.data_dir))
            app = create_app(settings, runtime=second)
            with (
                serve(app, host) as url,
                _tell_cells(runtime_kind, settings, url),
                httpx.Client(base_url=url, timeout=60, headers=bearer(ADMIN_TOKEN)) as api,
            ):
                eventually(
                    lambda: not [s for s in first.api.services() if s["ID"] == orphan],
                    what="the orphan service removed",
                )
                again = wait_for_status(api, record["deploy_id"], "ready")
                assert again["cell"]["id"] == record["cell"]["id"]  # kept, not restarted
                resp = api.post("/serve/adopted/predict", json={"inputs": 1})
                assert resp.status_code == 200, resp.text
                assert [c.deploy_id for c in second.list_cells()] == [record["deploy_id"]]
    finally:
        reap(first)
        sweep_after(first)
