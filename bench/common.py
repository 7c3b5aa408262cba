"""What every benchmark shares: options, figures, interleaved medians, a real server
process, uploads, Docker clean-up and the py-spy profile of the server."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.helpers import SCORE_PY, bearer, multipart, server_process

PENDING = "not available yet"
JSON = {"content-type": "application/json"}
BODY_1KB = json.dumps({"inputs": "x" * 1000}).encode()
"""The proxy and async benchmarks' request: 1 KB of JSON."""
"""What a figure says instead of a number while the route it needs is missing."""
TEST_LABELS = {"deployserver.test": "1"}
"""Labels of every container a benchmark starts itself (the server labels its own)."""
POLL_SECONDS = 0.02
"""How often a benchmark polls for 'ready' or a first 200: the same on both sides."""


class BenchError(RuntimeError):
    """A benchmark could not produce an honest figure (an error answer, a failed cell)."""


@dataclass
class Options:
    """The run's sizes and places; ``--quick`` picks small ones."""

    quick: bool
    size: int
    """Bytes of the upload benchmark's file."""
    cells: int
    """Running cells of the control-plane scale benchmark."""
    records: int
    """Deployment records of the control-plane scale benchmark."""
    duration: float
    """Seconds of each load run."""
    repeats: int
    """Interleaved subject/baseline pairs per figure."""
    idle: float
    """Seconds of the idle-CPU window."""
    cold: bool
    """Also measure deploy-to-ready with an environment image built (a first deploy)."""
    profile: str | None
    """The benchmark whose server runs under py-spy, if any."""
    results: Path
    work: Path
    peers: tuple[str, ...] = ()
    """The other servers the peers benchmark installs and measures (none: the cell only)."""
    peers_dir: Path = Path("bench/.peers")
    """Where the peers' virtualenvs live between runs."""


@dataclass
class Figure:
    """One ratio against its goal (``">= 0.9"``, ``"<= 1.2"``, or ``"report"`` for a
    figure with none), with the medians it comes from; ``ratio`` is None when it could
    not be measured (``note`` says why)."""

    name: str
    goal: str
    ratio: float | None
    subject: str = ""
    baseline: str = ""
    note: str = ""

    @property
    def met(self) -> bool | None:
        if self.ratio is None or self.goal == "report":
            return None
        op, value = self.goal.split()
        return self.ratio >= float(value) if op == ">=" else self.ratio <= float(value)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "met": self.met}

    def line(self) -> str:
        ratio = PENDING if self.ratio is None else f"{self.ratio:.3f}"
        verdict = {True: "met", False: "MISSED", None: "-"}[self.met]
        parts = [f"{self.name}: {ratio} (goal {self.goal}, {verdict})"]
        if self.subject or self.baseline:
            parts.append(f"subject {self.subject} / baseline {self.baseline}")
        if self.note:
            parts.append(self.note)
        return "; ".join(parts)


def pending(name: str, goal: str, why: str = PENDING) -> Figure:
    return Figure(name, goal, None, note=why)


def say(message: str) -> None:
    print(f"  {message}", flush=True)


def median(values: list[float]) -> float:
    return statistics.median(values)


def interleave(repeats: int, *sides: Callable[[], float], rotate: bool = True) -> list[list[float]]:
    """Run each side ``repeats`` times, taking turns (and rotating who goes first, so
    neither side always follows the other); one list of measurements per side."""
    out: list[list[float]] = [[] for _ in sides]
    for r in range(repeats):
        order = list(range(len(sides)))
        if rotate:
            order = order[r % len(order) :] + order[: r % len(order)]
        for i in order:
            out[i].append(sides[i]())
    return out


def seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def mib(value: float) -> str:
    return f"{value / 2**20:.1f} MiB"


# the server ------------------------------------------------------------------------
@dataclass
class Server:
    """A running ``deployserver serve`` subprocess and an admin client for it."""

    url: str
    pid: int
    token: str
    data_dir: Path
    client: httpx.Client


@contextlib.contextmanager
def server(
    opts: Options, runtime: str = "docker", env: dict[str, str] | None = None
) -> Iterator[Server]:
    """A real server process on its own data folder, with its product defaults (but for
    ``env``); every cell it started is removed afterwards (its cells outlive it by design)."""
    data_dir = Path(tempfile.mkdtemp(prefix="server-", dir=opts.work)) / "data"
    env = {"DEPLOYSERVER_RUNTIME": runtime, **(env or {})}
    try:
        with (
            server_process(data_dir, env) as (url, proc, token),
            httpx.Client(base_url=url, headers=bearer(token), timeout=300) as client,
        ):
            yield Server(url, proc.pid, token, data_dir, client)
    finally:
        if runtime == "docker":
            remove_cells(data_dir)
        shutil.rmtree(data_dir.parent, ignore_errors=True)


