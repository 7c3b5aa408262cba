"""Exhausting the server through asynchronous predictions: answers far larger than memory,
and many or large requests piling up in storage. Answers stream to disk under a size cap
and never sit whole in the server's memory; quotas per model and per caller answer 429
and 507 at submission and hold again when an answer arrives. (Anonymous callers:
test_async_anonymous.py.)"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from deployserver.config import Settings
from tests.helpers import (
    bearer,
    db_snapshot,
    multipart,
    package_files,
    peak_rss_bytes,
    server_process,
    upload_server,
    wait_for_status,
)
from tests.lifecycle.conftest import Rig
from tests.lifecycle.packages import package
from tests.lifecycle.test_async_predictions import REAL, _deploy, _until_done

LARGE = 128 * 1024 * 1024
CAP = 1024 * 1024


@pytest.fixture
def lifecycle_settings(lifecycle_settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """The rig's settings, with what a test passes by indirect parametrisation."""
    return lifecycle_settings.model_copy(update=getattr(request, "param", {}))


def _files(settings: Settings) -> list[str]:
    folder = settings.data_dir / "predictions"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _mint(api: httpx.Client, name: str, *scopes: str) -> dict[str, str]:
    made = api.post("/api/v1/tokens", json={"name": name, "scopes": list(scopes)})
    assert made.status_code == 201, made.text
    return bearer(made.json()["token"])


def test_pending_quotas_answer_429_with_retry_after(tmp_path: Path, database_url: str) -> None:
    limits = {"async_max_pending_per_caller": 2, "async_max_pending_per_model": 3}
    with upload_server(tmp_path, database_url, **limits) as (api, app):
        made = api.post(
            "/api/v1/deployments",
            params={"start": "false"},  # no cell: what is queued stays queued
            files=multipart({"model": "busy"}, package_files()),
        )
        assert made.status_code == 202, made.text
        url = "/api/v1/models/busy/predictions"
        assert [api.post(url, json=i).status_code for i in range(2)] == [202, 202]
        before = db_snapshot(app)
        over = api.post(url, json=3)
        assert over.status_code == 429 and over.headers["retry-after"].isdigit(), over.text
        assert over.json()["error"]["code"] == "too_many_predictions"
        assert "caller 'admin'" in over.json()["error"]["message"]
        assert db_snapshot(app) == before
        other = _mint(api, "other", "predict")
        assert api.post(url, json=4, headers=other).status_code == 202
        crowded = api.post(url, json=5, headers=other)
        assert crowded.status_code == 429 and "model 'busy'" in crowded.json()["error"]["message"]


def test_storage_quota_answers_507_until_predictions_are_deleted(
    tmp_path: Path, database_url: str
) -> None:
    with upload_server(tmp_path, database_url, async_max_stored_bytes_per_caller=1000) as (
        api,
        app,
    ):
        made = api.post(
            "/api/v1/deployments",
            params={"start": "false"},
            files=multipart({"model": "hoard"}, package_files()),
        )
        assert made.status_code == 202, made.text
        url, blob = "/api/v1/models/hoard/predictions", {"inputs": "z" * 580}
        first = api.post(url, json=blob)
        assert first.status_code == 202, first.text
        before = db_snapshot(app)
        full = api.post(url, json=blob)
        assert full.status_code == 507, full.text
        assert full.json()["error"]["code"] == "prediction_storage_exceeded"
        assert db_snapshot(app) == before
        assert api.delete(f"/api/v1/predictions/{first.json()['request_id']}").status_code == 204
        assert api.post(url, json=blob).status_code == 202


