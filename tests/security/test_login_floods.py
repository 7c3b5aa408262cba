"""Password-login abuse: anonymous floods of ``POST /api/v1/auth/token`` (each try cost a
64 MiB argon2id hash, with no limit on how many ran at once: 40 clients took the server
past 2.5 GB), unlimited password guessing, and telling known user names from unknown
ones. Each try is now limited per address and per name, failures lock a name out for
doubling times, hashes run a few at once, and every answer is the same for any name."""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from deployserver.access import accounts
from deployserver.config import Settings
from deployserver.main import create_app
from tests.helpers import ADMIN_TOKEN, bearer, peak_rss_bytes, serve, server_process

LOGIN = "/api/v1/auth/token"
PASSWORD = "correct horse battery"


class Clock:
    """The server's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class CountingHasher:
    """The real argon2 hasher, counting the password checks it does."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.verified = 0

    def verify(self, hash: str, password: str) -> bool:
        self.verified += 1
        return bool(self.inner.verify(hash, password))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@dataclass
class Rig:
    admin: httpx.Client
    anon: httpx.Client
    clock: Clock
    hasher: CountingHasher
    url: str


@contextmanager
def login_rig(settings: Settings, monkeypatch: pytest.MonkeyPatch, **limits: Any) -> Iterator[Rig]:
    """A server (real HTTP on loopback) with ``limits``, a clock moved by hand, the hashes
    counted, and one user, alice."""
    hasher = CountingHasher(accounts._hasher)
    monkeypatch.setattr(accounts, "_hasher", hasher)
    clock = Clock()
    app = create_app(settings.model_copy(update=limits), clock=clock)
    with (
        serve(app) as url,
        httpx.Client(base_url=url, headers=bearer(ADMIN_TOKEN)) as admin,
        httpx.Client(base_url=url) as anon,
    ):
        user = {"name": "alice", "password": PASSWORD, "scopes": ["read"]}
        assert admin.post("/api/v1/users", json=user).status_code == 201
        yield Rig(admin, anon, clock, hasher, url)


def _login(client: httpx.Client, name: str, password: str) -> httpx.Response:
    return client.post(LOGIN, data={"username": name, "password": password})


def _answer(resp: httpx.Response) -> tuple[int, str, str, str | None]:
    error = resp.json()["error"]
    return resp.status_code, error["code"], error["message"], resp.headers.get("retry-after")


