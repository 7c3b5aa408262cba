"""4. scale: the control plane with many records and running cells.

With ``--records`` deployment records (1,000) of which ``--cells`` (50) have running
cells: ``GET /api/v1/deployments/{id}`` throughput divided by ``GET /health`` of the same
server, 32 concurrent (goal >= 0.5); and the server's idle CPU, from
``/proc/<pid>/stat`` over ``--idle`` seconds (30) while the reconciler watches the cells'
health, as a share of one core (goal <= 1%, issue 17).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

from bench import load
from bench.common import (
    Figure,
    Options,
    Server,
    deploy,
    interleave,
    median,
    profiled,
    say,
    server,
    wait_ready,
)
from tests.helpers import SCORE_PY

NAME = "scale"
CONNECTIONS = 32
SETTLE_SECONDS = 3.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process, all its threads."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def populate(srv: Server, records: int, cells: int) -> list[str]:
    """``records`` deployments, the last ``cells`` of them running; their ids, running
    last. Stopped ones spread over 20 models, running ones each on its own model (a new
    version of a running model would replace it)."""
    files = {"score.py": SCORE_PY}

    def stopped(i: int) -> str:
        return str(deploy(srv, {"model": f"bench-rec-{i % 20}"}, files, start=False)["deploy_id"])

    def running(i: int) -> str:
        return str(deploy(srv, {"model": f"bench-cell-{i}"}, files)["deploy_id"])

    with ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(stopped, range(max(0, records - cells))))
        started = list(pool.map(running, range(cells)))
    for deploy_id in started:
        wait_ready(srv, deploy_id)
    return ids + started


def run(opts: Options) -> list[Figure]:
    with server(opts) as srv:
        t0 = time.monotonic()
        ids = populate(srv, opts.records, opts.cells)
        say(f"{len(ids)} records, {opts.cells} cells ready in {time.monotonic() - t0:.0f} s")
        record = load.Target(
            f"{srv.url}/api/v1/deployments/{ids[-1]}",
            headers={"Authorization": f"Bearer {srv.token}"},
        )
        health = load.Target(f"{srv.url}/health")
        runs: list[load.LoadStats] = []

        def rps(target: load.Target) -> float:
            runs.append(load.run(target, connections=CONNECTIONS, duration=opts.duration))
            return runs[-1].rps

        with profiled(opts, NAME, srv.pid, "scale-requests"):
            by_health, by_record = interleave(
                opts.repeats, lambda: rps(health), lambda: rps(record)
            )
        time.sleep(SETTLE_SECONDS)  # let the last requests' work finish
        with profiled(opts, NAME, srv.pid, "scale-idle"):
            cpu0, wall0 = cpu_seconds(srv.pid), time.monotonic()
            time.sleep(opts.idle)
            share = (cpu_seconds(srv.pid) - cpu0) / (time.monotonic() - wall0)
    return [
        Figure(
            f"scale: GET deployment / GET /health throughput, {CONNECTIONS} concurrent",
            ">= 0.5",
            median(by_record) / median(by_health),
            f"{median(by_record):.0f} req/s",
            f"{median(by_health):.0f} req/s",
            f"{len(ids)} records, {opts.cells} cells; load from {runs[0].client}",
        ),
        Figure(
            "scale: idle server CPU, share of one core",
            "<= 0.01",
            share,
            f"{share * opts.idle:.2f} CPU s",
            f"{opts.idle:g} s",
            f"{opts.cells} cells under health watch",
        ),
    ]
