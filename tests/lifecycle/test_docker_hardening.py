"""docker inspect of a real cell shows the hardening, whatever the metadata asked for."""

from __future__ import annotations

import pytest

from tests.helpers import multipart, wait_for_status
from tests.lifecycle.conftest import Rig
from tests.lifecycle.packages import package

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.mark.parametrize("runtime_kind", ["docker"], indirect=True)
def test_cell_container_is_hardened(rig: Rig) -> None:
    metadata, files = package(
        "good",
        "hardened",
        resources={"cpus": 0.5, "memory": "256m"},
        env={"FOO": "bar", "DEPLOYSERVER_CELL_METADATA": "{}"},
    )
    up = rig.api.post("/api/v1/deployments", files=multipart(metadata, files)).json()
    record = wait_for_status(rig.api, up["deploy_id"], {"ready", "failed"})
    assert record["status"] == "ready", record["status_reason"]
    container = rig.runtime.client.containers.get(record["cell"]["id"])  # type: ignore[attr-defined]
    host = container.attrs["HostConfig"]
    config = container.attrs["Config"]

    assert config["User"] in ("10001:10001", "10001")
    assert container.exec_run("id -u").output.strip() == b"10001"
    assert host["ReadonlyRootfs"] is True
    assert host["Privileged"] is False
    assert host["CapDrop"] == ["ALL"] and not host.get("CapAdd")
    assert "no-new-privileges" in (host.get("SecurityOpt") or [])
    assert host["NetworkMode"] not in ("host",) and host.get("PidMode", "") != "host"
    assert host["Memory"] == 256 * 1024 * 1024
    assert host["NanoCpus"] == 500_000_000
    assert host["PidsLimit"] == rig.settings.pids_limit
    assert host["RestartPolicy"]["Name"] in ("no", "")
    assert set(host["Tmpfs"]) == {"/tmp"}
    mounts = container.attrs["Mounts"]
    assert [(m["Destination"], m["RW"]) for m in mounts] == [("/mnt/models", False)]
    assert mounts[0]["Source"] == str(rig.settings.deployments_dir.resolve() / up["deploy_id"])
    assert not host.get("PortBindings")  # nothing published: reached on its own network
    assert host["LogConfig"] == {
        "Type": "json-file",
        "Config": {
            "max-size": str(rig.settings.cell_log_max_bytes),
            "max-file": str(rig.settings.cell_log_files),
        },
    }
    # alone on an internal network of this server's own, named like the cell
    assert host["NetworkMode"] == container.name
    assert list(container.attrs["NetworkSettings"]["Networks"]) == [container.name]
    network = rig.runtime.client.networks.get(container.name)  # type: ignore[attr-defined]
    assert network.attrs["Internal"] is True and network.attrs["Driver"] == "bridge"
    assert network.attrs["Labels"]["deployserver.instance"] == rig.runtime.instance  # type: ignore[attr-defined]
    assert network.attrs["Labels"]["deployserver.deploy_id"] == up["deploy_id"]
    assert network.attrs["Options"]["com.docker.network.bridge.name"].startswith("dsc")
    address = container.attrs["NetworkSettings"]["Networks"][container.name]["IPAddress"]
    assert record["cell"]["url"] == f"http://{address}:{rig.settings.cell_port}"
    labels = config["Labels"]
    assert labels["deployserver.deploy_id"] == up["deploy_id"]
    assert labels["deployserver.model"] == "hardened" and labels["deployserver.version"] == "1"
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["FOO"] == "bar"
    assert env["DEPLOYSERVER_CELL_METADATA"] != "{}"  # reserved names cannot be overridden
    # the model folder really is read-only inside
    denied = container.exec_run("touch /mnt/models/x")
    assert denied.exit_code != 0
    assert container.exec_run("touch /opt/cell/x").exit_code != 0


@pytest.mark.parametrize("runtime_kind", ["docker"], indirect=True)
def test_metadata_cannot_ask_for_host_options(rig: Rig) -> None:
    for resources in ({"privileged": True}, {"network_mode": "host"}, {"volumes": ["/:/host"]}):
        metadata, files = package("good", "sneaky", resources=resources)
        resp = rig.api.post("/api/v1/deployments", files=multipart(metadata, files))
        assert resp.status_code == 422, resp.text
        assert "resources" in resp.json()["error"]["message"]
