"""8. replicas: two replicas against one, waking a paused and a scaled-to-zero model, and
the requests lost across a replica kill and a version switch.

Throughput: /serve on a CPU-bound model with 2 replicas / with 1 (goal >= 1.6 on 2
cores), both deployed side by side and measured in turns at 8 concurrent. Wake from
paused: seconds from a request to a paused model until its answer (goal <= 0.1).
Wake from zero: a request to a model scaled to zero until its first 200 / a bare
``docker run`` of the same image and options until its first 200 (goal <= 1.2). Lost
requests: 32 clients on a model with 2 replicas while one replica is killed
(``docker kill``: SIGKILL), and then while a new version replaces it (goal 0 failed each).
A request a replica was answering when killed goes once more to the other replica (the
default ``scaling.resend_dropped``); those sent to it after are refused and sent there too.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import aiohttp
import docker.errors

from bench import load
from bench.common import (
    JSON,
    BenchError,
    Figure,
    Options,
    Server,
    deploy,
    docker_client,
    interleave,
    median,
    say,
    seconds,
    server,
    wait_ready,
)
from bench.deploy import bare_run, cell_image
from deployserver.config import Settings
from deployserver.runtime.base import CellSpec
from deployserver.runtime.docker import container_options
from tests.helpers import SCORE_PY

NAME = "replicas"
CPU_BOUND = b"""
class Model:
    def __init__(self, model_dir, **parameters):
        self.rounds = int(parameters.get("rounds", 200000))

    def load(self):
        pass

    def predict(self, inputs, **kwargs):
        total = 0
        for i in range(self.rounds):
            total += i * i % 7
        return total
