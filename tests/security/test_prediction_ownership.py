"""Asynchronous predictions hold callers' requests and answers: any ``predict`` token
could read, list and delete anyone's. Each is now its submitter's: another caller gets
404 (as for one that does not exist), an admin sees them all."""

from __future__ import annotations

import httpx

from tests.helpers import bearer, multipart, package_files


def _token(api: httpx.Client, name: str, *scopes: str) -> dict[str, str]:
    created = api.post("/api/v1/tokens", json={"name": name, "scopes": list(scopes)})
    assert created.status_code == 201, created.text
    return bearer(created.json()["token"])


def test_a_prediction_is_its_submitters_alone(api: httpx.Client, anon: httpx.Client) -> None:
    up = api.post("/api/v1/deployments", files=multipart({"model": "shared"}, package_files()))
    assert up.status_code == 202, up.text
    alice, bob = _token(api, "alice", "predict"), _token(api, "bob", "predict")
    sent = anon.post("/api/v1/models/shared/predictions", json={"secret": 1}, headers=alice)
    assert sent.status_code == 202, sent.text
    request_id = sent.json()["request_id"]

    for path in (f"/api/v1/predictions/{request_id}", f"/api/v1/predictions/{request_id}/result"):
        refused = anon.get(path, headers=bob)
        assert refused.status_code == 404, refused.text
        assert refused.json()["error"]["code"] == "prediction_not_found"
    assert anon.get("/api/v1/predictions", headers=bob).json()["items"] == []
    assert anon.delete(f"/api/v1/predictions/{request_id}", headers=bob).status_code == 404
    dataloop = f"/serve/shared/predictResults/{request_id}"
    assert anon.get(dataloop, headers=bob).status_code == 404
    assert anon.get("/serve/shared/predictResults", headers=bob).json() == []
    assert anon.delete("/serve/shared/deleteAll", headers=bob).status_code == 200

    mine = anon.get(f"/api/v1/predictions/{request_id}", headers=alice)
    assert mine.status_code == 200 and mine.json()["model"] == "shared"
    listed = anon.get("/api/v1/predictions", headers=alice).json()["items"]
    assert [p["request_id"] for p in listed] == [request_id]
    assert api.get(f"/api/v1/predictions/{request_id}").status_code == 200  # admin
    assert anon.delete(f"/api/v1/predictions/{request_id}", headers=alice).status_code == 204
    assert api.get(f"/api/v1/predictions/{request_id}").status_code == 404
