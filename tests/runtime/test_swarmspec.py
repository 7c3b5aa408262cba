"""The Swarm service of a deployment, as JSON: hardened whatever the metadata says, the
credential only in the secret, names Swarm accepts, the replica count a parameter."""

from __future__ import annotations

import json
import re
from pathlib import Path

from deployserver.config import Settings
from deployserver.runtime.base import CellSpec
from deployserver.runtime.swarmspec import Placement, service_name, service_spec

WHERE = Placement(
    image="127.0.0.1:5000/deployserver/cell@sha256:" + "a" * 64,
    networks=("net1",),
    secret_id="sec1",
    secret_name="ds-inst-0123456789ab",
    archive_url="http://server:8000/api/v1/cells/0123456789ab/archive",
    archive_sha256="b" * 64,
    replicas=3,
)


def _spec(**extra: object) -> CellSpec:
    values: dict[str, object] = {
        "deploy_id": "0123456789abcdef01234567",
        "model": "Iris_Classifier.v2",
        "version": 7,
        "model_dir": Path("/data/deployments/x"),
        "entrypoint": "score.py:Model",
        "metadata": {"model": "Iris_Classifier.v2", "privileged": True, "cap_add": ["ALL"]},
        "env": {"MODE": "fast"},
        "cpus": 0.5,
        "memory": "256m",
    }
    values.update(extra)
    return CellSpec(**values)  # type: ignore[arg-type]


def test_the_service_is_hardened_whatever_the_metadata_says(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, pids_limit=64)
    body = service_spec(settings, _spec(), "feedc0de12345678", WHERE)
    template = body["TaskTemplate"]
    container = template["ContainerSpec"]
    assert container["ReadOnly"] is True and container["Init"] is True
    assert container["CapabilityDrop"] == ["ALL"] and "CapabilityAdd" not in container
    assert "Privileges" not in container and "User" not in container  # the image's uid 10001
    assert "--no-new-privileges" in container["Args"]
    assert [m["Type"] for m in container["Mounts"]] == ["tmpfs", "volume"]  # no host path
    assert container["Mounts"][1]["Source"] == "ds-feedc0de-0123456789abcdef01234567"
    assert template["Resources"]["Limits"] == {
        "NanoCPUs": 500_000_000,
        "MemoryBytes": 256 * 1024**2,
        "Pids": 64,
    }
    assert template["Networks"] == [{"Target": "net1"}]
    assert body["EndpointSpec"] == {"Mode": "dnsrr"}
    assert body["Mode"] == {"Replicated": {"Replicas": 3}}
    assert template["RestartPolicy"]["Condition"] == "on-failure"
    assert template["RestartPolicy"]["MaxAttempts"] == settings.crash_loop_budget
    assert body["Labels"]["deployserver.instance"] == "feedc0de12345678"
    assert container["Labels"] == body["Labels"]


def test_the_credential_travels_only_as_the_secret(tmp_path: Path) -> None:
    body = service_spec(Settings(data_dir=tmp_path), _spec(), "feedc0de12345678", WHERE)
    container = body["TaskTemplate"]["ContainerSpec"]
    (secret,) = container["Secrets"]
    assert secret["SecretID"] == "sec1" and secret["File"]["Mode"] == 0o400
    text = json.dumps(container["Args"]) + json.dumps(container["Env"])
    assert "dsa_" not in text
    assert f"/run/secrets/{secret['File']['Name']}" in container["Args"]
    assert WHERE.archive_sha256 in container["Args"] and WHERE.archive_url in container["Args"]


def test_service_names_are_what_swarm_accepts() -> None:
    for model in ("Iris_Classifier.v2", "a" * 64, "---", "ünïcode"):
        name = service_name(_spec(model=model), "feedc0de12345678")
        assert re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", name), name
