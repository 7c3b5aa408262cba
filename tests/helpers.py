"""Test helpers: a real server on a loopback port, folder and database snapshots."""

from __future__ import annotations

import io
import json
import os
import secrets
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from deployserver.api.limits import Server, server_config
from deployserver.client.local import local_admin_token
from deployserver.main import DeployServerApp
from deployserver.state import AppState
from deployserver.store import queries

ADMIN_TOKEN = f"test-admin-{secrets.token_hex(32)}"
"""The admin token the test servers are configured with (DEPLOYSERVER_ADMIN_TOKEN)."""


PG_ADMIN_URL = os.environ.get("DEPLOYSERVER_TEST_DATABASE_URL")
"""A PostgreSQL server to test against (each test gets a fresh database); else SQLite."""


@contextmanager
def fresh_database_url(folder: Path) -> Iterator[str]:
    """SQLite under ``folder/data``, or a new PostgreSQL database dropped afterwards."""
    if not PG_ADMIN_URL:
        yield f"sqlite:///{folder / 'data' / 'deployserver.db'}"
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"ds_test_{secrets.token_hex(6)}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


SCORE_PY = b"""class Model:
    def __init__(self, model_dir, **parameters):
        self.model_dir = model_dir

    def load(self):
        pass

    def predict(self, inputs, **kwargs):
        return inputs
"""


