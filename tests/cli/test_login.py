"""Password logins from the SDK and the CLI against a real server: a token that works, and
a clear message (with when to try again) once the login's limits refuse."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from deployserver.client.errors import BadRequest
from deployserver.client.sdk import DeployClient, TooManyRequests, Unauthorized
from deployserver.config import Settings
from tests.cli.conftest import Server

LOCKOUT_AFTER = Settings().login_lockout_after


def _user(server: Server, name: str, password: str) -> None:
    user = {"name": name, "password": password, "scopes": ["read"]}
    resp = server.api.post("/api/v1/users", json=user)
    assert resp.status_code == 201, resp.text


def _login_cli(server: Server, *args: str, password: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deployserver.cli", "login", *args, "--password-stdin"],
        input=password + "\n",
        env=server.cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_sdk_login_then_lockout(server: Server) -> None:
    _user(server, "sdk-user", "sdk user's password")
    with DeployClient(server.url, "no-token-yet") as ds:
        with pytest.raises(Unauthorized):
            ds.models()
        answer = ds.login("sdk-user", "sdk user's password")
        assert answer.access_token.startswith("dst_") and answer.expires_in == 3600
        assert isinstance(ds.models(), list)  # the client now sends the login token
        for _ in range(LOCKOUT_AFTER):
            with pytest.raises(BadRequest) as wrong:
                ds.login("sdk-user", "a wrong guess")
            assert wrong.value.code == "invalid_grant"
        with pytest.raises(TooManyRequests) as refused:
            ds.login("sdk-user", "sdk user's password")
    assert refused.value.status == 429 and refused.value.code == "too_many_login_attempts"
    # seconds left of the first lockout (a slow machine may have used one up already)
    assert 0 < (refused.value.retry_after or 0) <= Settings().login_lockout_seconds
    assert re.search(r"try again in \d+ s$", refused.value.message)


def test_cli_login_prints_a_token_then_says_when_to_try_again(server: Server) -> None:
    _user(server, "cli-user", "cli user's password")
    done = _login_cli(server, "cli-user", password="cli user's password")
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert token.startswith("dst_")
    listed = server.cli("models", DEPLOYSERVER_TOKEN=token)
    assert listed.returncode == 0, listed.stderr

    for _ in range(LOCKOUT_AFTER):
        wrong = _login_cli(server, "cli-user", password="a wrong guess")
        assert wrong.returncode == 3 and "invalid_grant" in wrong.stderr
    refused = _login_cli(server, "cli-user", "--json", password="cli user's password")
    assert refused.returncode == 3
    assert re.search(
        r"deployserver: too_many_login_attempts: too many failed logins for this user name; "
        r"try again in \d+ s\n",
        refused.stderr,
    )
    assert json.loads(refused.stdout)["error"]["code"] == "too_many_login_attempts"


def test_signing_out_revokes_a_login_token_and_leaves_an_admin_made_one(server: Server) -> None:
    _user(server, "leaving-user", "leaving user's password")
    with DeployClient(server.url, "no-token-yet") as ds:
        token = ds.login("leaving-user", "leaving user's password").access_token
        assert ds.logout().revoked is True
    with DeployClient(server.url, token) as ds, pytest.raises(Unauthorized) as refused:
        ds.models()
    assert refused.value.message == "this token was revoked"

    # the CLI signs out with whatever token it sends: the admin's own is not a login's
    out = server.cli("logout")
    assert out.returncode == 0, out.stderr
    assert "stays valid" in out.stdout
    assert server.cli("models").returncode == 0  # still signed in
    made = server.api.post("/api/v1/tokens", json={"name": "ci-bot", "scopes": ["read"]})
    assert made.status_code == 201, made.text
    as_json = server.cli("logout", "--json", DEPLOYSERVER_TOKEN=made.json()["token"])
    assert as_json.returncode == 0 and json.loads(as_json.stdout) == {"revoked": False}
    assert as_json.stderr == ""  # no per-request log lines
    again = server.cli("logout", DEPLOYSERVER_TOKEN=token)  # signed out already
    assert again.returncode == 3 and "this token was revoked" in again.stderr, again.stderr
    assert "Traceback" not in again.stderr
