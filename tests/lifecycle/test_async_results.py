"""Where asynchronous results live: small JSON inline, larger JSON and non-JSON answers
in files (0600) served by ``result_url``; a broken answer keeps nothing; deleting,
purging and the start-up sweep remove the files."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import update

from deployserver.state import AppState
from deployserver.store import orm
from tests.lifecycle.conftest import Rig
from tests.lifecycle.test_async_predictions import REAL, _deploy, _until_done

PATTERN = bytes(range(256)) * 256  # what the streamer's raw answers repeat


def _state(rig: Rig) -> AppState:
    state: AppState = rig.app.state.ds
    return state


def _files(rig: Rig) -> list[str]:
    folder = rig.settings.data_dir / "predictions"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _submit(rig: Rig, model: str, body: object) -> str:
    sub = rig.api.post(f"/api/v1/models/{model}/predictions", json=body)
    assert sub.status_code == 202, sub.text
    return str(sub.json()["request_id"])


@pytest.mark.slow
@REAL
def test_results_inline_in_files_and_not_json(rig: Rig) -> None:
    _deploy(rig.api, "streamer", "streamer")
    small = _until_done(rig.api, _submit(rig, "streamer", {"answer_bytes": 10}))
    assert small["result"] == {"blob": "y" * 10} and small["result_type"] == "application/json"
    assert _files(rig) == []  # kept in its row

    size = 3 * 1024 * 1024 + 17
    big_id = _submit(rig, "streamer", {"answer_bytes": size})
    big = _until_done(rig.api, big_id)
    assert big["status"] == "succeeded" and big["result"] == {"blob": "y" * size}
    served = rig.api.get(big["result_url"])
    assert served.headers["content-type"] == "application/json"
    assert json.loads(served.content) == {"blob": "y" * size}
    assert (rig.settings.data_dir / "predictions" / big_id).stat().st_mode & 0o777 == 0o600

    raw_id = _submit(
        rig, "streamer", {"answer_bytes": 300_000, "kind": "raw", "media_type": "image/png"}
    )
    raw = _until_done(rig.api, raw_id)
    assert raw["status"] == "succeeded" and raw["result"] is None
    assert raw["result_type"] == "image/png"
    image = rig.api.get(raw["result_url"])
    assert image.headers["content-type"] == "image/png"
    assert image.content == (PATTERN * 5)[:300_000]

    listed = rig.api.get("/api/v1/predictions", params={"model": "streamer"}).json()["items"]
    by_id = {item["request_id"]: item for item in listed}
    assert by_id[big_id]["result"] is None and by_id[big_id]["result_url"] == big["result_url"]
    assert sorted(_files(rig)) == sorted([big_id, raw_id])


@pytest.mark.slow
@pytest.mark.parametrize("runtime_kind", ["process"], indirect=True)
def test_a_broken_answer_fails_and_keeps_nothing(rig: Rig) -> None:
    _deploy(rig.api, "streamer", "streamer")
    cut = _until_done(
        rig.api, _submit(rig, "streamer", {"answer_bytes": 200_000, "kind": "broken"})
    )
    assert cut["status"] == "failed" and "not valid JSON" in cut["error"]
    assert cut["result_url"] is None
    queued = _submit(rig, "streamer", {"answer_bytes": 10})
    assert _until_done(rig.api, queued)["status"] == "succeeded"
    unfinished = rig.api.get(f"/api/v1/predictions/{cut['request_id']}/result")
    assert unfinished.status_code == 409 and unfinished.json()["error"]["code"] == "conflict"
    assert _files(rig) == []


@pytest.mark.slow
@pytest.mark.parametrize("runtime_kind", ["process"], indirect=True)
def test_delete_purge_and_sweep_remove_result_files(rig: Rig) -> None:
    _deploy(rig.api, "streamer", "streamer")
    ids = [_submit(rig, "streamer", {"answer_bytes": 200_000}) for _ in range(3)]
    for request_id in ids:
        assert _until_done(rig.api, request_id)["status"] == "succeeded"
    assert _files(rig) == sorted(ids)

    assert rig.api.delete(f"/api/v1/predictions/{ids[0]}").status_code == 204
    assert _files(rig) == sorted(ids[1:])

    worker = _state(rig).worker
    with _state(rig).sessions.begin() as session:  # ids[1] finished long ago
        session.execute(
            update(orm.Prediction)
            .where(orm.Prediction.request_id == ids[1])
            .values(completed_at=orm.utcnow() - timedelta(days=30))
        )
    assert worker.purge() == 1
    assert _files(rig) == [ids[2]]
    assert rig.api.get(f"/api/v1/predictions/{ids[1]}").status_code == 404

    folder = rig.settings.data_dir / "predictions"
    (folder / "0123abcd").write_bytes(b"left by a crash")
    (folder / f"{ids[2]}.part").write_bytes(b"half")
    assert worker.sweep() == 2
    assert _files(rig) == [ids[2]]
    assert rig.api.get(f"/api/v1/predictions/{ids[2]}").json()["result"] == {"blob": "y" * 200_000}