"""
ENV = {
    "DEPLOYSERVER_MIN_IDLE_SECONDS": "1",
    "DEPLOYSERVER_ZERO_AFTER_PAUSED": "3600",
}
THROUGHPUT = "replicas: /serve throughput with 2 replicas / 1 replica, CPU-bound, 8 concurrent"
PAUSED = "replicas: wake from paused, first answer's latency (seconds)"
ZERO = "replicas: wake from zero to first 200 / bare docker run to first 200"
LOST_KILL = "replicas: failed requests across a replica kill (SIGKILL), 32 concurrent"
LOST_SWITCH = "replicas: failed requests across a version switch, 32 concurrent"
BODY = b'{"inputs": 1}'


def run(opts: Options) -> list[Figure]:
    with server(opts, env=ENV) as srv:
        figures = [throughput(opts, srv), wake_paused(opts, srv), *lost_requests(opts, srv)]
    with server(opts, env={**ENV, "DEPLOYSERVER_ZERO_AFTER_PAUSED": "0.5"}) as srv:
        figures.append(wake_zero(opts, srv))
    return figures


def _ready(srv: Server, model: str, files: dict[str, bytes], **meta: Any) -> dict[str, Any]:
    return wait_ready(srv, deploy(srv, {"model": model, **meta}, files)["deploy_id"])


def _record(srv: Server, deploy_id: str) -> dict[str, Any]:
    return dict(srv.client.get(f"/api/v1/deployments/{deploy_id}").json())


def _until(check: Any, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise BenchError(f"{what} not reached in {timeout:g} s")
        time.sleep(0.02)


def _auth(srv: Server) -> dict[str, str]:
    return {**JSON, "Authorization": f"Bearer {srv.token}"}


def throughput(opts: Options, srv: Server) -> Figure:
    files = {"score.py": CPU_BOUND}
    one = _ready(srv, "bench-cpu1", files)
    two = _ready(srv, "bench-cpu2", files, scaling={"min_replicas": 2})
    if _record(srv, two["deploy_id"])["replicas"]["ready"] != 2:
        raise BenchError("the 2-replica model has fewer ready replicas")

    def rps(model: str) -> float:
        target = load.Target(f"{srv.url}/serve/{model}/predict", "POST", BODY, _auth(srv))
        return load.run(target, connections=8, duration=opts.duration).rps

    r1, r2 = interleave(opts.repeats, lambda: rps("bench-cpu1"), lambda: rps("bench-cpu2"))
    for record in (one, two):
        srv.client.post(f"/api/v1/deployments/{record['deploy_id']}/stop")
    return Figure(
        THROUGHPUT,
        ">= 1.6",
        median(r2) / median(r1),
        f"{median(r2):.0f} req/s",
        f"{median(r1):.0f} req/s",
        "each replica a cell of 1 CPU",
    )


def _serve_once(srv: Server, model: str) -> float:
    started = time.perf_counter()
    resp = srv.client.post(f"/serve/{model}/predict", content=BODY, headers=JSON)
    if resp.status_code != 200:
        raise BenchError(f"wake answered {resp.status_code}: {resp.text[:300]}")
    return time.perf_counter() - started


def wake_paused(opts: Options, srv: Server) -> Figure:
    record = _ready(
        srv, "bench-paused", {"score.py": SCORE_PY}, scaling={"min_replicas": 0, "idle_seconds": 1}
    )
    deploy_id = record["deploy_id"]
    woken: list[float] = []
    warm: list[float] = []
    for _ in range(opts.repeats):
        _until(lambda: _record(srv, deploy_id)["replicas"]["tier"] == "paused", "paused")
        time.sleep(0.2)  # frozen by now, not only marked
        woken.append(_serve_once(srv, "bench-paused"))
        warm.append(_serve_once(srv, "bench-paused"))
    srv.client.post(f"/api/v1/deployments/{deploy_id}/stop")
    say(f"wake from paused: {[seconds(w) for w in woken]}, then warm {[seconds(w) for w in warm]}")
    return Figure(
        PAUSED,
        "<= 0.1",
        median(woken),
        seconds(median(woken)),
        f"{seconds(median(warm))} warm",
        "the first request's whole answer, through /serve",
    )


def wake_zero(opts: Options, srv: Server) -> Figure:
    record = _ready(
        srv, "bench-zero", {"score.py": SCORE_PY}, scaling={"min_replicas": 0, "idle_seconds": 1}
    )
    deploy_id = record["deploy_id"]
    image = cell_image(record)
    folder = (srv.data_dir / "deployments" / deploy_id).resolve()
    spec = CellSpec(deploy_id, "bench-zero", 1, folder, "", record["metadata"])
    options = container_options(Settings(), spec)
    rounds = iter(range(10**6))

    def from_zero() -> float:
        _until(lambda: _record(srv, deploy_id)["replicas"]["cells"] == [], "scaled to zero")
        return _serve_once(srv, "bench-zero")

    def bare() -> float:
        return bare_run(image, options, BODY, next(rounds))

    bare_runs, woken = interleave(opts.repeats, bare, from_zero)
    say(f"wake from zero: {[seconds(w) for w in woken]}, bare {[seconds(b) for b in bare_runs]}")
    return Figure(ZERO, "<= 1.2", median(woken) / median(bare_runs), seconds(median(woken)),
                  seconds(median(bare_runs)), "the held request's 200, through /serve")  # fmt: skip


def lost_requests(opts: Options, srv: Server) -> list[Figure]:
    """32 clients throughout; one replica killed (SIGKILL), then a new version."""
    files = {"score.py": SCORE_PY}
    first = _ready(srv, "bench-lost", files, scaling={"min_replicas": 2})
    victim = first["replicas"]["cells"][1]["id"]
    phases: dict[str, dict[str, int]] = {"steady": {}, "kill": {}, "switch": {}}
    now = ["steady"]
    stop = threading.Event()
    hammer = threading.Thread(target=lambda: asyncio.run(_hammer(srv, phases, now, stop)))
    hammer.start()
    try:
        time.sleep(max(1.0, opts.duration / 3))
        now[0] = "kill"
        client = docker_client()
        try:
            client.containers.get(victim).kill()
        except docker.errors.NotFound as exc:
            raise BenchError("the replica to kill is gone already") from exc
        finally:
            client.close()

        def replaced() -> bool:
            cells = _record(srv, first["deploy_id"])["replicas"]["cells"]
            return len(cells) == 2 and victim not in {c["id"] for c in cells}

        _until(replaced, "the killed replica replaced")
        time.sleep(max(1.0, opts.duration / 3))
        now[0] = "switch"
        _ready(srv, "bench-lost", files, scaling={"min_replicas": 2})
        _until(lambda: _record(srv, first["deploy_id"])["status"] == "stopped", "old one stopped")
        time.sleep(1.0)
    finally:
        stop.set()
        hammer.join()
    out = []
    for phase, name in (("kill", LOST_KILL), ("switch", LOST_SWITCH)):
        outcome = phases[phase]
        failed = sum(n for status, n in outcome.items() if status != "200")
        say(f"answers across the {phase}: {dict(sorted(outcome.items()))}")
        out.append(
            Figure(name, "<= 0", float(failed), f"{failed} failed", f"{sum(outcome.values())} sent")
        )
    return out


async def _hammer(
    srv: Server, phases: dict[str, dict[str, int]], now: list[str], stop: threading.Event
) -> None:
    """32 clients POSTing to the model until ``stop``; answers counted by status in the
    phase they were sent in (``now[0]``)."""
    url = f"{srv.url}/serve/bench-lost/predict"
    connector = aiohttp.TCPConnector(limit=32)
    async with aiohttp.ClientSession(connector=connector, headers=_auth(srv)) as session:

        async def client() -> None:
            while not stop.is_set():
                outcome = phases[now[0]]
                try:
                    async with session.post(url, data=BODY) as resp:
                        await resp.read()
                        key = str(resp.status)
                        if resp.status != 200:
                            key += f" {(await resp.json()).get('error', {}).get('code')}"
                except aiohttp.ClientError as exc:
                    key = type(exc).__name__
                outcome[key] = outcome.get(key, 0) + 1

        await asyncio.gather(*(client() for _ in range(32)))
