"""HTTP load from its own process, bounded in time, to this machine only: 127.0.0.1, or
a cell's address on a bridge the server made here (the direct-to-cell baseline).

``wrk`` (Debian's package) where it is installed: it is C, so on a 2-core machine it
takes far less CPU from the server under test than any Python client would, and the
same for subject and baseline. Otherwise, and always for the async-prediction flow
(submit, then poll to ``succeeded``), this module's asyncio generator, run as
``python -m bench.load SPEC_JSON`` in a process of its own.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx


@dataclass(frozen=True)
class Target:
    """What each request (or flow) does; ``poll`` makes it the async-prediction flow:
    POST ``url``, then GET ``poll`` (``{id}`` = the answer's ``request_id``) until done."""

    url: str
    method: str = "GET"
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    poll: str | None = None
    poll_seconds: float = 0.005
    python: bool = False
    """Use the Python generator even where wrk is installed (to compare like with like)."""


@dataclass(frozen=True)
class LoadStats:
    client: str
    requests: int
    """Completed requests (or flows) that answered as they should."""
    errors: int
    seconds: float
    p50_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


class LoadError(RuntimeError):
    """The load run had error answers: its figure would not be honest."""


def on_this_machine(host: str) -> bool:
    """Loopback, or an address the kernel routes straight onto a cell bridge of this
    host (``ip route get`` asks the routing table; it sends nothing)."""
    if host in ("127.0.0.1", "localhost", "::1"):
        return True
    try:
        found = subprocess.run(
            ["ip", "-j", "route", "get", host], capture_output=True, text=True, timeout=5
        )
        route = json.loads(found.stdout)[0]
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return False
    return str(route.get("dev", "")).startswith(("dsc", "dse")) and "gateway" not in route


def run(target: Target, *, connections: int, duration: float) -> LoadStats:
    """Drive ``target`` with ``connections`` at once for ``duration`` seconds."""
    host = urlsplit(target.url).hostname
    if not on_this_machine(host or ""):
        raise ValueError(f"load goes to this machine only, not {host}")
    use_wrk = not target.python and target.poll is None and shutil.which("wrk") is not None
    generate = _wrk if use_wrk else _python
    stats = generate(target, connections, duration)
    if stats.errors or not stats.requests:
        raise LoadError(
            f"{stats.errors} errors in {stats.requests + stats.errors} requests to {target.url}"
        )
    return stats


LUA = """\
local f = io.open("%(body)s", "rb")
wrk.body = f:read("*a")
f:close()
wrk.method = "%(method)s"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %%d, "status_errors": %%d, "socket_errors": %%d, ' ..
    '"p50_us": %%.1f, "duration_us": %%d}\\n',
    summary.requests, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), summary.duration))
end
"""


def _wrk(target: Target, connections: int, duration: float) -> LoadStats:
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        body = Path(tmp) / "body"
        body.write_bytes(target.body)
        script = Path(tmp) / "script.lua"
        script.write_text(LUA % {"body": body, "method": target.method})
        args = ["wrk", "-t", str(min(2, connections)), "-c", str(connections)]
        args += ["-d", f"{max(1, round(duration))}s", "--timeout", "10s", "-s", str(script)]
        for name, value in target.headers.items():
            args += ["-H", f"{name}: {value}"]
        done = subprocess.run(
            [*args, target.url], capture_output=True, text=True, timeout=duration + 60
        )
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH ")), None)
    if done.returncode != 0 or line is None:
        raise LoadError(f"wrk failed: {done.stdout[-500:]} {done.stderr[-500:]}")
    out = json.loads(line[len("BENCH ") :])
    errors = out["status_errors"] + out["socket_errors"]
    return LoadStats(
        "wrk",
        out["requests"] - out["status_errors"],
        errors,
        out["duration_us"] / 1e6,
        out["p50_us"] / 1000,
    )


def _python(target: Target, connections: int, duration: float) -> LoadStats:
    spec = {
        "url": target.url,
        "method": target.method,
        "body": target.body.decode(),
        "headers": target.headers,
        "poll": target.poll,
        "poll_seconds": target.poll_seconds,
        "connections": connections,
        "duration": duration,
    }
    done = subprocess.run(
        [sys.executable, "-m", "bench.load", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=duration + 120,
    )
    if done.returncode != 0:
        raise LoadError(f"python load generator failed: {done.stderr[-800:]}")
    return LoadStats(**json.loads(done.stdout.splitlines()[-1]))


async def _generate(spec: dict[str, Any]) -> dict[str, Any]:
    """The generator's body: ``connections`` workers loop until the deadline."""
    latencies: list[float] = []
    errors = 0
    body = spec["body"].encode()
    limits = httpx.Limits(max_connections=spec["connections"])

    async def flow(client: httpx.AsyncClient) -> bool:
        resp = await client.request(spec["method"], spec["url"], content=body)
        if spec["poll"] is None:
            return resp.status_code < 400
        if resp.status_code != 202:
            return False
        url = spec["poll"].format(id=resp.json()["request_id"])
        while True:
            status = (await client.get(url)).json().get("status")
            if status in ("succeeded", "failed"):
                return status == "succeeded"
            await asyncio.sleep(spec["poll_seconds"])

    async with httpx.AsyncClient(headers=spec["headers"], timeout=30, limits=limits) as client:
        started = time.perf_counter()
        deadline = started + spec["duration"]

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    ok = await flow(client)
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1

        await asyncio.gather(*(worker() for _ in range(spec["connections"])))
        elapsed = time.perf_counter() - started
    return {
        "client": "python",
        "requests": len(latencies),
        "errors": errors,
        "seconds": elapsed,
        "p50_ms": statistics.median(latencies) * 1000 if latencies else 0.0,
    }


def main() -> None:
    print(json.dumps(asyncio.run(_generate(json.loads(sys.argv[1])))))


if __name__ == "__main__":
    main()
