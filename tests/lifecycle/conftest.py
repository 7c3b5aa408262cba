"""The lifecycle suite runs on every runtime: fake (fast), process, docker and swarm (real).

On swarm the server and the test's clients run inside the network namespace of an anchor
container on the cells' overlay (see tests/swarmkit.py): that is where tasks answer."""

from __future__ import annotations

import contextlib
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
from tests import swarmkit
from tests.fakes import FakeRuntime
from tests.helpers import ADMIN_TOKEN, bearer, serve


class ManualClock:
    """The autoscaler's clock, moved by hand: idle and load windows pass at once."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Rig:
    """A running server on one runtime, and how to kill one of its cells from outside."""

    kind: str
    settings: Settings
    runtime: CellRuntime
    app: FastAPI
    api: httpx.Client
    kill: Callable[[str], None]
    clock: ManualClock


def _runtime(kind: str, settings: Settings, fake: FakeRuntime) -> CellRuntime:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if kind == "fake":
        return fake
    if kind == "process":
        from deployserver.runtime.hostpip import PipSandbox
        from deployserver.runtime.process import ProcessRuntime

        sandbox = PipSandbox.from_settings(settings)
        return ProcessRuntime(settings.data_dir, instance_id(settings.data_dir), sandbox=sandbox)
    if kind == "swarm":
        from deployserver.runtime.swarm import SwarmRuntime

        return SwarmRuntime(settings, instance_id(settings.data_dir))
    from deployserver.runtime.docker import DockerRuntime

    return DockerRuntime(settings, instance_id(settings.data_dir))


@contextlib.contextmanager
def _place(kind: str, settings: Settings, runtime: CellRuntime) -> Iterator[str]:
    """Where the server listens: loopback, or (swarm) every address of an anchor on the
    cells' overlay, this thread inside its network namespace meanwhile."""
    if kind != "swarm":
        yield "127.0.0.1"
        return
    assert settings.swarm_network
    client = runtime.client  # type: ignore[attr-defined]
    with swarmkit.anchor(client, settings.swarm_network) as box:
        address = swarmkit.overlay_address(box, settings.swarm_network)
        settings.swarm_server_url = f"http://{address}:0"  # the port once it listens
        with swarmkit.thread_in_netns(f"/proc/{box.attrs['State']['Pid']}/ns/net"):
            yield "0.0.0.0"


@contextlib.contextmanager
def _tell_cells(kind: str, settings: Settings, url: str) -> Iterator[None]:
    if kind == "swarm" and settings.swarm_server_url:
        port = url.rsplit(":", 1)[1]
        settings.swarm_server_url = settings.swarm_server_url.rsplit(":", 1)[0] + f":{port}"
    yield


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
            runtime.kill_cell(cell_id)
        elif kind == "process":
            state = (Path(runtime.root) / f"{cell_id}.json").read_text()  # type: ignore[attr-defined]
            import json

            os.killpg(json.loads(state)["pid"], signal.SIGKILL)
        elif kind == "swarm":
            task = runtime.api.inspect_task(cell_id)  # type: ignore[attr-defined]
            container = task["Status"]["ContainerStatus"]["ContainerID"]
            runtime.client.containers.get(container).kill()  # type: ignore[attr-defined]
        else:
            runtime.client.containers.get(cell_id).kill()  # type: ignore[attr-defined]

    return kill


SWARM = pytest.param("swarm", marks=[pytest.mark.docker, pytest.mark.slow, pytest.mark.once])
"""The swarm runtime: its server runs in another network namespace, where a PostgreSQL on
the host's loopback is out of reach, so it runs in the SQLite pass only."""


@pytest.fixture(
    params=[
        "fake",
        pytest.param("process", marks=pytest.mark.slow),
        pytest.param("docker", marks=[pytest.mark.docker, pytest.mark.slow]),
        SWARM,
    ]
)
def runtime_kind(request: pytest.FixtureRequest) -> str:
    if request.param in ("docker", "swarm"):
        request.getfixturevalue("docker_client")  # fails (CI) or skips without an engine
    if request.param == "swarm":
        request.getfixturevalue("swarm").ensure()  # a one-node swarm if a test left none
    return str(request.param)


@pytest.fixture
def lifecycle_settings(
    settings: Settings, runtime_kind: str, request: pytest.FixtureRequest
) -> Settings:
    deadline = 5.0 if runtime_kind == "fake" else 60.0
    update: dict[str, object] = {"health_deadline": deadline, "crash_loop_budget": 2}
    if runtime_kind == "swarm":
        update["swarm_network"] = request.getfixturevalue("swarm_network")
        update["registry"] = request.getfixturevalue("swarm_registry")
    return settings.model_copy(update=update)


@pytest.fixture
def rig(
    runtime_kind: str, lifecycle_settings: Settings, fake_runtime: FakeRuntime
) -> Iterator[Rig]:
    runtime = _runtime(runtime_kind, lifecycle_settings, fake_runtime)
    clock = ManualClock()
    app = create_app(lifecycle_settings, runtime=runtime, scale_clock=clock)
    try:
        with (
            _place(runtime_kind, lifecycle_settings, runtime) as host,
            serve(app, host) as url,
            _tell_cells(runtime_kind, lifecycle_settings, url),
            httpx.Client(base_url=url, timeout=120, headers=bearer(ADMIN_TOKEN)) as api,
        ):
            yield Rig(
                runtime_kind,
                lifecycle_settings,
                runtime,
                app,
                api,
                _killer(runtime_kind, runtime),
                clock,
            )
    finally:
        try:
            reap(runtime)
        finally:
            if runtime_kind == "swarm":
                swarmkit.sweep_after(runtime)
