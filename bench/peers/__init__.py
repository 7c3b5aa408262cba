"""7. peers: one sklearn model, one Open Inference Protocol request, four ways to serve it.

The iris LogisticRegression, trained here and saved with joblib, served by a cell
straight (its own port) and through ``/serve``, by MLServer (``mlserver-sklearn`` and a
``model-settings.json``) and by BentoML (a service file with a V2-shaped endpoint).
Every one gets the very same request, ``POST /v2/models/iris/infer`` with one FP64 row,
from wrk (or ``bench.load``) in a process of its own, on loopback. The cell runs on the
process runtime, so all four are plain processes of this machine with nothing between
them and the load but loopback. Each peer is installed from PyPI into a virtualenv of its
own under ``--peers-dir`` on the first run (minutes) and reused after; ``--peers none``
measures the cell alone and downloads nothing. Figures, each against the cell straight:
throughput at 32 concurrent and the median latency at 1 concurrent, the subjects
interleaved in a rotating order.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench import load
from bench.common import (
    JSON,
    BenchError,
    Figure,
    Options,
    deploy,
    interleave,
    median,
    profiled,
    say,
    server,
    wait_ready,
)
from bench.peers.servers import PEERS, install, serving

NAME = "peers"
MODEL = "iris"
TEMPLATE = Path(__file__).resolve().parents[2] / "templates" / "sklearn"
ROW = [5.1, 3.5, 1.4, 0.2]
REQUEST = json.dumps(
    {"inputs": [{"name": "predict", "shape": [1, 4], "datatype": "FP64", "data": ROW}]}
).encode()
"""The same Open Inference Protocol request for everyone; setosa, class 0."""
INFER = f"/v2/models/{MODEL}/infer"

SCORE_PY = b'''
"""The iris classifier for the cell: class indices out, as MLServer's runtime answers."""

import os

import joblib
import numpy as np


class Model:
    def __init__(self, model_dir):
        self.path = os.path.join(model_dir, "model.joblib")

    def load(self):
        self.model = joblib.load(self.path)

    def predict(self, inputs):
        return self.model.predict(np.asarray(inputs, dtype=float).reshape(-1, 4))
'''


@dataclass(frozen=True)
class Subject:
    title: str
    target: load.Target


def train(work: Path) -> tuple[bytes, str]:
    """The model (joblib bytes), trained by the sklearn template's own script, and the
    scikit-learn version that trained it (every peer gets the same)."""
    import sklearn

    out = work / "model"
    out.mkdir()
    subprocess.run(
        [sys.executable, str(TEMPLATE / "train.py"), str(out)], check=True, capture_output=True
    )
    return (out / "model.joblib").read_bytes(), sklearn.__version__


def first_class(url: str, headers: dict[str, str]) -> int:
    """The class a subject answers for the request (0: setosa), read from V2 outputs."""
    answer = httpx.post(url, content=REQUEST, headers={**JSON, **headers}, timeout=30)
    if answer.status_code != 200:
        raise BenchError(f"{url} answered {answer.status_code}: {answer.text[:300]}")
    return int(answer.json()["outputs"][0]["data"][0])


@contextlib.contextmanager
def subjects(opts: Options, model: bytes, sklearn: str) -> Iterator[list[Subject]]:
    """Everyone serving the model: the cell straight first (the baseline), then through
    /serve, then each peer asked for."""
    venv_of = {key: install(PEERS[key], opts.peers_dir, sklearn) for key in opts.peers}
    with server(opts, runtime="process") as srv, contextlib.ExitStack() as stack:
        record = deploy(srv, {"model": MODEL}, {"score.py": SCORE_PY, "model.joblib": model})
        cell = wait_ready(srv, record["deploy_id"])["cell"]
        auth = {"Authorization": f"Bearer {srv.token}"}
        found = [
            Subject("cell direct", load.Target(cell["url"] + INFER, "POST", REQUEST, JSON)),
            Subject(
                "cell via /serve",
                load.Target(f"{srv.url}/serve/{MODEL}{INFER}", "POST", REQUEST, {**JSON, **auth}),
            ),
        ]
        for key in opts.peers:
            peer = PEERS[key]
            folder = opts.work / "peers" / key
            url = stack.enter_context(serving(peer, venv_of[key], folder, model))
            found.append(Subject(peer.title, load.Target(url + INFER, "POST", REQUEST, JSON)))
        for subject in found:
            headers = {k: v for k, v in subject.target.headers.items() if k != "content-type"}
            if first_class(subject.target.url, headers) != 0:
                raise BenchError(f"{subject.title} does not call the row setosa")
        with profiled(opts, NAME, srv.pid, NAME):
            yield found


def run(opts: Options) -> list[Figure]:
    model, sklearn = train(opts.work)
    with subjects(opts, model, sklearn) as found:
        say("serving: " + ", ".join(s.title for s in found))
        client = ""

        def rps(target: load.Target) -> float:
            nonlocal client
            stats = load.run(target, connections=32, duration=opts.duration)
            client = stats.client
            return stats.rps

        def p50(target: load.Target) -> float:
            return load.run(target, connections=1, duration=opts.duration).p50_ms

        # interleave() rotates who goes first in each round
        throughput = interleave(opts.repeats, *(lambda t=s.target: rps(t) for s in found))
        latency = interleave(opts.repeats, *(lambda t=s.target: p50(t) for s in found))
    note = f"load from {client} on loopback, {opts.duration:g} s runs, same V2 request"
    base_rps, base_p50 = median(throughput[0]), median(latency[0])
    say(f"cell direct: {base_rps:.0f} req/s at 32 concurrent, p50 {base_p50:.2f} ms at 1")
    figures = []
    for subject, rates, times in zip(found[1:], throughput[1:], latency[1:], strict=True):
        figures.append(
            Figure(
                f"peers: {subject.title} / cell direct throughput, 32 concurrent",
                "report",
                median(rates) / base_rps,
                f"{median(rates):.0f} req/s",
                f"{base_rps:.0f} req/s",
                note,
            )
        )
        figures.append(
            Figure(
                f"peers: {subject.title} / cell direct p50, 1 concurrent",
                "report",
                median(times) / base_p50,
                f"{median(times):.2f} ms",
                f"{base_p50:.2f} ms",
                note,
            )
        )
    return figures
