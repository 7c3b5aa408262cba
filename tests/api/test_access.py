"""Access control over HTTP: every route's scope, tokens, revocation, expiry, logins, actors."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from deployserver.access import credentials
from deployserver.api.cells import CellArchiveGuard
from deployserver.api.deps import (
    AnyTokenGuard,
    Guard,
    MetricsGuard,
    RouteInfo,
    public,
    route_table,
)
from deployserver.client.local import local_admin_token
from deployserver.config import Settings
from deployserver.main import create_app
from tests.helpers import (
    ADMIN_TOKEN,
    bearer,
    db_snapshot,
    multipart,
    package_files,
    serve,
    tree_snapshot,
)

OPEN = {"/health", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"}
LOGIN = "/api/v1/auth/token"  # open by nature: it is where a password becomes a token
UI = {"/", "/ui", "/ui/{page:path}", "/ui/static/{version}/{name:path}"}
"""The web UI's shell and files: they hold no data (all of it comes from the API)."""


def _mint(api: httpx.Client, name: str, *scopes: str, **extra: object) -> dict:
    resp = api.post("/api/v1/tokens", json={"name": name, "scopes": list(scopes), **extra})
    assert resp.status_code == 201, resp.text
    return resp.json()


def _assert_error(resp: httpx.Response, status: int, code: str, words: str = "") -> None:
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error["code"] == code and words in error["message"], error
    if status == 401:
        assert resp.headers["www-authenticate"] == "Bearer"


