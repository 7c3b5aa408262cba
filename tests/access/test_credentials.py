"""Access control below HTTP: the database holds no secrets, the env admin token's
lifecycle, the guards for public models and /metrics, fail-closed routes, the CLI."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import sys
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from sqlalchemy import MetaData, create_engine, select

from deployserver.api.deps import MetricsGuard, ModelPredictGuard, check_guarded
from deployserver.cli import main
from deployserver.client.local import local_admin_token
from deployserver.config import Settings
from deployserver.errors import NotAuthenticated, PermissionDenied
from deployserver.main import create_app
from deployserver.state import AppState
from deployserver.store import db, queries
from tests.helpers import ADMIN_TOKEN, bearer, multipart, package_files, serve


def _dump(url: str) -> str:
    """Every row of every table, as text (works on SQLite and PostgreSQL alike)."""
    engine = create_engine(url)
    try:
        meta = MetaData()
        meta.reflect(engine)
        with engine.connect() as conn:
            return "\n".join(
                repr(row) for table in meta.sorted_tables for row in conn.execute(select(table))
            )
    finally:
        engine.dispose()


def test_no_plaintext_token_or_password_in_the_database(
    api: httpx.Client, anon: httpx.Client, settings: Settings, database_url: str
) -> None:
    minted = api.post("/api/v1/tokens", json={"name": "ci", "scopes": ["deploy"]}).json()
    password = "a password nobody must read back"
    user = {"name": "bob", "password": password, "scopes": ["read", "predict"]}
    assert api.post("/api/v1/users", json=user).status_code == 201
    login = anon.post("/api/v1/auth/token", data={"username": "bob", "password": password})
    access = login.json()["access_token"]
    cli_token = _cli(["token", "create", "cli", "--scopes", "read"], database_url, settings)
    assert cli_token.startswith("dst_")

    dump = _dump(database_url)
    assert "argon2id" in dump and "ci" in dump  # the rows are there ...
    for plaintext in (ADMIN_TOKEN, minted["token"], access, cli_token, password):
        assert plaintext not in dump  # ... their secrets are not
        assert plaintext.split("_", 2)[-1] not in dump  # dst_<hex id>_<secret; may hold _>


@pytest.fixture
def state(app: FastAPI, base_url: str) -> AppState:
    """The running app's state (the ``base_url`` fixture has started it)."""
    return app.state.ds


async def test_public_models_serve_without_a_token(
    api: httpx.Client, state: AppState, settings: Settings
) -> None:
    for name, public in (("open-model", True), ("closed-model", False)):
        meta = {"model": name, "public": public}
        body = api.post("/api/v1/deployments", files=multipart(meta, package_files())).json()
        with state.sessions.begin() as session:  # no activation route yet: make it active
            queries.get_model(session, name).active_deploy_id = body["deploy_id"]
    guard = ModelPredictGuard()
    assert await guard(model="open-model", state=state, token=None) is None
    with pytest.raises(NotAuthenticated):
        await guard(model="closed-model", state=state, token=None)
    with pytest.raises(NotAuthenticated):
        await guard(model="no-such-model", state=state, token=None)
    reader = api.post("/api/v1/tokens", json={"name": "r", "scopes": ["read"]}).json()["token"]
    with pytest.raises(PermissionDenied):
        await guard(model="closed-model", state=state, token=reader)
    predictor = api.post("/api/v1/tokens", json={"name": "p", "scopes": ["predict"]}).json()
    caller = await guard(model="closed-model", state=state, token=predictor["token"])
    assert caller is not None and caller.name == "p"


async def test_metrics_need_a_token_unless_configured_public(state: AppState) -> None:
    guard = MetricsGuard()
    with pytest.raises(NotAuthenticated):
        await guard(state=state, token=None)
    assert await guard(state=state, token=ADMIN_TOKEN) is not None
    opened = dataclasses.replace(
        state, settings=state.settings.model_copy(update={"metrics_public": True})
    )
    assert await guard(state=opened, token=None) is None


def test_a_route_without_declared_access_is_refused_at_build_time() -> None:
    app = FastAPI()
    router = APIRouter(prefix="/api/v1/forgotten")

    @router.get("")
    def forgotten() -> None: ...

    app.include_router(router)
    with pytest.raises(RuntimeError, match="/api/v1/forgotten declares no access"):
        check_guarded(app)


def test_env_admin_token_is_installed_rotated_and_revoked(
    tmp_path: Path, database_url: str
) -> None:
    def settings(admin_token: str | None = None) -> Settings:
        return Settings(data_dir=data_dir, database_url=database_url, admin_token=admin_token)

    data_dir = tmp_path / "data"
    first, second = "first-operator-token-" + "a" * 20, "second-operator-token-" + "b" * 20

    def accepted(settings: Settings, token: str) -> bool:
        with serve(create_app(settings)) as url:
            return httpx.get(f"{url}/api/v1/tokens", headers=bearer(token)).status_code == 200

    assert accepted(settings(first), first)
    assert not (data_dir / "admin-token").exists()
    assert accepted(settings(second), second) and not accepted(settings(second), first)
    # unset: the operator's token stops working and a file token takes over
    assert not accepted(settings(), second)
    assert accepted(settings(), local_admin_token(data_dir, environ={}) or "")


@pytest.mark.parametrize("bad", ["too-short", "dst_" + "x" * 40])
def test_a_weak_or_lookalike_env_admin_token_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="admin_token"):
        Settings(admin_token=bad)


def _cli(argv: list[str], database_url: str, settings: Settings, stdin: str = "") -> str:
    """Run the CLI in-process on the test's database; returns its stdout."""
    out = io.StringIO()
    args = [*argv, "--data-dir", str(settings.data_dir), "--database-url", database_url]
    old_stdin = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        with contextlib.redirect_stdout(out):
            assert main.main(args) == 0
    finally:
        sys.stdin = old_stdin
    return out.getvalue().strip()


def test_cli_manages_tokens_and_users(tmp_path: Path, database_url: str) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    token = _cli(["token", "create", "nightly", "--scopes", "read,deploy"], database_url, settings)
    token_id = token.split("_")[1]
    listed = _cli(["token", "list"], database_url, settings)
    assert f"{token_id}\tnightly\tdeploy read\texpires never" in listed
    assert token not in listed
    _cli(["token", "revoke", token_id], database_url, settings)
    assert "revoked" in _cli(["token", "list"], database_url, settings)

    _cli(
        ["user", "create", "carol", "--scopes", "read", "--password-stdin"],
        database_url,
        settings,
        stdin="carol's long password\n",
    )
    assert _cli(["user", "list"], database_url, settings) == "carol\tread"
    with serve(create_app(settings)) as url:
        login = httpx.post(
            f"{url}/api/v1/auth/token",
            data={"username": "carol", "password": "carol's long password"},
        )
        assert login.status_code == 200, login.text
        revoked = httpx.get(f"{url}/api/v1/models", headers=bearer(token))
        assert revoked.status_code == 401
    _cli(["user", "delete", "carol"], database_url, settings)
    assert _cli(["user", "list"], database_url, settings) == ""
    db.upgrade(database_url)  # still at head, nothing left half-done
