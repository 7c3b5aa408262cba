"""Secrets reaching further than they need to: metadata ``env`` values shown to any
``read`` token (records, lists, the record cache), the database and the process cells'
files readable by every local user, and process cells inheriting the server's whole
environment (its admin token, webhook secret, database URL and anything else exported)."""

from __future__ import annotations

import contextlib
import io
import json
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from deployserver.cli import main
from deployserver.client.sdk import DeployClient
from deployserver.store import db
from deployserver.store.queries import ENV_HIDDEN
from tests.helpers import (
    bearer,
    eventually,
    multipart,
    package_files,
    server_process,
    wait_for_status,
)

ENV = {"API_KEY": "sk-live-0123456789", "MODE": "fast"}


def _mint(api: httpx.Client, name: str, *scopes: str) -> str:
    resp = api.post("/api/v1/tokens", json={"name": name, "scopes": list(scopes)})
    assert resp.status_code == 201, resp.text
    token: str = resp.json()["token"]
    return token


def test_a_read_token_sees_which_env_is_set_but_no_value(
    api: httpx.Client, anon: httpx.Client
) -> None:
    meta = {"model": "with-secrets", "env": ENV, "parameters": {"k": 3}}
    up = api.post("/api/v1/deployments", files=multipart(meta, package_files()))
    assert up.status_code == 202 and up.json()["metadata"]["env"] == ENV  # the uploader
    deploy_id = up.json()["deploy_id"]
    reader = bearer(_mint(api, "dashboard", "read"))
    deployer = bearer(_mint(api, "ci", "read", "deploy"))
    hidden = dict.fromkeys(ENV, ENV_HIDDEN)

    record = f"/api/v1/deployments/{deploy_id}"
    # in both orders, so neither view is served from the other's cache entry
    for headers, env in ((deployer, ENV), (reader, hidden), (deployer, ENV), (reader, hidden)):
        got = anon.get(record, headers=headers)
        assert got.status_code == 200 and got.json()["metadata"]["env"] == env
        listed = anon.get("/api/v1/deployments", headers=headers).json()["items"]
        assert [d["metadata"]["env"] for d in listed] == [env]
    seen = anon.get(record, headers=reader)
    assert seen.json()["metadata"]["parameters"] == {"k": 3}  # the rest is unchanged
    for text in (seen.text, anon.get("/api/v1/deployments", headers=reader).text):
        assert ENV["API_KEY"] not in text and ENV["MODE"] not in text

    # the SDK and the CLI read the hidden record as any other
    url = str(api.base_url)
    with DeployClient(url, reader["Authorization"].split()[1]) as ds:
        assert ds.get(deploy_id).metadata["env"] == hidden
        assert [d.metadata["env"] for d in ds.list()] == [hidden]
    out = io.StringIO()
    token = reader["Authorization"].split()[1]
    with contextlib.redirect_stdout(out):
        assert main.main(["status", deploy_id, "--server", url, "--token", token, "--json"]) == 0
    assert json.loads(out.getvalue())["metadata"]["env"] == hidden


def test_an_existing_world_readable_database_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").touch(mode=0o644)
        Path(f"{path}{suffix}").chmod(0o644)
    db.upgrade(f"sqlite:///{path}")
    for suffix in ("", "-wal", "-shm"):
        assert stat.S_IMODE(Path(f"{path}{suffix}").stat().st_mode) == 0o600, suffix


# A real server process with real process cells ------------------------------------------

REPORTS_ENV = b"""import os


class Model:
    def __init__(self, model_dir, **parameters):
        pass

    def load(self):
        pass

    def predict(self, inputs, **kwargs):
        return dict(os.environ)
"""


@dataclass
class Deployed:
    url: str
    api: httpx.Client
    data_dir: Path
    deploy_id: str
    secrets: dict[str, str]


