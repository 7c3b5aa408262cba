"""1. upload: a big file's upload against cp + sync, and the server's memory meanwhile.

``cp`` + ``sync`` of a big file into the same filesystem, divided by the
time of uploading it (client start to 202, the server's fsync included); and the
server's peak RSS growth during the upload divided by the file size, alone and with 4
uploads at once. ``start=false``: no cell starts, only the upload path is measured.

Two clients stream the file from disk: curl (``-F files=@big.bin``) and httpx (a file
object, which it sends in 64 KiB chunks). Their CPU time is reported too: on 2 cores the
client competes with the server, and ``cp`` has no client at all, so the fair client is
the one that takes the least CPU (curl, measured: see the README).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import time
from pathlib import Path

import httpx

from bench.common import (
    BenchError,
    Figure,
    Options,
    Server,
    delete,
    interleave,
    median,
    mib,
    profiled,
    say,
    seconds,
    server,
)
from tests.helpers import SCORE_PY, peak_rss_bytes, status_bytes

NAME = "upload"
CONCURRENT = 4
BLOCK = bytes(range(256)) * 4096


def make_file(path: Path, size: int) -> Path:
    """A file of ``size`` bytes, synced, so neither side pays for writing it back."""
    with open(path, "wb") as fh:
        left = size
        while left > 0:
            fh.write(BLOCK[: min(left, len(BLOCK))])
            left -= len(BLOCK)
        fh.flush()
        os.fsync(fh.fileno())
    return path


def reset_peak(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (Linux >= 4.0, as its owner)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class Uploader:
    """Uploads the file to one server with curl or httpx; records time, client CPU and
    the server's peak RSS growth of each upload."""

    def __init__(self, srv: Server, src: Path) -> None:
        self.srv = srv
        self.src = src
        self.url = f"{srv.url}/api/v1/deployments?start=false"
        self.growth: list[int] = []
        self.cpu: dict[str, list[float]] = {"curl": [], "httpx": []}

    def curl_args(self, model: str) -> list[str]:
        meta = json.dumps({"model": model})
        return [
            "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
            "-H", f"Authorization: Bearer {self.srv.token}",
            "-F", f"metadata={meta};type=application/json",
            "-F", f"files=@{self.score};filename=score.py",
            "-F", f"files=@{self.src};filename=weights/big.bin",
            self.url,
        ]  # fmt: skip

    @property
    def score(self) -> Path:
        path = self.src.with_name("score.py")
        if not path.exists():
            path.write_bytes(SCORE_PY)
        return path

    def measured(self, client: str) -> float:
        """One upload, timed from the client's start to its 202; then deleted."""
        pid = self.srv.pid
        before = status_bytes(pid, "VmRSS") if reset_peak(pid) else peak_rss_bytes(pid)
        started = time.perf_counter()
        deploy_id = self.curl() if client == "curl" else self.httpx()
        took = time.perf_counter() - started
        self.growth.append(peak_rss_bytes(pid) - before)
        delete(self.srv, deploy_id)
        return took

    def curl(self) -> str:
        proc = subprocess.Popen(self.curl_args("big"), stdout=subprocess.PIPE)
        code = proc.stdout.read().decode() if proc.stdout else ""
        _, status, usage = os.wait4(proc.pid, 0)  # the child's rusage, which wait() drops
        proc.returncode = os.waitstatus_to_exitcode(status)
        self.cpu["curl"].append(usage.ru_utime + usage.ru_stime)
        if code != "202":
            raise BenchError(f"curl upload answered {code or proc.returncode}")
        return self.latest()

    def httpx(self) -> str:
        before = resource.getrusage(resource.RUSAGE_SELF)
        with open(self.src, "rb") as fh:
            resp = httpx.post(
                self.url,
                headers={"Authorization": f"Bearer {self.srv.token}"},
                files=[
                    ("metadata", (None, json.dumps({"model": "big"}).encode())),
                    ("files", ("score.py", SCORE_PY)),
                    ("files", ("weights/big.bin", fh)),
                ],
                timeout=600,
            )
        after = resource.getrusage(resource.RUSAGE_SELF)
        self.cpu["httpx"].append(
            after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        )
        if resp.status_code != 202:
            raise BenchError(f"httpx upload answered {resp.status_code}: {resp.text[:300]}")
        return str(resp.json()["deploy_id"])

    def latest(self) -> str:
        items = self.srv.client.get("/api/v1/deployments", params={"limit": 1}).json()["items"]
        return str(items[0]["deploy_id"])

    def concurrent(self, n: int) -> int:
        """``n`` curl uploads at once; the server's peak RSS growth over them all."""
        pid = self.srv.pid
        before = status_bytes(pid, "VmRSS") if reset_peak(pid) else peak_rss_bytes(pid)
        procs = [
            subprocess.Popen(self.curl_args(f"big-{i}"), stdout=subprocess.PIPE) for i in range(n)
        ]
        codes = [p.communicate()[0].decode() for p in procs]
        growth = peak_rss_bytes(pid) - before
        if codes != ["202"] * n:
            raise BenchError(f"concurrent uploads answered {codes}")
        listed = self.srv.client.get("/api/v1/deployments", params={"limit": n}).json()
        for item in listed["items"]:
            delete(self.srv, item["deploy_id"])
        return growth


