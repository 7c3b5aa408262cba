"""The cell image builds offline and runs under the hardening the server applies."""

from __future__ import annotations

import uuid
from pathlib import Path

import docker
import pytest

from deployserver.runtime import images

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]

HARDENING = {
    "user": "10001:10001",
    "read_only": True,
    "tmpfs": {"/tmp": "size=64m"},
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges"],
    "network_mode": "none",
    "pids_limit": 64,
    "mem_limit": "256m",
    "init": True,
}
"""What the server's Docker runtime is to pass to every cell container."""

CHECK = """
import os, sys, tempfile
import serving_cell, starlette, uvicorn, multipart
assert os.getuid() != 0 and os.getgid() != 0, (os.getuid(), os.getgid())
assert serving_cell.__file__.startswith("/opt/cell/src/"), serving_cell.__file__
try:
    open("/opt/cell/written", "w")
except OSError:
    pass
else:
    sys.exit("root filesystem is writable")
with tempfile.NamedTemporaryFile() as f:
    f.write(b"tmp is writable")
print("cell-ok", os.getuid(), sys.version_info[:2])
"""


@pytest.fixture(scope="module")
def cell_image(docker_client: docker.DockerClient) -> str:
    return images.ensure_cell_image(docker_client, REPO)


def run(client: docker.DockerClient, image: str, **kwargs: object) -> tuple[int, str]:
    """Run ``image`` to completion (kwargs carry the labels); return its status and output."""
    container = client.containers.run(image, detach=True, **kwargs)
    try:
        status = container.wait(timeout=120)["StatusCode"]
        return status, container.logs().decode()
    finally:
        container.remove(force=True)


def test_ensure_returns_the_content_tag(
    docker_client: docker.DockerClient, cell_image: str
) -> None:
    assert cell_image == images.cell_image_tag(REPO)
    labels = docker_client.images.get(cell_image).labels
    assert labels["deployserver.content-hash"] == cell_image.rpartition(":")[2]
    assert images.ensure_cell_image(docker_client, REPO) == cell_image


def test_image_defaults(docker_client: docker.DockerClient, cell_image: str) -> None:
    config = docker_client.images.get(cell_image).attrs["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["/opt/cell/bin/python", "-m", "serving_cell"]
    assert config["Cmd"] == ["--model-dir", "/mnt/models", "--port", "8080", "--host", "0.0.0.0"]
    assert "8080/tcp" in config["ExposedPorts"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["HOME"] == env["TMPDIR"] == "/tmp"


def test_runs_hardened(
    docker_client: docker.DockerClient, cell_image: str, test_labels: dict[str, str]
) -> None:
    status, output = run(
        docker_client,
        cell_image,
        entrypoint=["python", "-c", CHECK],
        command=[],
        labels=test_labels,
        **HARDENING,
    )
    assert status == 0, output
    assert "cell-ok 10001 (3, 11)" in output


def test_sdk_build_is_offline_and_tagged(
    docker_client: docker.DockerClient, cell_image: str
) -> None:
    # A second build through the SDK, under a throwaway tag: layers come from the cache,
    # and network_mode="none" proves the build needs no network.
    tag = f"deployserver/cell:test-{uuid.uuid4().hex[:8]}"
    try:
        assert images.build_cell_image(docker_client, REPO, tags=[tag]) == tag
        assert docker_client.images.get(tag).id == docker_client.images.get(cell_image).id
    finally:
        docker_client.images.remove(tag, noprune=True)


def test_missing_base_names_the_script(docker_client: docker.DockerClient) -> None:
    with pytest.raises(images.ImageError, match=r"build-base-image\.sh"):
        images.build_cell_image(
            docker_client, REPO, base_image="deployserver/no-such-base:1", tags=["x:y"]
        )