@contextlib.contextmanager
def _deployed(folder: Path, secrets: dict[str, str]) -> Iterator[Deployed]:
    """``deployserver serve --runtime process`` with ``secrets`` in its environment, and a
    ready deployment whose cell answers with its own environment."""
    data_dir = folder / "data"
    env = {"DEPLOYSERVER_RUNTIME": "process", **secrets}
    with (
        server_process(data_dir, env) as (url, _proc, token),
        httpx.Client(base_url=url, headers=bearer(token), timeout=120) as api,
    ):
        meta = {"model": "env-report", "env": {"GREETING": "hello"}}
        files = {"score.py": REPORTS_ENV, "weights/model.bin": b"\x00" * 100}
        up = api.post("/api/v1/deployments", files=multipart(meta, files))
        assert up.status_code == 202, up.text
        deploy_id = up.json()["deploy_id"]
        record = wait_for_status(api, deploy_id, {"ready", "failed"})
        assert record["status"] == "ready", record["status_reason"]
        yield Deployed(url, api, data_dir, deploy_id, secrets)


def _modes(root: Path) -> dict[str, int]:
    """Permission bits of everything under ``root`` (root included), by relative path."""
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


@pytest.mark.slow
def test_the_data_folder_is_private_after_a_real_upload_and_cell(tmp_path: Path) -> None:
    with _deployed(tmp_path, {}) as run:
        stop = run.api.post(f"/api/v1/deployments/{run.deploy_id}/stop")
        assert stop.status_code == 202
        wait_for_status(run.api, run.deploy_id, "stopped")
        saved = run.data_dir / "logs" / f"{run.deploy_id}.log"
        eventually(saved.exists, what="the stopped cell's output kept")
        restart = run.api.post(f"/api/v1/deployments/{run.deploy_id}/start")
        assert restart.status_code == 202  # a live cell's files beside the kept ones
        wait_for_status(run.api, run.deploy_id, "ready")
        modes = _modes(run.data_dir)
    # The model's own files stay readable to the cell's user (Docker mounts them for uid
    # 10001); the 0700 data folder above them keeps every other user out.
    private = {p: m for p, m in modes.items() if not p.startswith("deployments")}
    for must in (
        "deployserver.db",
        "deployserver.db-wal",
        "deployserver.db-shm",
        "admin-token",
        "webhook-secret",
        "instance-id",
        "cells",
        "envs",
        "logs",
        f"logs/{run.deploy_id}.log",
        "staging",
    ):
        assert must in private, f"{must} missing: {sorted(private)}"
    cell_files = [p for p in private if p.startswith("cells/")]
    assert {Path(p).suffix for p in cell_files} >= {".json", ".log"}
    assert any(p.endswith(".metadata.json") for p in cell_files)
    print("\ndata folder modes:", {p: oct(m) for p, m in sorted(private.items())})
    for path, mode in private.items():
        is_dir = (run.data_dir / path).is_dir()
        assert mode == (0o700 if is_dir else 0o600), f"{path} is {oct(mode)}"


@pytest.mark.slow
def test_a_process_cell_inherits_none_of_the_servers_secrets(tmp_path: Path) -> None:
    secrets = {
        "DEPLOYSERVER_ADMIN_TOKEN": "operator-admin-token-" + "a" * 24,
        "DEPLOYSERVER_WEBHOOK_SECRET": "webhook-signing-secret-" + "b" * 24,
        "DEPLOYSERVER_DATABASE_URL": f"sqlite:///{tmp_path / 'data' / 'deployserver.db'}",
        "OPERATORS_CLOUD_KEY": "cloud-key-" + "c" * 24,
    }
    with _deployed(tmp_path, secrets) as run:
        resp = run.api.post("/serve/env-report/predict", json=[])
        assert resp.status_code == 200, resp.text
        environ: dict[str, Any] = resp.json()["predictions"]
    print("\nprocess cell environment:", sorted(environ))
    assert environ["GREETING"] == "hello"  # what the deployment's metadata sets
    assert environ["DEPLOYSERVER_DEPLOY_ID"] == run.deploy_id
    assert [k for k in environ if k.startswith("DEPLOYSERVER_")] == ["DEPLOYSERVER_DEPLOY_ID"]
    assert "OPERATORS_CLOUD_KEY" not in environ
    for value in secrets.values():
        assert all(value not in str(v) for v in environ.values())
    # nothing beyond the basics, the metadata's env, the deploy id and the import path
    # (LC_CTYPE may be set by Python itself when it coerces a C locale)
    basics = {"PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "PYTHONPATH"}
    assert set(environ) <= basics | {"GREETING", "DEPLOYSERVER_DEPLOY_ID"}, sorted(environ)
