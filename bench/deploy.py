"""2. deploy: a small sklearn model from upload to serving, against a bare docker run.

Subject: from the client's start of the upload until the record says ``ready``, and
until the first 200 from ``/serve/{model}/predict`` (once that route exists). Baseline:
``docker run`` of the very image the server's cell ran (the environment image of the
sklearn template's requirements), with the same folder mounted read-only and the
runtime's own options (``container_options``: hardening, limits, command, env), until
its first 200 on ``/predict``. Both sides poll every 20 ms. The environment image is
cached for these; the cold figure is one deploy whose requirements are unique to the run
(``joblib!=0.0.<nonce>``), so its environment image is built, as a first deploy's is.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import docker.errors
import httpx

from bench.common import (
    POLL_SECONDS,
    TEST_LABELS,
    BenchError,
    Figure,
    Options,
    Server,
    delete,
    deploy,
    docker_client,
    interleave,
    median,
    missing_routes,
    pending,
    profiled,
    say,
    seconds,
    server,
    wait_ready,
)
from deployserver.config import Settings
from deployserver.runtime.base import CellSpec
from deployserver.runtime.docker import container_options

NAME = "deploy"
TEMPLATE = Path(__file__).resolve().parent.parent / "templates" / "sklearn"
DEADLINE = 600.0


def sklearn_package(work: Path) -> tuple[dict[str, Any], dict[str, bytes], bytes]:
    """(metadata, files, request body) of the sklearn template, its model trained now."""
    out = work / "sklearn"
    out.mkdir(exist_ok=True)
    subprocess.run(
        [sys.executable, str(TEMPLATE / "train.py"), str(out)], check=True, capture_output=True
    )
    files = {
        "score.py": (TEMPLATE / "score.py").read_bytes(),
        "model.joblib": (out / "model.joblib").read_bytes(),
    }
    meta = json.loads((TEMPLATE / "metadata.json").read_text())
    return meta, files, (TEMPLATE / "request.json").read_bytes()


def first_200(url: str, body: bytes, headers: dict[str, str], started: float) -> float:
    """Seconds from ``started`` until POST ``url`` first answers 200."""
    with httpx.Client(timeout=10, headers={"content-type": "application/json", **headers}) as c:
        while time.perf_counter() - started < DEADLINE:
            try:
                if c.post(url, content=body).status_code == 200:
                    return time.perf_counter() - started
            except httpx.TransportError:
                pass
            time.sleep(POLL_SECONDS)
    raise BenchError(f"no 200 from {url} in {DEADLINE:g} s")


def timed_deploy(
    srv: Server, meta: dict[str, Any], files: dict[str, bytes], body: bytes, serve: bool
) -> tuple[float, float | None, dict[str, Any]]:
    """(seconds to ready, seconds to the first 200 through /serve or None, the record)."""
    started = time.perf_counter()
    deploy_id = deploy(srv, meta, files)["deploy_id"]
    record = wait_ready(srv, deploy_id, DEADLINE)
    ready = time.perf_counter() - started
    served = None
    if serve:
        url = f"{srv.url}/serve/{meta['model']}/predict"
        served = first_200(url, body, {"Authorization": f"Bearer {srv.token}"}, started)
    return ready, served, record


def events(srv: Server, record: dict[str, Any]) -> list[str]:
    """The deployment's lifecycle events as ``+seconds kind: message`` lines."""
    created = datetime.fromisoformat(record["created_at"])
    found = srv.client.get(f"/api/v1/deployments/{record['deploy_id']}/events").json()
    return [
        f"+{(datetime.fromisoformat(e['at']) - created).total_seconds():5.2f} s "
        f"{e['kind']}: {e['message']}"
        for e in found
    ]


def bare_run(image: str, options: dict[str, Any], body: bytes, n: int) -> float:
    """Seconds from ``docker run`` to the container's first 200 on /predict."""
    client = docker_client()
    started = time.perf_counter()
    # the plain way: Docker's default bridge and a port published on loopback (the
    # server's cells get a network of their own instead, and that cost is in its figure)
    container = client.containers.run(
        image, detach=True, labels=TEST_LABELS, name=f"ds-bench-bare-{n}-{time.time_ns()}",
        ports={"8080/tcp": ("127.0.0.1", None)}, **options,
    )  # fmt: skip
    try:
        container.reload()
        port = container.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"]
        return first_200(f"http://127.0.0.1:{port}/predict", body, {}, started)
    finally:
        with contextlib.suppress(docker.errors.NotFound):  # gone already: nothing to remove
            container.remove(force=True)
        client.close()


