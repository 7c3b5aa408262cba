"""Uploads that should succeed: plain files, curl, archives, versions, reads, delete."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from deployserver.config import Settings
from tests.helpers import (
    ADMIN_TOKEN,
    db_snapshot,
    make_tar,
    make_zip,
    multipart,
    package_files,
    wait_for_status,
)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _expected(files: dict[str, bytes]) -> list[dict[str, object]]:
    return [
        {"path": name, "size": len(data), "sha256": _sha(data)}
        for name, data in sorted(files.items())
    ]


def test_upload_stores_files_records_and_answers_202(
    api: httpx.Client, settings: Settings, app: FastAPI
) -> None:
    files = package_files()
    resp = api.post(
        "/api/v1/deployments", params={"start": "false"}, files=multipart({"model": "iris"}, files)
    )
    assert resp.status_code == 202, resp.text
    body = resp.json()
    deploy_id = body["deploy_id"]
    assert resp.headers["location"] == f"/api/v1/deployments/{deploy_id}"
    assert body["model"] == "iris" and body["version"] == 1
    assert body["status"] == "received" and body["status_reason"] is None
    assert body["files"] == _expected(files)
    assert body["entrypoint"] == "score.py:Model"
    folder = settings.deployments_dir / deploy_id
    for name, data in files.items():
        assert (folder / name).read_bytes() == data
    assert db_snapshot(app)["deployments"] == 1
    assert not any(settings.staging_dir.iterdir()), "staging must be empty after an upload"

    polled = api.get(f"/api/v1/deployments/{deploy_id}").json()
    assert polled["status"] == "received" and polled["files"] == body["files"]
    assert polled["cell"] is None and polled["active"] is False
    assert polled["metadata"]["model"] == "iris"


def test_curl_upload_of_a_folder_then_status_poll(
    base_url: str, api: httpx.Client, tmp_path: Path, settings: Settings
) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "weights").mkdir(parents=True)
    files = package_files()
    for name, data in files.items():
        (pkg / name).write_bytes(data)
    (pkg / "metadata.json").write_text(json.dumps({"model": "curl-model"}))
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "-w",
            "\n%{http_code}",
            "-H",
            f"Authorization: Bearer {ADMIN_TOKEN}",
            "-F",
            f"metadata=@{pkg / 'metadata.json'}",
            "-F",
            f"files=@{pkg / 'score.py'}",
            "-F",
            f"files=@{pkg / 'weights/model.bin'};filename=weights/model.bin",
            f"{base_url}/api/v1/deployments",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    text, code = out.rsplit("\n", 1)
    assert code == "202", text
    body = json.loads(text)
    assert body["files"] == _expected(files)
    poll = subprocess.run(
        [
            "curl",
            "-sS",
            "-H",
            f"Authorization: Bearer {ADMIN_TOKEN}",
            f"{base_url}/api/v1/deployments/{body['deploy_id']}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(poll)["deploy_id"] == body["deploy_id"]
    assert wait_for_status(api, body["deploy_id"], "ready")["active"] is True
    stored = settings.deployments_dir / body["deploy_id"] / "weights/model.bin"
    assert _sha(stored.read_bytes()) == _sha(files["weights/model.bin"])


@pytest.mark.parametrize(
    ("archive_name", "builder"),
    [
        ("package.zip", make_zip),
        ("package.tar.gz", make_tar),
        ("package.tgz", make_tar),
        ("package.tar", lambda f: make_tar(f, "w")),
    ],
)
def test_archive_upload_unpacks_to_the_same_files(
    api: httpx.Client, settings: Settings, archive_name: str, builder
) -> None:
    files = package_files({"nested/inner.zip": make_zip({"x.txt": b"x"})})
    archive = builder(files)
    resp = api.post(
        "/api/v1/deployments", files=multipart({"model": "arch"}, {archive_name: archive})
    )
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["files"] == _expected(files)
    folder = settings.deployments_dir / body["deploy_id"]
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == sorted(
        files
    )
    # archives inside the archive are stored as they are, never unpacked
    assert (folder / "nested/inner.zip").read_bytes() == files["nested/inner.zip"]


def test_metadata_as_a_plain_form_field_and_start_false(api: httpx.Client) -> None:
    resp = api.post(
        "/api/v1/deployments",
        params={"start": "false"},
        data={"metadata": json.dumps({"model": "plain", "labels": {"team": "x"}})},
        files=[("files", ("score.py", package_files()["score.py"], "text/x-python"))],
    )
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["desired_state"] == "stopped"
    assert body["metadata"]["labels"] == {"team": "x"}


def test_batching_metadata_is_kept_with_its_defaults_filled_in(api: httpx.Client) -> None:
    meta = {"model": "batched", "batching": {"max_batch_size": 8}}
    resp = api.post(
        "/api/v1/deployments", params={"start": "false"}, files=multipart(meta, package_files())
    )
    assert resp.status_code == 202, resp.text
    assert resp.json()["metadata"]["batching"] == {"max_batch_size": 8, "max_latency_ms": 5.0}
    plain = api.post(
        "/api/v1/deployments",
        params={"start": "false"},
        files=multipart({"model": "plain"}, package_files()),
    )
    assert "batching" not in plain.json()["metadata"]


def test_versions_count_per_model_and_models_endpoints(api: httpx.Client) -> None:
    ids = []
    for model in ("a", "a", "b", "a"):
        resp = api.post("/api/v1/deployments", files=multipart({"model": model}, package_files()))
        assert resp.status_code == 202
        ids.append((model, resp.json()["version"], resp.json()["deploy_id"]))
    assert [(m, v) for m, v, _ in ids] == [("a", 1), ("a", 2), ("b", 1), ("a", 3)]

    models = api.get("/api/v1/models").json()["items"]
    assert [(m["name"], m["latest_version"]) for m in models] == [("a", 3), ("b", 1)]
    a = api.get("/api/v1/models/a").json()
    assert [v["version"] for v in a["versions"]] == [3, 2, 1]
    # the newest version takes over once ready
    wait_for_status(api, ids[3][2], "ready")
    assert api.get("/api/v1/models/a").json()["active_deploy_id"] == ids[3][2]
    missing = api.get("/api/v1/models/nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"


def test_list_is_newest_first_filtered_and_paginated(api: httpx.Client) -> None:
    created = []
    for model in ("m1", "m2", "m1", "m1", "m2"):
        created.append(
            api.post(
                "/api/v1/deployments", files=multipart({"model": model}, package_files())
            ).json()["deploy_id"]
        )
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.get("/api/v1/deployments", params=params).json()
        seen += [item["deploy_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(created))
    m1 = api.get("/api/v1/deployments", params={"model": "m1"}).json()["items"]
    assert [d["version"] for d in m1] == [3, 2, 1]
    for deploy_id in created[3:]:  # the newest of each model serves, the rest stop
        wait_for_status(api, deploy_id, "ready")
    for deploy_id in created[:3]:
        wait_for_status(api, deploy_id, "stopped")
    ready = api.get("/api/v1/deployments", params={"status": "ready"}).json()["items"]
    assert {d["deploy_id"] for d in ready} == {created[3], created[4]}  # newest of each model
    bad = api.get("/api/v1/deployments", params={"status": "happy"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "validation_error"
    assert api.get("/api/v1/deployments", params={"cursor": "!!"}).status_code == 400


def test_events_and_delete(api: httpx.Client, settings: Settings, app: FastAPI) -> None:
    body = api.post(
        "/api/v1/deployments", files=multipart({"model": "gone"}, package_files())
    ).json()
    deploy_id = body["deploy_id"]
    events = api.get(f"/api/v1/deployments/{deploy_id}/events").json()
    assert events[0]["kind"] == "received"
    assert "version 1 of gone" in events[0]["message"]

    assert api.delete(f"/api/v1/deployments/{deploy_id}").status_code == 204
    assert not (settings.deployments_dir / deploy_id).exists()
    gone = api.get(f"/api/v1/deployments/{deploy_id}")
    assert gone.status_code == 404
    assert gone.json() == {
        "error": {"code": "deployment_not_found", "message": f"no deployment {deploy_id!r}"}
    }
    assert api.delete(f"/api/v1/deployments/{deploy_id}").status_code == 404
    counts = db_snapshot(app)
    assert counts["deployments"] == counts["deployment_files"] == counts["events"] == 0
    # the version counter never goes back: the next upload is version 2
    again = api.post("/api/v1/deployments", files=multipart({"model": "gone"}, package_files()))
    assert again.json()["version"] == 2


def test_health_and_unknown_route_shapes(api: httpx.Client) -> None:
    assert api.get("/health").json() == {"status": "ok"}
    resp = api.get("/api/v1/nothing-here")
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"
