"""A revoked token that keeps working: a look-up that read the token (still valid) before
a revocation, and stores what it read only after the revocation cleared the token cache,
would have the token accepted from memory for seconds more. Made deterministic here by
pausing the look-up between its database read and its store while the revoke goes
through; afterwards the token is refused at once, on the API and on /serve."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest

from deployserver.access import credentials
from tests.helpers import bearer, multipart, package_files


def test_a_look_up_under_way_cannot_bring_back_a_revoked_token(
    api: httpx.Client, base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    meta = {"model": "guarded"}
    api.post("/api/v1/deployments?start=false", files=multipart(meta, package_files()))
    minted = api.post("/api/v1/tokens", json={"name": "doomed", "scopes": ["read", "predict"]})
    token, token_id = minted.json()["token"], minted.json()["id"]
    read, go_on = threading.Event(), threading.Event()
    real = credentials.authenticate

    def paused(session: Any, given: str, *, now: Any) -> credentials.Principal:
        principal = real(session, given, now=now)  # the read: still valid here ...
        if given == token:
            read.set()
            go_on.wait(30)  # ... and held before the cache stores it
        return principal

    monkeypatch.setattr(credentials, "authenticate", paused)
    answers: list[int] = []

    def look_up() -> None:
        with httpx.Client(base_url=base_url, timeout=60, headers=bearer(token)) as client:
            answers.append(client.get("/api/v1/models").status_code)

    caller = threading.Thread(target=look_up)
    caller.start()
    try:
        assert read.wait(10), "the look-up never read the token"
        assert api.delete(f"/api/v1/tokens/{token_id}").status_code == 204
    finally:
        go_on.set()
        caller.join(30)
    assert answers == [200]  # the request that was under way before the revoke finishes

    with httpx.Client(base_url=base_url, timeout=30, headers=bearer(token)) as client:
        refused = client.get("/api/v1/models")
        assert refused.status_code == 401, refused.text
        assert refused.json()["error"]["message"] == "this token was revoked"
        served = client.post("/serve/guarded/predict", json=1)
        assert served.status_code == 401, served.text