def cp_sync(src: Path, dest: Path) -> float:
    """The baseline: copy into the same filesystem and sync the copy."""
    started = time.perf_counter()
    subprocess.run(["cp", str(src), str(dest)], check=True)
    subprocess.run(["sync", str(dest)], check=True)
    took = time.perf_counter() - started
    dest.unlink()
    return took


def run(opts: Options) -> list[Figure]:
    size = opts.size
    say(f"file {mib(size)}, {opts.repeats} interleaved rounds of cp+sync / curl / httpx")
    src = make_file(opts.work / "big.bin", size)
    try:
        with server(opts, runtime="process") as srv:
            warm = Uploader(srv, make_file(opts.work / "warm.bin", 2**20))
            for client in ("curl", "httpx"):  # every code path once before measuring
                warm.measured(client)
            up = Uploader(srv, src)
            with profiled(opts, NAME, srv.pid, NAME):
                cp, by_curl, by_httpx = interleave(
                    opts.repeats,
                    lambda: cp_sync(src, srv.data_dir / "cp-copy.bin"),
                    lambda: up.measured("curl"),
                    lambda: up.measured("httpx"),
                )
            alone = max(up.growth)
            together = up.concurrent(CONCURRENT)
    finally:
        src.unlink(missing_ok=True)
    rate = size / median(by_curl)
    say(
        f"cp+sync {seconds(median(cp))}, curl {seconds(median(by_curl))} "
        f"({mib(rate)}/s), httpx {seconds(median(by_httpx))}"
    )
    say(
        f"client CPU per upload: curl {seconds(median(up.cpu['curl']))}, "
        f"httpx {seconds(median(up.cpu['httpx']))}"
    )
    timed = {"curl": by_curl, "httpx": by_httpx}
    return [
        *(
            Figure(
                f"upload: cp+sync time / upload time ({client})",
                ">= 0.9",
                median(cp) / median(timed[client]),
                seconds(median(timed[client])),
                seconds(median(cp)),
                f"{mib(size)}; the client used {seconds(median(up.cpu[client]))} CPU",
            )
            for client in ("curl", "httpx")
        ),
        Figure(
            "upload: peak server RSS growth / file size",
            "<= 0.02",
            alone / size,
            mib(alone),
            mib(size),
            f"worst of {len(up.growth)} uploads",
        ),
        Figure(
            f"upload: peak server RSS growth / file size, {CONCURRENT} at once",
            "<= 0.02",
            together / size,
            mib(together),
            mib(size),
            f"growth over {CONCURRENT} concurrent uploads, divided by one file's size",
        ),
    ]