@contextmanager
def serve(app: FastAPI, host: str = "127.0.0.1") -> Iterator[str]:
    """Run ``app`` with uvicorn on a free port of ``host`` (loopback by default),
    configured as ``deployserver serve`` configures it (for the server's own app); yields
    its base URL on loopback."""
    options: dict[str, Any] = {"host": host, "port": 0, "log_level": "warning"}
    if isinstance(app, DeployServerApp):
        config = server_config(app, app.settings, lifespan="on", **options)
    else:
        config = uvicorn.Config(app, lifespan="on", **options)
    server = Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("server did not start")
            thread.join(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def tree_snapshot(data_dir: Path) -> set[str]:
    """Every path under the data folder except the embedded database's own files."""
    return {
        str(p.relative_to(data_dir))
        for p in data_dir.rglob("*")
        if not p.name.startswith("deployserver.db")
    }


def db_snapshot(app: FastAPI) -> dict[str, int]:
    state: AppState = app.state.ds
    with state.sessions() as session:
        return queries.count_rows(session)


def package_files(extra: dict[str, bytes] | None = None) -> dict[str, bytes]:
    files = {"score.py": SCORE_PY, "weights/model.bin": b"\x00\x01" * 5000}
    files.update(extra or {})
    return files


def multipart(
    metadata: dict[str, Any] | None, files: dict[str, bytes]
) -> list[tuple[str, tuple[str, bytes, str]]]:
    """httpx ``files=`` value: a metadata part plus one part per file."""
    parts: list[tuple[str, tuple[str, bytes, str]]] = []
    if metadata is not None:
        parts.append(
            ("metadata", ("metadata.json", json.dumps(metadata).encode(), "application/json"))
        )
    for name, data in files.items():
        parts.append(("files", (name, data, "application/octet-stream")))
    return parts


def make_zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def make_tar(files: dict[str, bytes], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:  # type: ignore[call-overload]
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@contextmanager
def upload_server(
    tmp_path: Path, database_url: str, **limits: Any
) -> Iterator[tuple[httpx.Client, FastAPI]]:
    """A server on the fake runtime with ``limits`` set, and an admin client of it."""
    from deployserver.config import Settings
    from deployserver.main import create_app
    from tests.fakes import FakeRuntime

    settings = Settings(
        data_dir=tmp_path / "data", database_url=database_url, admin_token=ADMIN_TOKEN, **limits
    )
    app = create_app(settings, runtime=FakeRuntime())
    headers = bearer(ADMIN_TOKEN)
    with serve(app) as url, httpx.Client(base_url=url, timeout=60, headers=headers) as client:
        yield client, app


def assert_refused_and_untouched(
    client: httpx.Client,
    app: FastAPI,
    data_dir: Path,
    kwargs: dict[str, Any],
    status: int,
    code: str,
    words: str,
) -> dict[str, Any]:
    """Send an upload that must be refused; the folder and database stay exactly as they
    were. Returns the error body."""
    # a good upload first, so "unchanged" is checked against a populated state
    ok = client.post(
        "/api/v1/deployments",
        params={"start": "false"},  # no cell: nothing may change while we compare
        files=multipart({"model": "keep"}, package_files()),
    )
    assert ok.status_code == 202, ok.text
    before_tree, before_db = tree_snapshot(data_dir), db_snapshot(app)
    resp = client.post("/api/v1/deployments", **kwargs)
    assert resp.status_code == status, resp.text
    error: dict[str, Any] = resp.json()["error"]
    assert error["code"] == code
    assert words in error["message"], error["message"]
    assert tree_snapshot(data_dir) == before_tree
    assert db_snapshot(app) == before_db
    return error


def make_wheel(
    name: str,
    version: str,
    files: dict[str, bytes],
    *,
    tag: str = "py3-none-any",
    requires: tuple[str, ...] = (),
) -> bytes:
    """A wheel written by hand (no build tools, no index) holding ``files``."""
    import base64
    import hashlib

    info = f"{name}-{version}.dist-info"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    meta += "".join(f"Requires-Dist: {req}\n" for req in requires)
    content = dict(files)
    content[f"{info}/METADATA"] = meta.encode()
    content[f"{info}/WHEEL"] = (
        f"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: {tag}\n"
    ).encode()
    record = ""
    for path, data in content.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record += f"{path},sha256={digest},{len(data)}\n"
    content[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path, data in content.items():
            zf.writestr(zipfile.ZipInfo(path, (2020, 1, 1, 0, 0, 0)), data)
    return buf.getvalue()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def server_process(
    data_dir: Path, env: dict[str, str] | None = None, *, reap: bool = True
) -> Iterator[tuple[str, Any, str]]:
    """``deployserver serve`` as a real subprocess on a free port; yields (url, Popen,
    admin token): DEPLOYSERVER_ADMIN_TOKEN when ``env`` sets it, else the token the
    server minted into ``<data_dir>/admin-token`` on its first start."""
    import os
    import subprocess
    import sys
    import time

    import httpx

    env = {k: v for k, v in os.environ.items() if k != "DEPLOYSERVER_ADMIN_TOKEN"} | (env or {})
    port = free_port()
    log = open(data_dir.parent / f"server-{port}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "deployserver.cli",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {(data_dir.parent / log.name).name}")
            time.sleep(0.1)
        token = local_admin_token(data_dir, env)
        assert token is not None, "the server made no admin token"
        yield url, proc, token
    finally:
        proc.terminate()
        proc.wait(30)
        if reap:
            reap_instance(data_dir)
        log.close()


def status_bytes(pid: int, field: str) -> int:
    """A memory figure of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``, ...) in bytes."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field}")


def peak_rss_bytes(pid: int) -> int:
    """The process's high-water mark of resident memory (VmHWM)."""
    return status_bytes(pid, "VmHWM")


def streamed_upload(
    metadata: dict[str, Any], files: dict[str, bytes], big_name: str, big_size: int
) -> tuple[str, Iterator[bytes]]:
    """A multipart body generated on the fly with one file of ``big_size`` bytes, so the
    client never holds it either. Returns (content type, body iterator)."""
    boundary = "deployserver-test-boundary"

    def head(name: str, filename: str | None) -> bytes:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        return f"--{boundary}\r\nContent-Disposition: {disp}\r\n\r\n".encode()

    def body() -> Iterator[bytes]:
        yield head("metadata", None) + json.dumps(metadata).encode() + b"\r\n"
        for name, data in files.items():
            yield head("files", name) + data + b"\r\n"
        yield head("files", big_name)
        block = bytes(range(256)) * 4096
        left = big_size
        while left > 0:
            yield block[: min(left, len(block))]
            left -= len(block)
        yield f"\r\n--{boundary}--\r\n".encode()

    return f"multipart/form-data; boundary={boundary}", body()


def wait_for_status(
    client: Any, deploy_id: str, wanted: set[str] | str, timeout: float = 120.0
) -> dict[str, Any]:
    """Poll a deployment until its status is one of ``wanted``; its record then."""
    import time

    wanted = {wanted} if isinstance(wanted, str) else wanted
    deadline = time.monotonic() + timeout
    while True:
        record: dict[str, Any] = client.get(f"/api/v1/deployments/{deploy_id}").json()
        if record.get("status") in wanted:
            return record
        if time.monotonic() > deadline:
            raise AssertionError(f"{deploy_id} still {record.get('status')}: {record}")
        time.sleep(0.05)


def eventually(check: Any, timeout: float = 60.0, what: str = "condition") -> None:
    """Poll ``check()`` until it is true; fail after ``timeout`` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout:g} s")
        time.sleep(0.05)


def reap_instance(data_dir: Path) -> None:
    """Remove every cell a stopped server of ``data_dir`` left running (cells outlive their
    server by design; a test must not leave them behind)."""
    import contextlib
    import os
    import signal

    for path in (data_dir / "cells").glob("*.json"):
        if path.name.endswith(".metadata.json"):
            continue
        with contextlib.suppress(OSError, ValueError, KeyError):
            pid = int(json.loads(path.read_text())["pid"])
            if b"serving_cell" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.killpg(pid, signal.SIGKILL)
    instance = data_dir / "instance-id"
    if instance.exists():
        import docker
        from docker.errors import DockerException

        with contextlib.suppress(DockerException):
            client = docker.from_env()
            label = f"deployserver.instance={instance.read_text().strip()}"
            for container in client.containers.list(all=True, filters={"label": label}):
                with contextlib.suppress(DockerException):
                    container.remove(force=True)
            for network in client.networks.list(filters={"label": label}):  # the cells'
                with contextlib.suppress(DockerException):
                    network.remove()