def test_a_locked_name_refuses_even_the_right_password_and_the_lock_decays(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with login_rig(settings, monkeypatch, login_name_per_minute=1000) as rig:
        for _ in range(settings.login_lockout_after):
            assert _answer(_login(rig.anon, "alice", "guess"))[:2] == (400, "invalid_grant")
        checked = rig.hasher.verified
        status, code, message, retry = _answer(_login(rig.anon, "alice", PASSWORD))
        assert (status, code, retry) == (429, "too_many_login_attempts", "30")
        assert "try again in 30 s" in message
        rig.clock.advance(29)
        assert _answer(_login(rig.anon, "alice", PASSWORD))[3] == "1"
        assert rig.hasher.verified == checked  # a locked name costs no hash
        rig.clock.advance(1)
        assert _login(rig.anon, "alice", PASSWORD).status_code == 200  # the lock ran out

        # the success cleared the count; failures after a lock double it
        for _ in range(settings.login_lockout_after):
            _login(rig.anon, "alice", "guess")
        rig.clock.advance(30)
        assert _answer(_login(rig.anon, "alice", "guess"))[:2] == (400, "invalid_grant")
        assert _answer(_login(rig.anon, "alice", PASSWORD))[3] == "60"
        rig.clock.advance(60)
        assert _answer(_login(rig.anon, "alice", "guess"))[3] is None
        assert _answer(_login(rig.anon, "alice", PASSWORD))[3] == "120"

        # forgotten after twice the longest lockout without a failure
        rig.clock.advance(2 * settings.login_lockout_max_seconds)
        assert _answer(_login(rig.anon, "alice", "guess"))[:2] == (400, "invalid_grant")
        assert _login(rig.anon, "alice", PASSWORD).status_code == 200


def test_known_and_unknown_names_look_and_cost_the_same(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with login_rig(settings, monkeypatch, login_name_per_minute=1000) as rig:
        _login(rig.anon, "warm-up", "x")  # the first login of all also makes the decoy
        seen: dict[str, list[tuple[Any, ...]]] = {}
        for name in ("alice", "mallory-is-no-user"):
            steps = []
            for _ in range(settings.login_lockout_after + 2):
                before = rig.hasher.verified
                resp = _login(rig.anon, name, "wrong password")
                steps.append((*_answer(resp), rig.hasher.verified - before))
            seen[name] = steps
        assert seen["alice"] == seen["mallory-is-no-user"]
        hashes = [step[-1] for step in seen["alice"]]
        assert hashes == [1] * settings.login_lockout_after + [0, 0]


def test_one_address_is_limited_before_any_hash_and_other_addresses_are_not(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with login_rig(settings, monkeypatch, login_client_per_minute=3) as rig:
        for name in ("alice", "bob", "carol"):
            assert _login(rig.anon, name, "guess").status_code == 400
        checked = rig.hasher.verified
        status, code, message, retry = _answer(_login(rig.anon, "alice", PASSWORD))
        assert (status, code, retry) == (429, "too_many_login_attempts", "20")
        assert "from 127.0.0.1" in message
        assert rig.hasher.verified == checked
        # another loopback address has its own allowance (and alice is not locked)
        other = httpx.HTTPTransport(local_address="127.0.0.2")
        with httpx.Client(base_url=rig.url, transport=other) as elsewhere:
            assert _login(elsewhere, "alice", PASSWORD).status_code == 200
        rig.clock.advance(20)
        assert _login(rig.anon, "alice", PASSWORD).status_code == 200


def test_a_forged_forwarded_for_does_not_make_a_new_address(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a proxy named in DEPLOYSERVER_TRUSTED_PROXIES (none by default) may say who
    the client is; anyone else rotating X-Forwarded-For stays one address."""
    with login_rig(settings, monkeypatch, login_client_per_minute=3) as rig:
        other = httpx.HTTPTransport(local_address="127.0.0.2")
        with httpx.Client(base_url=rig.url, transport=other) as client:
            for i in range(3):
                forged = {"X-Forwarded-For": f"203.0.113.{i}"}
                resp = client.post(LOGIN, data={"username": "x", "password": "y"}, headers=forged)
                assert resp.status_code == 400
            forged = {"X-Forwarded-For": "203.0.113.99"}
            resp = client.post(LOGIN, data={"username": "x", "password": "y"}, headers=forged)
        status, _code, message, _retry = _answer(resp)
        assert status == 429 and "from 127.0.0.2;" in message


def test_one_name_is_limited_from_every_address(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with login_rig(settings, monkeypatch, login_name_per_minute=2) as rig:
        assert _login(rig.anon, "alice", PASSWORD).status_code == 200
        assert _login(rig.anon, "alice", PASSWORD).status_code == 200
        other = httpx.HTTPTransport(local_address="127.0.0.3")
        with httpx.Client(base_url=rig.url, transport=other) as elsewhere:
            status, code, message, retry = _answer(_login(elsewhere, "alice", PASSWORD))
        assert (status, code, retry) == (429, "too_many_login_attempts", "30")
        assert "for this user name" in message and "127.0.0" not in message


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"content": b"username=a&password=" + b"x" * 1024**2}, 413, "request_too_large"),
        ({"json": {"username": "alice", "password": PASSWORD}}, 415, "unsupported_media_type"),
        ({"data": {"username": "alice"}}, 400, "bad_request"),
        ({"content": b"username=alice&username=bob&password=x"}, 400, "bad_request"),
        ({"data": {"username": "a", "password": "b", "grant_type": "code"}}, 400, "bad_request"),
        ({"content": b"&".join([b"a=1"] * 50)}, 400, "bad_request"),
    ],
)
def test_a_bad_login_form_is_refused_without_a_hash(
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    kwargs: dict[str, Any],
    status: int,
    code: str,
) -> None:
    with login_rig(settings, monkeypatch) as rig:
        headers = {}
        if "content" in kwargs:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        resp = rig.anon.post(LOGIN, headers=headers, **kwargs)
        assert _answer(resp)[:2] == (status, code)
        assert rig.hasher.verified == 0


# A bounded flood against a real `deployserver serve` process --------------------------


@dataclass
class FloodResult:
    logins: Counter[int | str] = field(default_factory=Counter)
    authenticated: list[tuple[int | str, float]] = field(default_factory=list)
    bob: list[int] = field(default_factory=list)


def _flood(url: str, token: str, clients: int, seconds: float) -> FloodResult:
    """``clients`` anonymous threads trying passwords (half on alice, half on made-up
    names) for ``seconds``, while an admin reads models every 0.1 s and bob, from another
    loopback address, logs in once midway."""
    result = FloodResult()
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def attacker(i: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            n = 0
            while time.monotonic() < deadline:
                name = "alice" if i % 2 else f"nobody-{i}-{n}"
                try:
                    status: int | str = _login(client, name, f"guess-{n}").status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                with lock:
                    result.logins[status] += 1
                n += 1

    def legitimate() -> None:
        with httpx.Client(base_url=url, timeout=60, headers=bearer(token)) as client:
            while True:  # at least one call, however late this thread starts
                started = time.perf_counter()
                try:
                    status: int | str = client.get("/api/v1/models").status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                result.authenticated.append((status, time.perf_counter() - started))
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.1)

    def bob() -> None:
        time.sleep(seconds / 2)
        transport = httpx.HTTPTransport(local_address="127.0.0.2")
        with httpx.Client(base_url=url, timeout=60, transport=transport) as client:
            result.bob.append(_login(client, "bob", PASSWORD).status_code)

    threads = [threading.Thread(target=attacker, args=(i,)) for i in range(clients)]
    threads += [threading.Thread(target=legitimate), threading.Thread(target=bob)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return result


def _report(what: str, result: FloodResult, pid: int) -> None:
    latencies = [s for _status, s in result.authenticated] or [float("nan")]
    print(
        f"\n{what}: logins {dict(result.logins)}; peak server RSS "
        f"{peak_rss_bytes(pid) / 2**20:.0f} MiB; {len(latencies)} authenticated calls, "
        f"p50 {statistics.median(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms"
    )


FLOOD_CLIENTS = 40
FLOOD_SECONDS = 4.0
RSS_BOUND = 400 * 2**20
"""Idle, the server takes about 110 MiB; two hashes at once add 128 MiB. Without the
limits the same flood took it past 2.5 GB."""


@contextmanager
def _flooded_server(tmp_path: Path, **env: str) -> Iterator[tuple[str, Any, str]]:
    env = {"DEPLOYSERVER_RUNTIME": "process", **env}
    with server_process(tmp_path / "data", env) as (url, proc, token):
        for name in ("alice", "bob"):
            user = {"name": name, "password": PASSWORD, "scopes": ["read"]}
            resp = httpx.post(f"{url}/api/v1/users", json=user, headers=bearer(token))
            assert resp.status_code == 201, resp.text
        yield url, proc, token


@pytest.mark.slow
def test_a_login_flood_keeps_memory_bounded_and_the_server_answering(tmp_path: Path) -> None:
    with _flooded_server(tmp_path) as (url, proc, token):
        result = _flood(url, token, FLOOD_CLIENTS, FLOOD_SECONDS)
        _report("login flood, default limits", result, proc.pid)
        assert peak_rss_bytes(proc.pid) < RSS_BOUND
    # 400: a wrong password; 429: a limit or lockout; 503: the first burst found every
    # hashing slot taken. Never a transport error or a 500.
    assert set(result.logins) <= {400, 429, 503}, result.logins
    assert result.logins[429] > 10 * result.logins[400]  # most tries never reached a hash
    assert result.authenticated and {s for s, _ in result.authenticated} == {200}
    assert result.bob == [200]  # another address, another name: not locked out


@pytest.mark.slow
def test_a_distributed_flood_is_held_to_a_few_hashes_at_once(tmp_path: Path) -> None:
    """As if the tries came from many addresses with fresh names: no rate limit or lockout
    applies, so only the hashing slots stand between the flood and the server's memory."""
    unlimited = {
        "DEPLOYSERVER_LOGIN_CLIENT_PER_MINUTE": "1000000",
        "DEPLOYSERVER_LOGIN_NAME_PER_MINUTE": "1000000",
        "DEPLOYSERVER_LOGIN_LOCKOUT_AFTER": "1000000",
    }
    with _flooded_server(tmp_path, **unlimited) as (url, proc, token):
        result = _flood(url, token, FLOOD_CLIENTS, FLOOD_SECONDS)
        _report("login flood, no rate limits (hashing slots only)", result, proc.pid)
        assert peak_rss_bytes(proc.pid) < RSS_BOUND
    assert set(result.logins) <= {400, 503}, result.logins
    assert result.logins[503] > 0  # tries that found every slot taken were turned away
    assert result.authenticated and {s for s, _ in result.authenticated} == {200}
    assert result.bob in ([200], [503])  # a slot may have been free or not: never a hang