@pytest.mark.slow
@REAL
@pytest.mark.parametrize(
    "lifecycle_settings", [{"max_prediction_result_bytes": CAP}], indirect=True
)
def test_an_answer_over_the_cap_fails_clearly_and_leaves_no_file(rig: Rig) -> None:
    _deploy(rig.api, "sizer", "sizer")
    _deploy(rig.api, "streamer", "streamer")
    sized = rig.api.post("/api/v1/models/sizer/predictions", json={"answer_bytes": 3 * CAP})
    # no Content-Length here: the cap holds while the answer streams in
    streamed = rig.api.post("/api/v1/models/streamer/predictions", json={"answer_bytes": 3 * CAP})
    for sub in (sized, streamed):
        done = _until_done(rig.api, sub.json()["request_id"])
        assert done["status"] == "failed" and done["result"] is None
        assert done["error"] == (
            f"the answer is larger than {CAP} bytes (DEPLOYSERVER_MAX_PREDICTION_RESULT_BYTES)"
        )
    assert _files(rig.settings) == []
    fits = rig.api.post("/api/v1/models/streamer/predictions", json={"answer_bytes": CAP // 2})
    assert _until_done(rig.api, fits.json()["request_id"])["status"] == "succeeded"
    assert _files(rig.settings) == [fits.json()["request_id"]]


@pytest.mark.slow
@pytest.mark.parametrize("runtime_kind", ["process"], indirect=True)
@pytest.mark.parametrize(
    "lifecycle_settings", [{"async_max_stored_bytes_per_caller": 512 * 1024}], indirect=True
)
def test_the_storage_quota_holds_when_an_answer_arrives(rig: Rig) -> None:
    _deploy(rig.api, "sizer", "sizer")
    big = rig.api.post("/api/v1/models/sizer/predictions", json={"answer_bytes": CAP})
    done = _until_done(rig.api, big.json()["request_id"])
    assert done["status"] == "failed"
    assert "storage quota of caller 'admin' (524288 bytes)" in done["error"]
    assert _files(rig.settings) == []
    small = rig.api.post("/api/v1/models/sizer/predictions", json={"answer_bytes": 100})
    assert _until_done(rig.api, small.json()["request_id"])["status"] == "succeeded"


@pytest.mark.slow
def test_a_large_async_answer_keeps_server_memory_flat(tmp_path: Path, database_url: str) -> None:
    env = {"DEPLOYSERVER_DATABASE_URL": database_url, "DEPLOYSERVER_RUNTIME": "process"}
    with server_process(tmp_path / "data", env) as (url, proc, token):
        api = httpx.Client(base_url=url, headers=bearer(token), timeout=300)
        up = api.post("/api/v1/deployments", files=multipart(*package("sizer", "sizer"))).json()
        wait_for_status(api, up["deploy_id"], "ready")
        warm = api.post("/api/v1/models/sizer/predictions", json={"answer_bytes": 100}).json()
        assert _until_done(api, warm["request_id"])["status"] == "succeeded"
        before = peak_rss_bytes(proc.pid)

        sub = api.post("/api/v1/models/sizer/predictions", json={"answer_bytes": LARGE}).json()
        done = _until_done(api, sub["request_id"])  # its last poll streams the whole record
        with api.stream("GET", done["result_url"]) as resp:
            assert resp.headers["content-type"] == "application/json"
            digest = hashlib.sha256()
            for chunk in resp.iter_raw():
                digest.update(chunk)
        growth = peak_rss_bytes(proc.pid) - before

        assert done["status"] == "succeeded", done["error"]
        assert done["result"] == {"blob": "x" * LARGE}
        compact = json.dumps(done["result"], separators=(",", ":")).encode()
        assert digest.hexdigest() == hashlib.sha256(compact).hexdigest()
        listed = api.get("/api/v1/predictions", params={"model": "sizer"}).json()["items"]
        assert listed[0]["request_id"] == sub["request_id"] and listed[0]["result"] is None
        del done, compact
        stored = tmp_path / "data" / "predictions" / sub["request_id"]
        assert stored.stat().st_mode & 0o777 == 0o600
        engine = create_engine(database_url)
        with engine.connect() as conn:
            row = conn.execute(
                text("SELECT result, result_bytes FROM predictions WHERE request_id = :r"),
                {"r": sub["request_id"]},
            ).one()
        engine.dispose()
        assert row[0] in (None, "null") and row[1] > LARGE  # the database holds no copy

        assert api.delete(f"/api/v1/predictions/{sub['request_id']}").status_code == 204
        assert not stored.exists()
        api.post(f"/api/v1/deployments/{up['deploy_id']}/stop")
        wait_for_status(api, up["deploy_id"], "stopped")
        api.close()
    print(
        f"server peak RSS growth {growth / 2**20:.1f} MiB for a {LARGE >> 20} MiB async answer "
        f"(ratio {growth / LARGE:.3f})"
    )
    assert growth < 32 * 1024 * 1024, f"server memory grew {growth / 2**20:.1f} MiB"