def cell_image(record: dict[str, Any]) -> str:
    client = docker_client()
    try:
        return str(client.containers.get(record["cell"]["id"]).attrs["Config"]["Image"])
    finally:
        client.close()


def run(opts: Options) -> list[Figure]:
    meta, files, body = sklearn_package(opts.work)
    with server(opts) as srv:
        say("warm-up deploy (builds the environment image if it is not cached)")
        ready, _, record = timed_deploy(srv, {**meta, "model": "bench-warm"}, files, body, False)
        say(f"warm-up ready in {seconds(ready)}")
        serve = not missing_routes(srv, "/serve/bench-warm/predict")
        image = cell_image(record)
        deploy_id = record["deploy_id"]
        folder = (srv.data_dir / "deployments" / deploy_id).resolve()
        spec = CellSpec(deploy_id, "bench-warm", 1, folder, "", record["metadata"])
        options = container_options(Settings(), spec)
        srv.client.post(f"/api/v1/deployments/{deploy_id}/stop")
        subject: list[tuple[float, float | None]] = []
        timeline: list[str] = []
        rounds = iter(range(10**6))

        def one_deploy() -> float:
            ready, served, rec = timed_deploy(
                srv, {**meta, "model": f"bench-{next(rounds)}"}, files, body, serve
            )
            timeline[:] = events(srv, rec)
            delete(srv, rec["deploy_id"])
            subject.append((ready, served))
            return ready

        with profiled(opts, NAME, srv.pid, NAME):
            bare, _ = interleave(
                opts.repeats, lambda: bare_run(image, options, body, next(rounds)), one_deploy
            )
        say("where the last deploy's time went (server events, from its record's creation):")
        for line in timeline:
            say(f"  {line}")
        cold = cold_deploy(srv, meta, files, body, serve) if opts.cold else None
    return figures(bare, subject, cold, serve)


def cold_deploy(
    srv: Server, meta: dict[str, Any], files: dict[str, bytes], body: bytes, serve: bool
) -> float:
    """One deploy that builds its environment image; the image is removed afterwards."""
    nonce = time.time_ns()
    cold_meta = {
        **meta,
        "model": "bench-cold",
        "requirements": [*meta["requirements"], f"joblib!=0.0.{nonce}"],
    }
    say("cold deploy: building a new environment image")
    ready, served, record = timed_deploy(srv, cold_meta, files, body, serve)
    image = cell_image(record)
    delete(srv, record["deploy_id"])
    client = docker_client()
    try:
        client.images.remove(image, force=True)
    finally:
        client.close()
    return served if served is not None else ready


def figures(
    bare: list[float], subject: list[tuple[float, float | None]], cold: float | None, serve: bool
) -> list[Figure]:
    base = median(bare)
    ready = median([r for r, _ in subject])
    say(f"bare docker run to first 200: {[seconds(b) for b in bare]}")
    say(f"upload to ready: {[seconds(r) for r, _ in subject]}")
    out = [
        Figure(
            "deploy: upload-to-ready / bare docker run-to-first-200 (cached)",
            "<= 1.2",
            ready / base,
            seconds(ready),
            seconds(base),
            "until the record says ready; the /serve end is the next figure",
        )
    ]
    served_name = "deploy: upload-to-first-200 via /serve / bare docker run (cached)"
    if serve:
        served = median([s for _, s in subject if s is not None])
        out.append(Figure(served_name, "<= 1.2", served / base, seconds(served), seconds(base)))
    else:
        out.append(pending(served_name, "<= 1.2"))
    if cold is not None:
        end = "first 200 via /serve" if serve else "ready"
        out.append(
            Figure(
                f"deploy: cold (environment image built) upload-to-{end} / bare docker run",
                "report",
                cold / base,
                seconds(cold),
                seconds(base),
                "one deploy; its wheels come from the package index",
            )
        )
    return out
