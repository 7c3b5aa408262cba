"""Cells for tests: in-process over ASGI (lifespan driven here) or a real subprocess."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
# Test this checkout's serving_cell even when another checkout is installed editable
# and pytest is run as plain `pytest` (which, unlike `python -m pytest`, adds no cwd).
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from serving_cell.app import create_app  # noqa: E402
from serving_cell.settings import CellSettings  # noqa: E402

TEMPLATES = REPO / "templates"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
POLLS = 1200
"""How often to poll a cell that is starting (x 0.05 s): a guard against hanging, not a limit."""


async def settled(client: httpx.AsyncClient) -> dict[str, Any]:
    """Poll /health/ready until the cell has finished loading, one way or the other."""
    for _ in range(POLLS):
        body = (await client.get("/health/ready")).json()
        if body["state"] != "STARTING":
            return body
        await anyio.sleep(0.05)
    raise AssertionError("the cell never left STARTING")


@asynccontextmanager
async def serve(
    model_dir: Path,
    metadata: dict[str, Any] | None = None,
    entrypoint: str | None = None,
    *,
    wait: bool = True,
) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process cell: the real app and lifespan, requests over ASGI."""
    app = create_app(CellSettings(Path(model_dir), metadata or {}, entrypoint))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://cell") as client:
            client.app = app  # type: ignore[attr-defined]  # tests reach the Cell through it
            if wait:
                await settled(client)
            yield client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class CellProcess:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def run_cell(
    model_dir: Path,
    log: Path,
    *args: str,
    env: dict[str, str] | None = None,
    wait: bool = True,
) -> Iterator[CellProcess]:
    """``python -m serving_cell`` on a loopback port, as the process runtime starts it."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "serving_cell",
        "--model-dir",
        str(model_dir),
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
        *args,
    ]
    # This worktree's serving_cell, whichever checkout is installed editable.
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=full_env, stdout=out, stderr=subprocess.STDOUT)
    cell = CellProcess(f"http://127.0.0.1:{port}", process, log)
    try:
        with cell.client() as client:
            for _ in range(POLLS):
                assert process.poll() is None, f"cell exited:\n{cell.output()}"
                try:
                    state = client.get("/health/ready").json()["state"]
                except httpx.TransportError:
                    state = "DOWN"
                if state != "DOWN" and (not wait or state != "STARTING"):
                    break
                time.sleep(0.05)
            else:
                raise AssertionError(f"cell never settled:\n{cell.output()}")
        yield cell
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def cell_process(tmp_path: Path) -> Callable[..., Any]:
    """Start a subprocess cell; its output goes to a file the test can read."""
    counter = iter(range(1000))

    def start(model_dir: Path, *args: str, **kwargs: Any) -> Any:
        return run_cell(model_dir, tmp_path / f"cell-{next(counter)}.log", *args, **kwargs)

    return start


def copy_tree(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target


def run_script(script: Path, *args: str) -> None:
    """Run a template's artefact script the way a user would."""
    subprocess.run([sys.executable, str(script), *args], check=True, capture_output=True)


@pytest.fixture(scope="session")
def built_templates(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Template name -> a folder ready to deploy, artefacts made by its own script once."""
    root = tmp_path_factory.mktemp("templates")
    cache: dict[str, Path] = {}

    def build(name: str) -> Path:
        if name not in cache:
            folder = copy_tree(TEMPLATES / name, root / name)
            if name == "sklearn":
                run_script(folder / "train.py", str(folder))
            if name == "mlflow":
                run_script(folder / "train.py", str(root / "mlflow-model"))
                folder = root / "mlflow-model"
            cache[name] = folder
        return cache[name]

    return build


def fixture_dir(name: str, tmp_path: Path) -> Path:
    """A private copy of one failure-mode fixture (some write files beside the script)."""
    return copy_tree(FIXTURES / name, tmp_path / name)
