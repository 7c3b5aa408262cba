"""Shared fixtures: settings on a temporary data folder, SQLite or a fresh PostgreSQL
database (DEPLOYSERVER_TEST_DATABASE_URL), the app served on a loopback port, clients
with the admin token (``api``) or none (``anon``), and a Docker client for tests marked
``docker``: without a reachable engine they skip, except when
DEPLOYSERVER_REQUIRE_DOCKER=1 (CI), where they fail."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest
from docker.errors import DockerException, NotFound
from fastapi import FastAPI

from deployserver.config import Settings
from deployserver.main import create_app
from tests.fakes import FakeRuntime
from tests.helpers import ADMIN_TOKEN, bearer, fresh_database_url, serve
from tests.swarmkit import SwarmSession, local_registry, remove_network, untag_registry_images

ONCE = (
    "serving_cell/",
    "runtime/",
    "deploy/",
    "bench/",
    "control/",
    "client/test_packing.py",
    "client/test_layering.py",
    "upload/test_multipart.py",
    "upload/test_unpack.py",
    "upload/test_storage.py",
    "serving/test_jsonstream.py",
    "serving/test_grpcwire.py",
    "ui/",
    "security/test_login_floods.py",
    "security/test_openapi_fuzz.py",
)
"""Tests that never touch the server's database (the cell package, images, the compose
and benchmark smoke runs, pure units) or whose subject does not depend on it (the login
floods measure limits held in memory; the UI drives pages; the fuzz hunts 5xx answers of
the HTTP layer): marked ``once``, so CI's PostgreSQL pass leaves
them to the SQLite pass instead of running them twice."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    for item in items:
        where = item.path.resolve().relative_to(here).as_posix()
        if where.startswith(ONCE) or _real_runtime(item):
            item.add_marker(pytest.mark.once)


def _real_runtime(item: pytest.Item) -> bool:
    """A lifecycle test on a real runtime (process, Docker, Swarm): it tests the runtime;
    the same test on the fake runtime runs the same database steps on each database."""
    callspec = getattr(item, "callspec", None)
    return callspec is not None and callspec.params.get("runtime_kind", "fake") != "fake"


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    """SQLite in the test's folder, or a new PostgreSQL database dropped afterwards."""
    with fresh_database_url(tmp_path) as url:
        yield url


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        health_first_delay=0.01,
        health_max_delay=0.05,
        health_deadline=5,
        reconcile_interval=0.1,
        restart_backoff=0.01,
        admin_token=ADMIN_TOKEN,
    )


@pytest.fixture
def fake_runtime() -> Iterator[FakeRuntime]:
    """A FakeRuntime whose cells answer health checks from a real loopback server."""
    runtime = FakeRuntime()
    with serve(runtime.app()) as url:
        runtime.base_url = url
        yield runtime


@pytest.fixture
def app(settings: Settings, fake_runtime: FakeRuntime) -> FastAPI:
    """The server on the fake runtime; tests of real runtimes build their own app."""
    return create_app(settings, runtime=fake_runtime)


@pytest.fixture
def base_url(app: FastAPI) -> Iterator[str]:
    with serve(app) as url:
        yield url


@pytest.fixture
def api(base_url: str) -> Iterator[httpx.Client]:
    """A client carrying the admin token."""
    with httpx.Client(base_url=base_url, timeout=60, headers=bearer(ADMIN_TOKEN)) as client:
        yield client


@pytest.fixture
def anon(base_url: str) -> Iterator[httpx.Client]:
    """A client with no token at all."""
    with httpx.Client(base_url=base_url, timeout=60) as client:
        yield client


@pytest.fixture(scope="session")
def swarm(docker_client: docker.DockerClient) -> Iterator[SwarmSession]:
    """The local engine as a one-node swarm manager (``docker swarm init --advertise-addr
    127.0.0.1``), left again at the end; a swarm it was already in stays as it was."""
    session = SwarmSession(docker_client)
    try:
        session.ensure()
        yield session
    finally:
        session.leave()


@pytest.fixture(scope="session")
def swarm_registry(
    tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient
) -> Iterator[str]:
    """A real registry (Debian's docker-registry) on a loopback port, for the session."""
    with local_registry(tmp_path_factory.mktemp("registry")) as address:
        try:
            yield address
        finally:
            untag_registry_images(docker_client, address)


@pytest.fixture(scope="session")
def swarm_network(swarm: SwarmSession, docker_client: docker.DockerClient) -> Iterator[str]:
    """The name of the cells' overlay network the Swarm tests' servers share (each
    server makes it when missing); removed at the end."""
    swarm.ensure()
    name = f"ds-test-{secrets.token_hex(4)}-cells"
    try:
        yield name
    finally:
        remove_network(docker_client, f"{name}-egress")  # made for cells with egress
        remove_network(docker_client, name)


TEST_LABEL = "deployserver.test"


@pytest.fixture(scope="session")
def test_labels() -> dict[str, str]:
    """Labels for every container or network a test creates; the session removes all
    that carry them."""
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
        for network in client.networks.list(filters={"label": f"{TEST_LABEL}=1"}):
            with contextlib.suppress(NotFound):
                network.remove()
        client.close()
