"""Forged forwarding headers and the caller's cookies: a caller sends its own
``X-Forwarded-For``/``-Proto``/``-Host``/``-Port``, ``Forwarded``, ``X-Real-IP`` and a
``Cookie`` to ``/serve``; a real cell that echoes what it received sees none of them, only
the X-Forwarded-* headers the server set from the connection. Run through ``deployserver
serve`` itself, whose web server would otherwise believe X-Forwarded-For from any local
caller; a reverse proxy the operator names (DEPLOYSERVER_TRUSTED_PROXIES) is believed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.helpers import bearer, multipart, reap_instance, server_process, wait_for_status

ECHO = b"""
class Echo:
    def __init__(self, **parameters):
        pass

    def load(self):
        pass

    async def predict(self, request):
        return {"headers": [[k, v] for k, v in request.headers.items()]}
"""

FORGED = {
    "X-Forwarded-For": "203.0.113.66",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "evil.example",
    "X-Forwarded-Port": "443",
    "Forwarded": "for=203.0.113.66;host=evil.example;proto=https",
    "X-Real-IP": "203.0.113.66",
    # some servers read "_" as "-" in a header's name
    "X_Forwarded_For": "203.0.113.66",
    "X_Real_IP": "203.0.113.66",
    "Cookie": "ui-session=secret-of-the-caller",
}


def _echo(url: str, token: str, headers: dict[str, str]) -> dict[str, list[str]]:
    """What the echo cell received, header name -> every value of it."""
    with httpx.Client(base_url=url, timeout=30, headers=bearer(token)) as client:
        resp = client.post("/serve/echo/predict", json={"inputs": 1}, headers=headers)
    assert resp.status_code == 200, resp.text
    seen: dict[str, list[str]] = {}
    for name, value in resp.json()["predictions"]["headers"]:
        seen.setdefault(name, []).append(value)
    return seen


def _server_env(**extra: str) -> dict[str, str]:
    return {"DEPLOYSERVER_RUNTIME": "process", **extra}


def test_forged_forwarding_headers_and_cookies_never_reach_the_cell(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    try:
        deploy_id = _forged_headers_are_dropped(data)
        _a_named_proxy_is_believed(data, deploy_id)
    finally:
        reap_instance(data)  # the first server leaves its cell for the second to adopt


def _forged_headers_are_dropped(data: Path) -> str:
    with server_process(data, _server_env(), reap=False) as (url, _proc, token):
        with httpx.Client(base_url=url, timeout=30, headers=bearer(token)) as api:
            meta = {"model": "echo", "entrypoint": "echo.py:Echo"}  # given the request
            up = api.post("/api/v1/deployments", files=multipart(meta, {"echo.py": ECHO}))
            assert up.status_code == 202, up.text
            record = wait_for_status(api, up.json()["deploy_id"], {"ready", "failed"}, 60)
            assert record["status"] == "ready", record["status_reason"]
        seen = _echo(url, token, FORGED)
        port = url.rsplit(":", 1)[1]
    forwarding = {k: v for k, v in seen.items() if k.startswith("x-forwarded-")}
    assert forwarding == {
        "x-forwarded-for": ["127.0.0.1"],
        "x-forwarded-proto": ["http"],
        "x-forwarded-host": [f"127.0.0.1:{port}"],
    }
    assert not {"forwarded", "x-real-ip", "cookie", "authorization"} & seen.keys()
    assert not _mentions(seen, "203.0.113.66", "evil.example", "secret-of-the-caller")
    return str(record["deploy_id"])


def _a_named_proxy_is_believed(data: Path, deploy_id: str) -> None:
    """The operator says the server sits behind a proxy on this machine: its word is taken."""
    env = _server_env(DEPLOYSERVER_TRUSTED_PROXIES="127.0.0.1")
    with server_process(data, env) as (url, _proc, token):  # adopts the running cell
        with httpx.Client(base_url=url, timeout=30, headers=bearer(token)) as api:
            wait_for_status(api, deploy_id, "ready", 60)
        seen = _echo(url, token, {"X-Forwarded-For": "203.0.113.7", "Cookie": "a=b"})
    assert seen["x-forwarded-for"] == ["203.0.113.7"]
    assert "cookie" not in seen


def _mentions(seen: dict[str, list[str]], *words: str) -> list[Any]:
    return [(k, v) for k, values in seen.items() for v in values if any(w in v for w in words)]
