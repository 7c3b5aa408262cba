"""What the network attack tests share: a scoring script that tries a TCP connection for
whoever asks through /serve, a listener on the host, and the host's own addresses."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import httpx

from tests.helpers import multipart, wait_for_status

PROBE = b"""
import socket


class Model:
    def __init__(self, model_dir, **parameters):
        pass

    def load(self):
        pass

    def predict(self, inputs, **kwargs):
        host, port = inputs
        try:
            with socket.create_connection((host, int(port)), timeout=2):
                return "connected"
        except OSError as exc:
            return f"refused: {exc!r}"
"""


@contextlib.contextmanager
def host_listener() -> Iterator[int]:
    """A TCP listener on every address of this host; yields its port. Accepts and closes,
    so a probe that gets through says "connected"."""
    sock = socket.create_server(("0.0.0.0", 0))  # all of the host's own addresses
    sock.settimeout(0.2)
    done = threading.Event()

    def accept() -> None:
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                conn, _ = sock.accept()
                conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        done.set()
        thread.join(5)
        sock.close()


def host_addresses() -> list[str]:
    """This host's own IPv4 addresses beyond loopback (its network card, Docker's default
    bridge), leaving out the cells' bridges."""
    shown = subprocess.run(
        ["ip", "-j", "-4", "addr", "show", "scope", "global"],
        capture_output=True,
        check=True,
        text=True,
    )
    found = [
        info["local"]
        for link in json.loads(shown.stdout)
        if not link["ifname"].startswith(("dsc", "dse", "br-", "veth"))
        for info in link.get("addr_info", [])
    ]
    assert found, "this host has no address beyond loopback to test with"
    return found


def deploy_prober(api: httpx.Client, model: str, **metadata: Any) -> dict[str, Any]:
    """Deploy PROBE as ``model``; its record once ready."""
    files = multipart({"model": model, **metadata}, {"score.py": PROBE})
    resp = api.post("/api/v1/deployments", files=files)
    assert resp.status_code == 202, resp.text
    record = wait_for_status(api, resp.json()["deploy_id"], {"ready", "failed"})
    assert record["status"] == "ready", record["status_reason"]
    return record


def probe(api: httpx.Client, model: str, host: str, port: int) -> str:
    """What the cell of ``model`` got when it tried to connect, asked through /serve."""
    resp = api.post(f"/serve/{model}/predict", json={"inputs": [host, port]})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["predictions"])


def cell_address(record: dict[str, Any]) -> tuple[str, int]:
    """The (host, port) the server reaches a deployment's cell at."""
    url = httpx.URL(record["cell"]["url"])
    assert url.port is not None
    return url.host, url.port