def _assert_dataloop_error(resp: httpx.Response, status: int, code: str, words: str = "") -> None:
    """The Dataloop-style routes under /serve answer errors in those servers' shape."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["status"] == "Fail" and words in body["response"], body
    if status == 401:
        assert resp.headers["www-authenticate"] == "Bearer"


def _is_open(route: RouteInfo, settings: Settings) -> bool:
    metrics = settings.metrics_public and any(isinstance(g, MetricsGuard) for g in route.access)
    return not route.is_api or public in route.access or metrics


def test_every_route_needs_its_scope(
    app: FastAPI, api: httpx.Client, anon: httpx.Client, settings: Settings
) -> None:
    table = route_table(app)
    opened = {r.path for r in table if _is_open(r, settings)}
    assert not settings.metrics_public, "/metrics needs a token by default"
    assert opened == OPEN | {LOGIN} | UI, "the open routes are exactly the listed ones"
    for path in OPEN:
        assert anon.get(path).status_code == 200, path
    lacking = {
        scope: _mint(api, f"all-but-{scope}", *(set(credentials.SCOPES) - {scope, "admin"}))[
            "token"
        ]
        for scope in credentials.SCOPES
    }
    checked = 0
    for route in table:
        if route.path in opened:
            continue
        (guard,) = route.access
        assert isinstance(guard, Guard)
        url = re.sub(r"\{[^}]+\}", "x", route.path)
        check = _assert_dataloop_error if route.path.startswith("/serve/") else _assert_error
        # the Dataloop-style /predict is the server's only with their clients' flag
        params = {"save_locally": "true"} if route.path.startswith("/serve/") else {}
        for method in route.methods:
            check(anon.request(method, url, params=params), 401, "not_authenticated", "Bearer")
            if isinstance(guard, CellArchiveGuard):  # a cell's credential; no token opens it
                resp = anon.request(method, url, headers=bearer(ADMIN_TOKEN))
                check(resp, 401, "not_authenticated", "cell credential")
                continue
            if isinstance(guard, AnyTokenGuard):  # who am I: any valid token, no scope
                assert anon.request(method, url, headers=bearer(lacking["read"])).is_success
                continue
            headers = bearer(lacking[guard.scope])
            resp = anon.request(method, url, params=params, headers=headers)
            check(resp, 403, "permission_denied", repr(guard.scope))
            checked += 1
    assert checked >= 12


def test_bad_tokens_are_401(anon: httpx.Client, api: httpx.Client) -> None:
    good = _mint(api, "reader", "read")["token"]
    wrong_secret = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    for header in (
        f"Bearer {wrong_secret}",
        "Bearer dst_0123456789abcdef_short",
        "Bearer dst_nonsense",
        f"Bearer {ADMIN_TOKEN}x",
        f"Bearer {'x' * 5000}",
        f"Basic {ADMIN_TOKEN}",
        f"Bearer{good}",
    ):
        resp = anon.get("/api/v1/models", headers={"Authorization": header})
        _assert_error(resp, 401, "not_authenticated")
    assert anon.get("/api/v1/models", headers=bearer(good)).status_code == 200


def test_refused_upload_streams_nothing_to_disk(
    anon: httpx.Client, api: httpx.Client, app: FastAPI, settings: Settings
) -> None:
    reader = _mint(api, "reader", "read")["token"]
    before_tree, before_db = tree_snapshot(settings.data_dir), db_snapshot(app)
    upload = multipart({"model": "sneaky"}, package_files())
    _assert_error(anon.post("/api/v1/deployments", files=upload), 401, "not_authenticated")
    resp = anon.post("/api/v1/deployments", files=upload, headers=bearer(reader))
    _assert_error(resp, 403, "permission_denied", "'deploy'")
    assert tree_snapshot(settings.data_dir) == before_tree
    assert db_snapshot(app) == before_db


def test_token_api_shows_the_secret_once_and_revocation_holds(
    api: httpx.Client, anon: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="deployserver")
    created = _mint(api, "ci", "read", "deploy")
    assert created["token"].startswith(f"dst_{created['id']}_")
    assert created["scopes"] == ["deploy", "read"] and created["expires_at"] is None
    headers = bearer(created["token"])
    assert anon.get("/api/v1/deployments", headers=headers).status_code == 200

    listed = api.get("/api/v1/tokens").json()["items"]
    assert {t["name"] for t in listed} >= {"admin", "ci"}
    assert all("token" not in t for t in listed)
    assert created["token"] not in api.get("/api/v1/tokens").text

    assert api.delete(f"/api/v1/tokens/{created['id']}").status_code == 204
    _assert_error(
        anon.get("/api/v1/deployments", headers=headers), 401, "not_authenticated", "revoked"
    )
    (row,) = [t for t in api.get("/api/v1/tokens").json()["items"] if t["id"] == created["id"]]
    assert row["revoked_at"] is not None
    assert f"token {created['id']} (ci: deploy read) created by admin" in caplog.text
    assert f"token {created['id']} (ci) revoked by admin" in caplog.text
    assert created["token"] not in caplog.text
    _assert_error(api.delete("/api/v1/tokens/nope"), 404, "token_not_found")
    bad = api.post("/api/v1/tokens", json={"name": "x", "scopes": ["root"]})
    _assert_error(bad, 422, "validation_error")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clocked(settings: Settings) -> Iterator[tuple[httpx.Client, httpx.Client, Clock]]:
    """(admin client, client with no token, the server's clock) of a server on a fake clock."""
    clock = Clock()
    with (
        serve(create_app(settings, clock=clock)) as url,
        httpx.Client(base_url=url, headers=bearer(ADMIN_TOKEN)) as admin,
        httpx.Client(base_url=url) as anon,
    ):
        yield admin, anon, clock


def test_expired_token_is_refused_on_the_next_request(clocked) -> None:
    admin, anon, clock = clocked
    created = _mint(admin, "short", "read", expires_in=60)
    assert created["expires_at"].startswith("2030-01-01T00:01:00")
    headers = bearer(created["token"])
    clock.now += timedelta(seconds=59)
    assert anon.get("/api/v1/models", headers=headers).status_code == 200
    clock.now += timedelta(seconds=1)
    _assert_error(anon.get("/api/v1/models", headers=headers), 401, "not_authenticated", "expired")


def _login(client: httpx.Client, name: str, password: str, scope: str = "") -> httpx.Response:
    return client.post(LOGIN, data={"username": name, "password": password, "scope": scope})


def test_password_login_gives_short_tokens_with_the_users_scopes(clocked) -> None:
    admin, anon, clock = clocked
    resp = admin.post(
        "/api/v1/users", json={"name": "alice", "password": "correct horse", "scopes": ["read"]}
    )
    assert resp.status_code == 201, resp.text
    assert resp.json()["scopes"] == ["read"] and "password" not in resp.text
    again = admin.post(
        "/api/v1/users", json={"name": "alice", "password": "another one", "scopes": ["read"]}
    )
    _assert_error(again, 409, "conflict")

    answer = _login(anon, "alice", "correct horse")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 3600
    headers = bearer(body["access_token"])
    assert anon.get("/api/v1/models", headers=headers).status_code == 200
    upload = multipart({"model": "m"}, package_files())
    resp = anon.post("/api/v1/deployments", files=upload, headers=headers)
    _assert_error(resp, 403, "permission_denied")

    _assert_error(_login(anon, "alice", "wrong horse"), 400, "invalid_grant")
    _assert_error(_login(anon, "nobody", "correct horse"), 400, "invalid_grant")
    _assert_error(_login(anon, "alice", "correct horse", "deploy"), 400, "invalid_scope")
    _assert_error(_login(anon, "alice", "correct horse", "root"), 400, "invalid_scope")
    assert _login(anon, "alice", "correct horse", "read").status_code == 200
    # admin implies every scope: an admin may log in with less, and gets just that
    boss = {"name": "boss", "password": "correct horse", "scopes": ["admin"]}
    assert admin.post("/api/v1/users", json=boss).status_code == 201
    reading = _login(anon, "boss", "correct horse", "read")
    assert reading.status_code == 200, reading.text
    only_read = bearer(reading.json()["access_token"])
    assert anon.get("/api/v1/models", headers=only_read).status_code == 200
    _assert_error(anon.get("/api/v1/users", headers=only_read), 403, "permission_denied")

    clock.now += timedelta(seconds=3600)
    _assert_error(anon.get("/api/v1/models", headers=headers), 401, "not_authenticated", "expired")

    fresh = bearer(_login(anon, "alice", "correct horse").json()["access_token"])
    assert admin.delete("/api/v1/users/alice").status_code == 204
    assert admin.delete("/api/v1/users/boss").status_code == 204
    _assert_error(anon.get("/api/v1/models", headers=fresh), 401, "not_authenticated")
    assert admin.get("/api/v1/users").json()["items"] == []


def test_events_and_logs_say_which_token_did_it(
    api: httpx.Client, anon: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    ci = bearer(_mint(api, "ci-bot", "read", "deploy")["token"])
    body = anon.post(
        "/api/v1/deployments", files=multipart({"model": "who"}, package_files()), headers=ci
    ).json()
    events = anon.get(f"/api/v1/deployments/{body['deploy_id']}/events", headers=ci).json()
    assert (events[0]["kind"], events[0]["actor"]) == ("received", "ci-bot")
    stop = anon.post(f"/api/v1/deployments/{body['deploy_id']}/stop", headers=ci)
    assert stop.status_code == 202
    events = anon.get(f"/api/v1/deployments/{body['deploy_id']}/events", headers=ci).json()
    assert ("stop_requested", "ci-bot") in [(e["kind"], e["actor"]) for e in events]

    caplog.set_level(logging.INFO, logger="deployserver")
    assert api.delete(f"/api/v1/deployments/{body['deploy_id']}").status_code == 204
    assert f"deployment {body['deploy_id']} (version 1 of who) deleted by admin" in caplog.text


def test_openapi_offers_the_password_login(anon: httpx.Client) -> None:
    schemes = anon.get("/openapi.json").json()["components"]["securitySchemes"]
    (scheme,) = schemes.values()
    assert scheme["flows"]["password"]["tokenUrl"] == LOGIN
    assert set(scheme["flows"]["password"]["scopes"]) == set(credentials.SCOPES)


def test_first_start_mints_a_private_admin_token_file(
    tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="deployserver")
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    path = settings.data_dir / "admin-token"
    with serve(create_app(settings)) as url:
        token = local_admin_token(settings.data_dir, environ={})
        assert token is not None and token.startswith("dst_")
        assert path.stat().st_mode & 0o777 == 0o600
        assert f"it is in {path.resolve()}" in caplog.text
        with httpx.Client(base_url=url, headers=bearer(token)) as client:
            assert client.get("/api/v1/tokens").status_code == 200
    with serve(create_app(settings)):  # a restart keeps the token it made
        assert local_admin_token(settings.data_dir, environ={}) == token
