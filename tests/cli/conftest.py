"""One real ``deployserver serve`` per test module (process runtime: cells are local
processes), the CLI run as a subprocess against it, and package folders to push."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from deployserver.config import Settings
from deployserver.runtime.base import CellRuntime
from deployserver.runtime.hostpip import PipSandbox
from deployserver.runtime.process import ProcessRuntime
from deployserver.runtime.select import instance_id
from tests.helpers import bearer, fresh_database_url, server_process
from tests.lifecycle.packages import FAILS_IN_LOAD

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "templates"
_OUR_ENV = ("DEPLOYSERVER_TOKEN", "DEPLOYSERVER_ADMIN_TOKEN", "DEPLOYSERVER_URL")


def checkout_env(**extra: str) -> dict[str, str]:
    """The environment with this checkout first on the path and none of our settings."""
    env = {k: v for k, v in os.environ.items() if k not in _OUR_ENV}
    return env | {"PYTHONPATH": str(ROOT)} | extra


@dataclass
class Server:
    """A running server: its URL, data folder, admin token and a client with it."""

    url: str
    data_dir: Path
    token: str
    api: httpx.Client

    def cli_env(self, **extra: str) -> dict[str, str]:
        """Where the CLI finds this server; the token it finds itself (local admin token)."""
        where = {"DEPLOYSERVER_URL": self.url, "DEPLOYSERVER_DATA_DIR": str(self.data_dir)}
        return checkout_env(**where, **extra)

    def cli(
        self, *args: str | Path, cwd: Path | None = None, **extra: str
    ) -> subprocess.CompletedProcess[str]:
        """``deployserver ARGS`` as a subprocess with pipes (so: not a terminal)."""
        return subprocess.run(
            [sys.executable, "-m", "deployserver.cli", *map(str, args)],
            env=self.cli_env(**extra),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=300,
        )

    def deployments(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.api.get("/api/v1/deployments").json()["items"]
        return items


def _runtime(kind: str, data_dir: Path) -> CellRuntime:
    if kind == "process":
        sandbox = PipSandbox.from_settings(Settings(data_dir=data_dir))
        return ProcessRuntime(data_dir, instance_id(data_dir), sandbox=sandbox)
    from deployserver.runtime.docker import DockerRuntime

    return DockerRuntime(Settings(data_dir=data_dir), instance_id(data_dir))


@contextmanager
def running_server(folder: Path, runtime: str) -> Iterator[Server]:
    """``deployserver serve`` on ``runtime`` with its data under ``folder``; the cells it
    started are stopped afterwards (they outlive their server by design)."""
    data_dir = folder / "data"
    with fresh_database_url(folder) as database_url:
        env = checkout_env(
            DEPLOYSERVER_DATABASE_URL=database_url,
            DEPLOYSERVER_RUNTIME=runtime,
            DEPLOYSERVER_HEALTH_DEADLINE="60",
        )
        try:
            with (
                server_process(data_dir, env) as (url, _proc, token),
                httpx.Client(base_url=url, timeout=120, headers=bearer(token)) as api,
            ):
                yield Server(url, data_dir, token, api)
        finally:
            cells = _runtime(runtime, data_dir)
            for cell in cells.list_cells():
                cells.stop(cell.id, timeout=5)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose cells are local processes, shared by a module's tests."""
    with running_server(tmp_path_factory.mktemp("server"), "process") as running:
        yield running


def write_package(folder: Path, metadata: dict[str, Any], files: dict[str, bytes]) -> Path:
    """A package folder: ``metadata.json`` plus ``files`` (relative paths)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metadata.json").write_text(json.dumps(metadata))
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def broken_package(folder: Path, model: str) -> Path:
    """A package whose scoring script raises in ``load()``."""
    return write_package(folder, {"model": model}, {"score.py": FAILS_IN_LOAD})
