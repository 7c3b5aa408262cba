"""Flooding the lookup caches on ``/serve``: made-up model names by the thousand (each once
remembered for ever, growing the server's memory), a bad token repeated (a database query
each time), and a token look-up run on the event loop (every other request waits for it).
The caches are bounded, remember misses briefly, and ask the database from a worker thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event

from deployserver.access import credentials
from deployserver.config import Settings
from tests.helpers import bearer, multipart, package_files, peak_rss_bytes, server_process

MISSES = 100


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"lookup_cache_misses": MISSES})


@pytest.fixture
def private_model(api: httpx.Client) -> str:
    """A model that needs the predict scope (no cell: the token check comes first)."""
    meta = {"model": "private"}
    resp = api.post("/api/v1/deployments?start=false", files=multipart(meta, package_files()))
    assert resp.status_code == 202, resp.text
    return "private"


@pytest.fixture
def token_queries(app: FastAPI, api: httpx.Client) -> Iterator[list[str]]:
    """Every SQL statement that reads the token table, from now on."""
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "api_tokens" in statement:
            seen.append(statement)

    engine = app.state.ds.engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


def test_made_up_model_names_leave_the_route_cache_at_its_cap(
    app: FastAPI, anon: httpx.Client, private_model: str
) -> None:
    routes = app.state.ds.routes
    anon.post(f"/serve/{private_model}/predict", json=1)  # a real model, looked up first
    for i in range(5 * MISSES):
        resp = anon.post(f"/serve/made-up-{i}/predict", json=1)
        assert resp.status_code == 404 and resp.json()["error"]["code"] == "model_not_found"
    assert len(routes) == MISSES + 1
    assert routes.known(private_model)


def test_a_bad_tokens_repeated_use_asks_the_database_once(
    app: FastAPI, anon: httpx.Client, private_model: str, token_queries: list[str]
) -> None:
    app.state.ds.token_cache.clock = lambda: 0.0  # no entry expires while we count
    for bad in ("not-a-token-we-ever-issued", "dst_0123456789abcdef_" + "A" * 43):
        for _ in range(20):
            served = anon.post(f"/serve/{private_model}/predict", json=1, headers=bearer(bad))
            assert served.status_code == 401, served.text
            listed = anon.get("/api/v1/models", headers=bearer(bad))
            assert listed.status_code == 401, listed.text
    assert len(token_queries) == 2  # one per bad token, for 40 refusals each


def test_a_token_look_up_never_blocks_other_requests(
    base_url: str, anon: httpx.Client, private_model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered, release = threading.Event(), threading.Event()
    real = credentials.authenticate

    def slow(session: Any, token: str, *, now: Any) -> credentials.Principal:
        if token == "slow-token":
            entered.set()
            release.wait(30)  # a database that takes its time
        return real(session, token, now=now)

    monkeypatch.setattr(credentials, "authenticate", slow)
    answers: list[int] = []

    def predict() -> None:
        with httpx.Client(base_url=base_url, timeout=60) as client:
            resp = client.post(f"/serve/{private_model}/predict", headers=bearer("slow-token"))
            answers.append(resp.status_code)

    caller = threading.Thread(target=predict)
    caller.start()
    try:
        assert entered.wait(10), "the look-up never started"
        # while that look-up waits on the database, the server still answers
        assert anon.get("/health", timeout=10).status_code == 200
        assert anon.post("/serve/nobody/predict", timeout=10).status_code == 404
    finally:
        release.set()
        caller.join(30)
    assert answers == [401]


def _flood(client: httpx.Client, prefix: str, count: int) -> None:
    """``count`` requests for as many distinct made-up model names (the longest allowed)."""
    for i in range(count):
        name = f"{prefix}-{i:06d}-".ljust(63, "x")
        assert client.get(f"/serve/{name}/predict").status_code == 404


def test_a_flood_of_made_up_names_does_not_grow_the_servers_memory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    env = {"DEPLOYSERVER_RUNTIME": "process"}  # no cells needed; default cache sizes
    with (
        server_process(data, env) as (url, proc, _token),
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        _flood(client, "warm", 1_500)  # past the default 1,000 remembered misses
        before = peak_rss_bytes(proc.pid)
        _flood(client, "flood", 5_000)
        growth = peak_rss_bytes(proc.pid) - before
    print(f"\npeak RSS growth over 5,000 made-up names: {growth / 1024:.0f} KiB")
    assert growth < 1024**2  # each name kept would be about 0.3 KiB: 1.5 MiB
