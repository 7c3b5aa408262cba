"""Fixtures for tests that need a Docker Engine (marked ``@pytest.mark.docker``).

Without a reachable engine these tests skip, except when ``DEPLOYSERVER_REQUIRE_DOCKER=1``
(CI sets it): then they fail, so a Docker test never silently skips in CI.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import docker
import pytest
from docker.errors import DockerException, NotFound

TEST_LABEL = "deployserver.test"


@pytest.fixture(scope="session")
def test_labels() -> dict[str, str]:
    """Labels for every container a test creates; the session removes all that carry them."""
    return {TEST_LABEL: "1"}


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except DockerException as exc:
        message = f"Docker Engine unreachable: {exc}"
        if os.environ.get("DEPLOYSERVER_REQUIRE_DOCKER") == "1":
            pytest.fail(f"{message} (DEPLOYSERVER_REQUIRE_DOCKER=1)")
        pytest.skip(message)
    try:
        yield client
    finally:
        for container in client.containers.list(all=True, filters={"label": f"{TEST_LABEL}=1"}):
            with contextlib.suppress(NotFound):
                container.remove(force=True)
        client.close()
