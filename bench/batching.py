"""6. batching: a vectorised model with adaptive batching against the same without.

The model: a numpy matrix product (each request one row of 128 features, times a
128x128 matrix) behind a fixed 1 ms of Python CPU per call, what a framework's dispatch
costs. Two cells of the same script, one with metadata ``"batching": {"max_batch_size":
32, "max_latency_ms": 5}``, one without, on the Docker runtime; load goes straight to
each cell's ``/predict`` from a separate process (wrk where installed). Figures, batched
over unbatched: throughput at 32 concurrent (goal >= 2) and the median latency at 1
concurrent (goal <= 1.1: a lone request is not held), interleaved.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from bench import load
from bench.common import (
    JSON,
    BenchError,
    Figure,
    Options,
    deploy,
    docker_client,
    interleave,
    median,
    profiled,
    say,
    server,
    wait_ready,
)

NAME = "batching"
FEATURES = 128
BATCHING = {"max_batch_size": 32, "max_latency_ms": 5}
THROUGHPUT = "batching: batched / unbatched throughput, 32 concurrent"
LATENCY = "batching: batched / unbatched p50, 1 concurrent"

SCORE_PY = b'''
"""A vectorised model: rows times a matrix, behind a fixed CPU cost per call."""

import time

import numpy as np


class Model:
    def __init__(self, model_dir, batched=False, features=128, overhead_ms=1.0):
        self.batched = batched
        self.weights = np.random.default_rng(7).standard_normal((features, features))
        self.overhead = overhead_ms / 1000

    def _dispatch(self):
        """The per-call cost (argument checks, a framework's dispatch): CPU time of
        this thread, so calls in other threads do not share it."""
        end = time.thread_time() + self.overhead
        while time.thread_time() < end:
            pass

    def predict(self, inputs):
        batch = inputs if self.batched else [inputs]
        rows = [np.asarray(x, dtype=float).reshape(-1, self.weights.shape[0]) for x in batch]
        self._dispatch()
        scores = np.concatenate(rows) @ self.weights
        best = scores.max(axis=1)
        answers = np.split(best, np.cumsum([len(r) for r in rows])[:-1])
        return answers if self.batched else answers[0]
'''


def body() -> bytes:
    """One row of features, the same in every request."""
    row = [round((i % 17) / 17 - 0.5, 4) for i in range(FEATURES)]
    return json.dumps({"inputs": [row]}).encode()


def cell_pid(cell_id: str) -> int:
    """The host pid of a Docker cell's process (py-spy attaches to it)."""
    client = docker_client()
    try:
        return int(client.containers.get(cell_id).attrs["State"]["Pid"])
    finally:
        client.close()


def run(opts: Options) -> list[Figure]:
    files = {"score.py": SCORE_PY}
    common: dict[str, Any] = {"requirements": ["numpy"]}
    with server(opts) as srv:
        plain = deploy(srv, {"model": "bench-unbatched", **common}, files)
        batched = deploy(
            srv,
            {
                "model": "bench-batched",
                **common,
                "parameters": {"batched": True},
                "batching": BATCHING,
            },
            files,
        )
        cells = [wait_ready(srv, r["deploy_id"])["cell"] for r in (plain, batched)]
        request = body()
        answers = [httpx.post(f"{c['url']}/predict", content=request, headers=JSON) for c in cells]
        if any(a.status_code != 200 for a in answers) or answers[0].json() != answers[1].json():
            raise BenchError(f"the two cells answer differently: {[a.text for a in answers]}")
        unbatched_t, batched_t = (
            load.Target(f"{c['url']}/predict", "POST", request, JSON) for c in cells
        )
        runs: list[load.LoadStats] = []

        def measure(target: load.Target, connections: int) -> load.LoadStats:
            runs.append(load.run(target, connections=connections, duration=opts.duration))
            return runs[-1]

        pid = cell_pid(cells[1]["id"]) if opts.profile == NAME else 0
        with profiled(opts, NAME, pid, NAME):
            u32, b32 = interleave(
                opts.repeats,
                lambda: measure(unbatched_t, 32).rps,
                lambda: measure(batched_t, 32).rps,
            )
            u1, b1 = interleave(
                opts.repeats,
                lambda: measure(unbatched_t, 1).p50_ms,
                lambda: measure(batched_t, 1).p50_ms,
            )
        sizes = batch_sizes(cells[1]["url"])
        if sizes:
            say(f"batched cell: {sizes}")
    client = f"load from {runs[0].client} straight to each cell, {opts.duration:g} s runs"
    return [
        Figure(
            THROUGHPUT,
            ">= 2",
            median(b32) / median(u32),
            f"{median(b32):.0f} req/s",
            f"{median(u32):.0f} req/s",
            client,
        ),
        Figure(
            LATENCY,
            "<= 1.1",
            median(b1) / median(u1),
            f"{median(b1):.2f} ms",
            f"{median(u1):.2f} ms",
            client,
        ),
    ]


def batch_sizes(url: str) -> str:
    """The batched cell's own account: calls of predict and requests per call."""
    text = httpx.get(f"{url}/metrics").text
    values = {}
    for line in text.splitlines():
        if line.startswith(("cell_batch_size_count", "cell_batch_size_sum")):
            name, value = line.split()
            values[name] = float(value)
    calls = values.get("cell_batch_size_count", 0.0)
    if not calls:
        return ""
    mean = values.get("cell_batch_size_sum", 0.0) / calls
    return f"{calls:.0f} calls of predict, {mean:.1f} requests per call on average"
