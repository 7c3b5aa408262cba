"""``init`` + ``push --wait`` of a template into a real container cell."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.conftest import Server, running_server


@pytest.fixture(scope="module")
def docker_server(
    tmp_path_factory: pytest.TempPathFactory, docker_client: object
) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("server"), "docker") as running:
        yield running


@pytest.mark.docker
@pytest.mark.slow
def test_template_pushed_to_a_container_ends_ready(docker_server: Server, tmp_path: Path) -> None:
    folder = tmp_path / "sentiment"
    assert docker_server.cli("init", folder, "--template", "python").returncode == 0
    out = docker_server.cli("push", folder, "--wait", "--json")
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    assert record["status"] == "ready" and record["cell"]["runtime"] == "docker"
