"""The peers, each served its own documented way from a folder of its own: MLServer with
its scikit-learn runtime and a ``model-settings.json``, BentoML with a service file whose
endpoint takes and answers the Open Inference Protocol's JSON."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.common import BenchError
from bench.peers import venvs
from tests.helpers import free_port

START_SECONDS = 180.0
STOP_SECONDS = 20.0


@dataclass(frozen=True)
class Peer:
    """How to install, lay out and start one peer serving the iris model on a port."""

    key: str
    """Its name for ``--peers``."""
    title: str
    requirements: tuple[str, ...]
    """Pinned, beside the scikit-learn that trained the model (added by the benchmark)."""
    layout: Callable[[int], dict[str, str]]
    """The HTTP port -> the files it needs beside ``model.joblib``."""
    command: Callable[[Path, int], list[str]]
    """The virtualenv and the HTTP port -> the command that serves the folder."""
    ready_path: str
    env: tuple[tuple[str, str], ...] = ()


def _mlserver_layout(port: int) -> dict[str, str]:
    # MLServer's documented sklearn set-up: the runtime by name and the joblib file's uri;
    # every other setting is its default (one parallel inference worker).
    model = {
        "name": "iris",
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": "v1"},
    }
    server = {
        "host": "127.0.0.1",
        "http_port": port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
    }
    return {"model-settings.json": json.dumps(model), "settings.json": json.dumps(server)}


BENTO_SERVICE = '''\
"""The iris model as a BentoML service whose endpoint speaks the Open Inference
Protocol's JSON: the request's ``inputs`` tensor in, an ``outputs`` tensor out."""

from pathlib import Path

import bentoml
import joblib
import numpy as np

HERE = Path(__file__).resolve().parent


@bentoml.service
class Iris:
    def __init__(self) -> None:
        self.model = joblib.load(HERE / "model.joblib")

    @bentoml.api(route="/v2/models/iris/infer")
    def infer(self, inputs: list[dict]) -> dict:
        tensor = inputs[0]
        rows = np.asarray(tensor["data"], dtype=float).reshape(tensor["shape"])
        labels = self.model.predict(rows)
        output = {"name": "predict", "datatype": "INT64", "shape": [len(labels)]}
        return {"model_name": "iris", "outputs": [{**output, "data": labels.tolist()}]}
'''

MLSERVER = Peer(
    key="mlserver",
    title="MLServer",
    # uvloop 0.22 refuses asyncio.get_event_loop() without a loop, which MLServer 1.7's
    # inference workers call at start: they would die and restart for ever.
    requirements=("mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop==0.21.0"),
    layout=_mlserver_layout,
    command=lambda venv, port: [str(venv / "bin" / "mlserver"), "start", "."],
    ready_path="/v2/models/iris/ready",
)
BENTOML = Peer(
    key="bentoml",
    title="BentoML",
    # 1.4.40 needs a certifi newer than some package indexes hold yet
    requirements=("bentoml==1.4.39",),
    layout=lambda port: {"service.py": BENTO_SERVICE},
    command=lambda venv, port: [
        str(venv / "bin" / "bentoml"),
        "serve",
        "service:Iris",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ],
    ready_path="/readyz",
    env=(("BENTOML_DO_NOT_TRACK", "true"),),
)
PEERS = {p.key: p for p in (MLSERVER, BENTOML)}


def _environment(folder: Path, peer: Peer) -> dict[str, str]:
    """The bench's environment without what would reach into this project (its
    PYTHONPATH, its settings), and a home of the peer's own inside its folder."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DEPLOYSERVER_", "PYTHON", "VIRTUAL_ENV"))
    }
    return env | {"BENTOML_HOME": str(folder / ".bentoml"), **dict(peer.env)}


@contextlib.contextmanager
def serving(peer: Peer, venv: Path, folder: Path, model: bytes) -> Iterator[str]:
    """The peer serving ``model`` from ``folder``, until the block ends; yields its URL."""
    folder.mkdir(parents=True)
    (folder / "model.joblib").write_bytes(model)
    port = free_port()
    for name, text in peer.layout(port).items():
        (folder / name).write_text(text)
    log = folder / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            peer.command(venv, port),
            cwd=folder,
            env=_environment(folder, peer),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(peer, proc, url + peer.ready_path, log)
        yield url
    finally:
        _stop(proc)


def _wait_ready(peer: Peer, proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{peer.title} exited: {log.read_text(errors='replace')[-1500:]}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise BenchError(f"{peer.title} not ready in {START_SECONDS:g} s: {log.read_text()[-1500:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Ctrl-C first (both stop their workers on it), then harder, its own group only."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        if proc.poll() is not None:
            return
        proc.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(STOP_SECONDS)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def install(peer: Peer, root: Path, sklearn: str) -> Path:
    """The peer's virtualenv (installed once, then reused)."""
    return venvs.ensure(root, peer.key, [*peer.requirements, f"scikit-learn=={sklearn}"])
