"""Connections that hold memory or time: huge or countless headers (431), heads and bodies
that stall (408, an upload's staging removed), a shutdown that would wait on them, and
staging a crash left behind. Against a real ``deployserver serve`` process."""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from deployserver.config import Settings
from deployserver.main import create_app
from tests.fakes import FakeRuntime
from tests.helpers import (
    ADMIN_TOKEN,
    SCORE_PY,
    bearer,
    multipart,
    peak_rss_bytes,
    serve,
    server_process,
)

LIMITS = {
    "DEPLOYSERVER_RUNTIME": "process",
    "DEPLOYSERVER_HEADER_TIMEOUT": "2",
    "DEPLOYSERVER_BODY_IDLE_TIMEOUT": "2",
    "DEPLOYSERVER_SHUTDOWN_GRACE": "1",
}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, object, str]]:
    with server_process(tmp_path / "data", LIMITS) as running:
        yield running


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    return sock


def _answer(sock: socket.socket) -> tuple[int, dict[str, object]]:
    """Read an HTTP answer until the server closes: (status, JSON body)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def _send_until_refused(sock: socket.socket, data: bytes, chunk: int = 65536) -> None:
    try:
        for i in range(0, len(data), chunk):
            sock.sendall(data[i : i + chunk])
    except (BrokenPipeError, ConnectionResetError):
        pass  # refused mid-way: what it answered is still to be read


def test_a_huge_header_is_431_and_never_held(server: tuple[str, object, str]) -> None:
    url, proc, _token = server
    before = peak_rss_bytes(proc.pid)  # type: ignore[attr-defined]
    answers = []
    for _ in range(4):  # four unfinished 16 MB headers, one after another
        sock = _connect(url)
        _send_until_refused(sock, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 16 * 2**20)
        answers.append(_answer(sock))
        sock.close()
    assert {status for status, _ in answers} == {431}
    assert answers[0][1]["error"]["code"] == "request_header_too_large"  # type: ignore[index]
    grown = peak_rss_bytes(proc.pid) - before  # type: ignore[attr-defined]
    assert grown < 8 * 2**20, f"the server grew by {grown} bytes"
    assert httpx.get(f"{url}/health").status_code == 200


def test_too_many_headers_is_431(server: tuple[str, object, str]) -> None:
    url, _proc, _token = server
    sock = _connect(url)
    lines = b"".join(b"X-H%d: v\r\n" % i for i in range(500))
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n" + lines + b"\r\n")
    status, body = _answer(sock)
    assert status == 431
    assert body["error"]["code"] == "too_many_headers"  # type: ignore[index]


def test_a_head_that_never_ends_is_408(server: tuple[str, object, str]) -> None:
    url, _proc, _token = server
    sock = _connect(url)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    status, body = _answer(sock)  # the server answers once its header timeout passes
    assert status == 408
    assert body["error"]["code"] == "request_timeout"  # type: ignore[index]


def test_an_upload_that_stops_sending_is_408_and_its_staging_removed(
    server: tuple[str, object, str], tmp_path: Path
) -> None:
    url, _proc, token = server
    request = httpx.Request(
        "POST",
        f"{url}/api/v1/deployments",
        files=multipart({"model": "stall"}, {"score.py": SCORE_PY, "w.bin": b"x" * 2**20}),
        headers=bearer(token),
    )
    body = request.read()
    head = f"POST /api/v1/deployments HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
    for name in ("content-type", "authorization"):
        head += f"{name}: {request.headers[name]}\r\n"
    sockets = []
    for _ in range(5):  # several uploads stall half-way
        sock = _connect(url)
        sock.sendall(head.encode() + b"\r\n" + body[: len(body) // 2])
        sockets.append(sock)
    staging = tmp_path / "data" / "staging"
    for sock in sockets:
        status, answer = _answer(sock)
        assert status == 408
        assert answer["error"]["code"] == "request_timeout"  # type: ignore[index]
        sock.close()
    assert list(staging.iterdir()) == []
    assert httpx.get(f"{url}/api/v1/deployments", headers=bearer(token)).json()["items"] == []


def test_shutdown_does_not_wait_on_a_stalled_upload(tmp_path: Path) -> None:
    env = LIMITS | {"DEPLOYSERVER_BODY_IDLE_TIMEOUT": "600"}  # only the grace can end it
    with server_process(tmp_path / "data", env) as (url, proc, token):
        sock = _connect(url)
        head = (
            "POST /api/v1/deployments HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\n"
            f"Authorization: Bearer {token}\r\n\r\n"
        )
        sock.sendall(head.encode() + b"--b\r\n")
        time.sleep(0.5)  # the request is in flight
        proc.send_signal(signal.SIGINT)  # type: ignore[attr-defined]
        # uvicorn ends by re-raising the signal it caught: -SIGINT is a clean stop
        code = proc.wait(60)  # type: ignore[attr-defined]
        sock.close()
    assert code in (0, -signal.SIGINT)


def test_staging_left_by_a_crash_is_swept_at_start(tmp_path: Path, database_url: str) -> None:
    staging = tmp_path / "data" / "staging"
    (staging / "upload-0123456789abcdef" / "tree").mkdir(parents=True)
    (staging / "upload-0123456789abcdef" / "tree" / "half.bin").write_bytes(b"x" * 1000)
    (staging / "trash-abc-1234").mkdir()
    settings = Settings(
        data_dir=tmp_path / "data", database_url=database_url, admin_token=ADMIN_TOKEN
    )
    with serve(create_app(settings, runtime=FakeRuntime())) as url:
        assert httpx.get(f"{url}/health").status_code == 200
        assert list(staging.iterdir()) == []


def test_a_stalled_body_through_serve_is_408(settings: Settings, fake_runtime: FakeRuntime) -> None:
    settings.body_idle_timeout = 1
    app = create_app(settings, runtime=fake_runtime)
    with serve(app) as url, httpx.Client(base_url=url, headers=bearer(ADMIN_TOKEN)) as api:
        up = api.post(
            "/api/v1/deployments", files=multipart({"model": "echo"}, {"score.py": SCORE_PY})
        )
        deploy_id = up.json()["deploy_id"]
        for _ in range(200):
            if api.get(f"/api/v1/deployments/{deploy_id}").json()["status"] == "ready":
                break
            time.sleep(0.05)
        sock = _connect(url)
        sock.sendall(
            b"POST /serve/echo/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n"
            + f"Authorization: Bearer {ADMIN_TOKEN}\r\n\r\n".encode()
            + b"x" * 1000
        )
        status, body = _answer(sock)
    assert status == 408
    assert body["error"]["code"] == "request_timeout"  # type: ignore[index]