def deploy(
    srv: Server, metadata: dict[str, Any], files: dict[str, bytes], *, start: bool = True
) -> dict[str, Any]:
    """Upload a package; its 202 record."""
    resp = srv.client.post(
        "/api/v1/deployments",
        params={"start": str(start).lower()},
        files=multipart(metadata, files),
    )
    if resp.status_code != 202:
        raise BenchError(f"upload refused: {resp.status_code} {resp.text[:300]}")
    return dict(resp.json())


def wait_ready(srv: Server, deploy_id: str, timeout: float = 300.0) -> dict[str, Any]:
    """Poll until the deployment is ready; its record. A failed one is a BenchError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record: dict[str, Any] = srv.client.get(f"/api/v1/deployments/{deploy_id}").json()
        if record["status"] == "ready":
            return record
        if record["status"] == "failed":
            raise BenchError(f"{deploy_id} failed: {record['status_reason']}")
        time.sleep(POLL_SECONDS)
    raise BenchError(f"{deploy_id} not ready in {timeout:g} s")


def ready_noop(srv: Server, model: str) -> dict[str, Any]:
    """Deploy the no-op model (it answers its inputs) and wait until it is ready."""
    record = deploy(srv, {"model": model}, {"score.py": SCORE_PY})
    return wait_ready(srv, record["deploy_id"])


def delete(srv: Server, deploy_id: str) -> None:
    resp = srv.client.delete(f"/api/v1/deployments/{deploy_id}")
    if resp.status_code not in (202, 204):
        raise BenchError(f"delete refused: {resp.status_code} {resp.text[:300]}")


def missing_routes(srv: Server, *paths: str) -> list[str]:
    """Which of ``paths`` answer a 1 KB JSON POST with 404 although their model exists
    and is ready: the route itself is not there yet (this branch predates it)."""
    missing = [
        p for p in paths if srv.client.post(p, content=BODY_1KB, headers=JSON).status_code == 404
    ]
    if missing:
        say(f"404 from {', '.join(missing)}: {PENDING} on this branch")
    return missing


# Docker ------------------------------------------------------------------------------
def docker_client() -> Any:
    import docker

    return docker.from_env(timeout=120)


def remove_cells(data_dir: Path) -> None:
    """Remove every container of the server that used ``data_dir`` (by its instance)."""
    instance_file = data_dir / "instance-id"
    if not instance_file.exists():
        return
    instance = instance_file.read_text().strip()
    client = docker_client()
    try:
        found = client.containers.list(
            all=True, filters={"label": f"deployserver.instance={instance}"}
        )
        for container in found:
            with contextlib.suppress(Exception):
                container.remove(force=True)
    finally:
        client.close()


# profiles ----------------------------------------------------------------------------
@contextlib.contextmanager
def profiled(opts: Options, bench: str, pid: int, label: str) -> Iterator[None]:
    """Sample the server with py-spy during the block when ``--profile`` names ``bench``.

    py-spy rather than pyinstrument: it attaches to the running server and sees every
    thread, and the sync routes and database work run in worker threads."""
    if opts.profile != bench:
        yield
        return
    spy = shutil.which("py-spy")
    if spy is None:
        raise BenchError("--profile needs py-spy: pip install -e '.[bench]'")
    raw = opts.results / f"profile-{label}.txt"
    proc = subprocess.Popen(
        [spy, "record", "--pid", str(pid), "--nonblocking", "--format", "raw", "-o", str(raw)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(1.0)  # attached before the measured part starts
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        if not raw.exists():
            print(f"  py-spy wrote no profile: {err.decode(errors='replace')[-500:]}")
        else:
            summary = summarize_profile(raw)
            raw.with_suffix(".top.txt").write_text(summary)
            say(f"profile: {raw} (collapsed stacks), {raw.with_suffix('.top.txt')}")
            print("\n".join("    " + line for line in summary.splitlines()[:18]), flush=True)


def summarize_profile(raw: Path, top: int = 25) -> str:
    """The functions with the most samples on CPU: on top of the stack (self), anywhere
    in it (total), and the same for deployserver's own, from py-spy's collapsed stacks.
    Threads parked in a wait (which py-spy's --nonblocking mode counts) are left out."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = waiting = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_function(f) for f in stack.split(";")]
        if frames[-1].split(" (")[0] in WAITING:
            waiting += int(count)
            continue
        samples += int(count)
        own[frames[-1]] += int(count)
        for name in set(frames):
            total[name] += int(count)
    ours = Counter({k: v for k, v in total.items() if "deployserver/" in k})
    lines = [f"{samples} samples on CPU ({waiting} of waiting threads left out)"]
    for title, counts in (("self", own), ("total", total), ("deployserver, total", ours)):
        lines.append(f"{title}:")
        lines += [f"  {100 * n / max(samples, 1):5.1f}%  {k}" for k, n in counts.most_common(top)]
    return "\n".join(lines) + "\n"


WAITING = {"Condition.wait", "Event.wait", "wait", "select", "EpollSelector.select", "sleep"}


def _function(frame: str) -> str:
    """``func (path/to/file.py:12)`` -> ``func (file.py)``: one line per function."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    short = "/".join(Path(path).parts[-2:]) if path else "?"
    return f"{name} ({short})"
