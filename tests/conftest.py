"""Shared fixtures: settings on a temporary data folder, SQLite or a fresh PostgreSQL
database (DEPLOYSERVER_TEST_DATABASE_URL), the app served on a loopback port, clients
with the admin token (``api``) or none (``anon``), and a Docker client for tests marked
``docker``: without a reachable engine they skip, except when
DEPLOYSERVER_REQUIRE_DOCKER=1 (CI), where they fail."""

from __future__ import annotations

import contextlib
import os
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
