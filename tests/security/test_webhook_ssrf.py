"""SSRF through webhooks: a caller names a webhook URL that points the server at itself, a
private model's cell, cloud metadata or any other address on its network, in any spelling
(decimal, hex, short IPv4, IPv6, IPv4-mapped, names that resolve there). Each is refused,
at submission when the URL alone shows it, else at connect time on the address actually
connected to; a loopback listener sees no connection, and webhook_status holds a category,
never an error's text (no open-port oracle)."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from deployserver.config import Settings
from deployserver.errors import InvalidWebhook
from deployserver.serving.webhooks import AddressPolicy, Outcome, WebhookSender, check_url
from tests.helpers import db_snapshot, eventually, multipart, package_files, serve
from tests.lifecycle.conftest import Rig
from tests.lifecycle.test_async_predictions import REAL, _deploy, _until_done

ALLOW_LOOPBACK = {"webhook_allow": "127.0.0.0/8", "webhook_backoff": 0.01}
CATEGORIES = {str(o) for o in Outcome}


@pytest.fixture
def lifecycle_settings(lifecycle_settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """The rig's settings, with what a test passes by indirect parametrisation."""
    return lifecycle_settings.model_copy(update=getattr(request, "param", {}))


class Listener:
    """A TCP listener on loopback that counts the connections it accepts, and closes them."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@contextmanager
def listening(host: str = "127.0.0.1") -> Iterator[Listener]:
    listener = Listener(host)
    try:
        yield listener
    finally:
        listener.close()


def refused_urls(port: int) -> list[str]:
    """Webhook URLs whose text alone shows a destination webhooks may not reach."""
    return [
        f"http://127.0.0.1:{port}/hook",
        f"http://2130706433:{port}/hook",  # 127.0.0.1 as one decimal number
        f"http://0x7f000001:{port}/hook",
        f"http://0x7f.1:{port}/hook",
        f"http://127.1:{port}/hook",
        f"http://0177.0.0.1:{port}/hook",  # octal
        f"http://0.0.0.0:{port}/hook",
        f"http://[::1]:{port}/hook",
        f"http://[::ffff:127.0.0.1]:{port}/hook",
        f"http://[::ffff:7f00:1]:{port}/hook",
        f"http://[::]:{port}/hook",
        f"http://[2002:7f00:1::]:{port}/hook",  # 6to4 around 127.0.0.1
        f"http://[64:ff9b::7f00:1]:{port}/hook",  # NAT64 around 127.0.0.1
        "http://[fe80::1]/hook",
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://10.0.0.1/hook",
        "http://172.16.0.1/hook",
        "http://192.168.1.1/hook",
        "http://100.64.0.1/hook",  # shared address space (CGNAT)
        "http://224.0.0.1/hook",
        "http://240.0.0.1/hook",
        "http://255.255.255.255/hook",
        "ftp://example.org/hook",
        "file:///etc/passwd",
        "gopher://example.org:70/_hook",
        "http:///hook",
        "http://",
        "https://example.org/" + "a" * 2000,
    ]


def test_policy_judges_addresses_by_where_they_lead() -> None:
    policy = AddressPolicy()
    assert policy.refusal("127.0.0.1") == "a loopback address"
    assert policy.refusal("::ffff:10.1.2.3") == "a private address"
    assert policy.refusal("fe80::1%eth0") == "a link-local address"
    assert policy.refusal("169.254.169.254") == "a link-local address"
    assert policy.refusal("not-an-address") == "not an IP address"
    assert policy.refusal("93.184.215.14") is None
    assert policy.refusal("2606:4700::1111") is None
    allowing = AddressPolicy(Settings(webhook_allow="10.1.0.0/16, ::1").webhook_networks)
    assert allowing.refusal("10.1.200.3") is None
    assert allowing.refusal("::ffff:10.1.0.9") is None  # mapped: the IPv4 network holds
    assert allowing.refusal("::1") is None
    assert allowing.refusal("10.2.0.1") == "a private address"
    with pytest.raises(ValueError, match="not a network"):
        Settings(webhook_allow="10.0.0.0/8,localhost")


def test_check_url_refuses_what_the_url_shows() -> None:
    for url in refused_urls(8000):
        with pytest.raises(InvalidWebhook):
            check_url(url, AddressPolicy())
    # names are left to the connect-time check: no lookup at submission
    assert check_url("http://localhost:8000/hook", AddressPolicy()) == "http://localhost:8000/hook"
    assert check_url("https://hooks.example.org/x?y=1", AddressPolicy()).startswith("https://")
    allowing = AddressPolicy(Settings(webhook_allow="127.0.0.0/8").webhook_networks)
    assert check_url("http://2130706433:9/hook", allowing)


def test_submission_refuses_blocked_webhooks_and_keeps_nothing(
    api: httpx.Client, app: FastAPI
) -> None:
    made = api.post(
        "/api/v1/deployments",
        params={"start": "false"},
        files=multipart({"model": "target"}, package_files()),
    )
    assert made.status_code == 202, made.text
    with listening() as listener:
        before = db_snapshot(app)
        for url in refused_urls(listener.port):
            resp = api.post(
                "/api/v1/models/target/predictions", params={"webhook": url}, json={"inputs": 1}
            )
            assert resp.status_code == 422, (url, resp.text)
            assert resp.json()["error"]["code"] == "invalid_webhook", url
        assert db_snapshot(app) == before
        assert listener.accepted == 0


async def test_a_name_mapped_to_loopback_is_refused_at_connect(settings: Settings) -> None:
    """The resolver says hooks.example.test is 127.0.0.1 (or one public and one private
    address): nothing is sent, and the listener there never sees a connection."""
    with listening() as listener:
        for answers in (["127.0.0.1"], ["10.9.9.9", "127.0.0.1"], ["::ffff:127.0.0.1"]):

            async def resolver(host: str, port: int, answers: list[str] = answers) -> list[str]:
                assert host == "hooks.example.test"
                return answers

            sender = WebhookSender(settings, b"secret", resolver)
            try:
                url = f"http://hooks.example.test:{listener.port}/hook"
                assert await sender.deliver(url, b"{}") is Outcome.REFUSED_DESTINATION
            finally:
                await sender.aclose()
        assert listener.accepted == 0


async def test_rebinding_cannot_move_a_checked_connection(settings: Settings) -> None:
    """The name resolves first to an allowed address, then (rebound) to a refused one: the
    request goes to the address that was checked, and the name is looked up once."""
    got: list[tuple[bytes, str]] = []

    async def hook(request: Request) -> Response:
        got.append((await request.body(), request.headers["host"]))
        return Response(status_code=204)

    lookups: list[str] = []

    async def rebinding(host: str, port: int) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"] if len(lookups) == 1 else ["127.0.0.2"]

    allow = settings.model_copy(update={"webhook_allow": "127.0.0.1/32"})
    with serve(Starlette(routes=[Route("/hook", hook, methods=["POST"])])) as url:
        port = int(url.rsplit(":", 1)[1])
        sender = WebhookSender(allow, b"secret", rebinding)
        try:
            named = f"http://hooks.example.test:{port}/hook"
            assert await sender.deliver(named, b'{"n":1}') is Outcome.DELIVERED
        finally:
            await sender.aclose()
    # the Host header still names the host, though the connection went to the address
    assert got == [(b'{"n":1}', f"hooks.example.test:{port}")]
    assert lookups == ["hooks.example.test"]


def _until_webhook(rig: Rig, request_id: str) -> str:
    seen: dict[str, Any] = {}

    def noted() -> bool:
        seen.update(rig.api.get(f"/api/v1/predictions/{request_id}").json())
        return seen["webhook_status"] is not None

    eventually(noted, what=f"webhook of {request_id} recorded")
    return str(seen["webhook_status"])


@pytest.mark.slow
@REAL
def test_localhost_is_refused_at_connect_with_a_real_cell(rig: Rig) -> None:
    _deploy(rig.api, "good", "hooked")
    with listening() as listener:
        for url in (f"http://localhost:{listener.port}/hook", f"http://LocalHost:{listener.port}/"):
            sub = rig.api.post(
                "/api/v1/models/hooked/predictions", params={"webhook": url}, json={"inputs": 1}
            )
            assert sub.status_code == 202, sub.text
            assert _until_done(rig.api, sub.json()["request_id"])["status"] == "succeeded"
            assert _until_webhook(rig, sub.json()["request_id"]) == "refused_destination"
        assert listener.accepted == 0


@pytest.mark.slow
@REAL
@pytest.mark.parametrize("lifecycle_settings", [ALLOW_LOOPBACK], indirect=True)
def test_an_allowed_network_delivers_a_verifiable_webhook(rig: Rig) -> None:
    received: list[tuple[bytes, str]] = []
    arrived = threading.Event()

    async def hook(request: Request) -> Response:
        received.append((await request.body(), request.headers["x-deployserver-signature"]))
        arrived.set()
        return Response(status_code=204)

    _deploy(rig.api, "good", "hooked")
    with serve(Starlette(routes=[Route("/hook", hook, methods=["POST"])])) as hook_url:
        sub = rig.api.post(
            "/api/v1/models/hooked/predictions",
            params={"webhook": f"{hook_url}/hook"},
            json={"inputs": "ping"},
        )
        assert sub.status_code == 202, sub.text
        assert arrived.wait(60), "no webhook arrived"
    body, signature = received[0]
    secret = (rig.settings.data_dir / "webhook-secret").read_text().strip().encode()
    expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(signature, expected)
    record = json.loads(body)
    assert record["request_id"] == sub.json()["request_id"] and record["status"] == "succeeded"
    assert _until_webhook(rig, record["request_id"]) == "delivered"


@pytest.mark.slow
@pytest.mark.parametrize("runtime_kind", ["process"], indirect=True)
@pytest.mark.parametrize("lifecycle_settings", [ALLOW_LOOPBACK], indirect=True)
def test_webhook_outcomes_are_categories_and_4xx_is_tried_once(rig: Rig) -> None:
    hits: dict[str, int] = {"gone": 0, "moved": 0, "target": 0, "broken": 0}

    async def answer(request: Request) -> Response:
        name = request.path_params["name"]
        hits[name] += 1
        if name == "gone":
            return Response("no such hook: internal detail", status_code=404)
        if name == "moved":
            return RedirectResponse(f"{request.base_url}target", status_code=307)
        if name == "broken":
            return Response(status_code=503)
        return Response(status_code=204)

    _deploy(rig.api, "good", "hooked")
    with (
        serve(Starlette(routes=[Route("/{name}", answer, methods=["POST"])])) as hook_url,
        listening() as closed,
    ):
        port = closed.port
        closed.close()  # a port nothing listens on any more
        wanted = {
            f"{hook_url}/gone": "http_4xx",
            f"{hook_url}/moved": "http_3xx",
            f"{hook_url}/broken": "http_5xx",
            f"http://127.0.0.1:{port}/hook": "connect_failed",
        }
        for url, category in wanted.items():
            sub = rig.api.post(
                "/api/v1/models/hooked/predictions", params={"webhook": url}, json={"inputs": 1}
            ).json()
            status = _until_webhook(rig, sub["request_id"])
            assert status == category and status in CATEGORIES, url
    assert hits == {"gone": 1, "moved": 1, "target": 0, "broken": 5}
