"""The lifecycle suite runs on every runtime: fake (fast), process and docker (real)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from deployserver.config import Settings
from deployserver.main import create_app
from deployserver.runtime.base import CellRuntime
from deployserver.runtime.select import instance_id
from tests.fakes import FakeRuntime
from tests.helpers import ADMIN_TOKEN, bearer, serve


@dataclass
class Rig:
    """A running server on one runtime, and how to kill one of its cells from outside."""

    kind: str
    settings: Settings
    runtime: CellRuntime
    app: FastAPI
    api: httpx.Client
    kill: Callable[[str], None]


def _runtime(kind: str, settings: Settings, fake: FakeRuntime) -> CellRuntime:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if kind == "fake":
        return fake
    if kind == "process":
        from deployserver.runtime.process import ProcessRuntime

        return ProcessRuntime(settings.data_dir, instance_id(settings.data_dir))
    from deployserver.runtime.docker import DockerRuntime

    return DockerRuntime(settings, instance_id(settings.data_dir))


def reap(runtime: CellRuntime) -> None:
    """Remove every cell of a server that has stopped: only then can no reconciler (or a
    start still under way in a worker thread) bring one back behind our back."""
    quiet_passes = 0
    while quiet_passes < 2:
        cells = runtime.list_cells()
        for info in cells:
            runtime.stop(info.id, timeout=2)
        quiet_passes = quiet_passes + 1 if not cells else 0
        time.sleep(0.2)


def _killer(kind: str, runtime: CellRuntime) -> Callable[[str], None]:
    def kill(cell_id: str) -> None:
        if kind == "fake":
            assert isinstance(runtime, FakeRuntime)
            runtime.kill(runtime.cells[cell_id].spec.deploy_id)
        elif kind == "process":
            state = (Path(runtime.root) / f"{cell_id}.json").read_text()  # type: ignore[attr-defined]
            import json

            os.killpg(json.loads(state)["pid"], signal.SIGKILL)
        else:
            runtime.client.containers.get(cell_id).kill()  # type: ignore[attr-defined]

    return kill


@pytest.fixture(
    params=[
        "fake",
        pytest.param("process", marks=pytest.mark.slow),
        pytest.param("docker", marks=[pytest.mark.docker, pytest.mark.slow]),
    ]
)
def runtime_kind(request: pytest.FixtureRequest) -> str:
    if request.param == "docker":
        request.getfixturevalue("docker_client")  # fails (CI) or skips without an engine
    return str(request.param)


@pytest.fixture
def lifecycle_settings(settings: Settings, runtime_kind: str) -> Settings:
    deadline = 5.0 if runtime_kind == "fake" else 60.0
    return settings.model_copy(update={"health_deadline": deadline, "crash_loop_budget": 2})


@pytest.fixture
def rig(
    runtime_kind: str, lifecycle_settings: Settings, fake_runtime: FakeRuntime
) -> Iterator[Rig]:
    runtime = _runtime(runtime_kind, lifecycle_settings, fake_runtime)
    app = create_app(lifecycle_settings, runtime=runtime)
    try:
        with (
            serve(app) as url,
            httpx.Client(base_url=url, timeout=120, headers=bearer(ADMIN_TOKEN)) as api,
        ):
            yield Rig(
                runtime_kind,
                lifecycle_settings,
                runtime,
                app,
                api,
                _killer(runtime_kind, runtime),
            )
    finally:
        reap(runtime)
