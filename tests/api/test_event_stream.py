"""GET /api/v1/events/stream over real HTTP: events as they commit, replay after an id,
the read scope, a stuck reader dropped without growing memory, revoked tokens and a
stopping server ending the stream."""

from __future__ import annotations

import json
import queue
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from deployserver.client.sse import Message, messages
from deployserver.config import Settings
from deployserver.main import create_app
from deployserver.state import AppState
from deployserver.store import queries
from tests.fakes import FakeRuntime
from tests.helpers import ADMIN_TOKEN, bearer, eventually, multipart, package_files, serve

STREAM = "/api/v1/events/stream"


class Reader:
    """Reads a stream on a thread of its own; its messages arrive on ``got``."""

    def __init__(self, url: str, token: str, **params: Any) -> None:
        self.got: queue.Queue[Message | None] = queue.Queue()
        self.status: int | None = None
        self._opened = threading.Event()
        self._client = httpx.Client(base_url=url, headers=bearer(token), timeout=None)
        self._thread = threading.Thread(target=self._run, args=(params,), daemon=True)
        self._thread.start()
        assert self._opened.wait(30), "the stream did not answer"

    def _run(self, params: dict[str, Any]) -> None:
        try:
            with self._client.stream("GET", STREAM, params=params) as resp:
                self.status = resp.status_code
                lines = resp.iter_lines()
                # the first frame (retry) means the server has subscribed us
                for line in lines:
                    if line.startswith("retry:"):
                        break
                self._opened.set()
                for message in messages(lines):
                    self.got.put(message)
        except Exception:  # closed under it: the reader is over either way
            pass
        finally:
            self._opened.set()
            self.got.put(None)

    def until(self, wanted: Any, timeout: float = 30) -> list[Message]:
        """Messages up to and including the first for which ``wanted(message)`` holds."""
        seen: list[Message] = []
        while True:
            message = self.got.get(timeout=timeout)
            assert message is not None, f"the stream ended first; saw {seen}"
            seen.append(message)
            if wanted(message):
                return seen

    def close(self) -> None:
        """Let go; the thread ends when the server ends the stream (as a stopping one does)."""
        self._client.close()


@pytest.fixture
def reader(base_url: str) -> Iterator[Any]:
    opened: list[Reader] = []

    def open_reader(token: str = ADMIN_TOKEN, **params: Any) -> Reader:
        opened.append(Reader(base_url, token, **params))
        return opened[-1]

    yield open_reader
    for r in opened:
        r.close()


def _data(message: Message) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(message.data)
    return data


def _mint(api: httpx.Client, name: str, *scopes: str) -> str:
    resp = api.post("/api/v1/tokens", json={"name": name, "scopes": list(scopes)})
    assert resp.status_code == 201, resp.text
    token: str = resp.json()["token"]
    return token


def test_events_arrive_as_they_commit_and_replay_after_an_id(
    api: httpx.Client, reader: Any
) -> None:
    live = reader()
    only_other = reader(model="other")
    up = api.post("/api/v1/deployments", files=multipart({"model": "streamed"}, package_files()))
    assert up.status_code == 202, up.text
    deploy_id = up.json()["deploy_id"]
    seen = live.until(lambda m: _data(m)["kind"] == "activated")
    kinds = [_data(m)["kind"] for m in seen]
    assert kinds[0] == "received" and "ready" in kinds, kinds
    first = _data(seen[0])
    assert first["deploy_id"] == deploy_id and first["model"] == "streamed"
    assert first["version"] == 1 and first["status"] == "received"
    assert first["actor"] == "admin" and "2 files" in first["message"]
    assert {"deploy_id", "model", "at", "kind", "message", "status"} <= first.keys()
    ready = next(_data(m) for m in seen if _data(m)["kind"] == "ready")
    assert ready["status"] == "ready"
    ids = [int(m.id or 0) for m in seen]
    assert ids == sorted(ids) and len(set(ids)) == len(ids), "ids rise, one per event"
    # the same events as the recorded history, in order
    history = api.get(f"/api/v1/deployments/{deploy_id}/events").json()
    assert [e["kind"] for e in history[: len(kinds)]] == kinds

    # a reader that reconnects with Last-Event-ID gets what followed, and nothing twice
    with api.stream(
        "GET", STREAM, params={"follow": "false"}, headers={"Last-Event-ID": str(ids[0])}
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        replayed = [_data(m)["kind"] for m in messages(resp.iter_lines())]
    assert replayed[: len(kinds) - 1] == kinds[1:]
    tail = api.get(STREAM, params={"follow": "false", "tail": 2, "model": "streamed"})
    assert [int(m.id or 0) for m in messages(tail.text.splitlines())] == ids[-2:]

    # stop: the request and the reconciler's steps arrive, with who asked
    assert api.post(f"/api/v1/deployments/{deploy_id}/stop").status_code == 202
    stopping = live.until(lambda m: _data(m)["kind"] == "stopped")
    asked = _data(stopping[0])
    assert (asked["kind"], asked["actor"], asked["status"]) == ("stop_requested", "admin", "ready")
    # deleting it says so, although its recorded events go with it
    assert api.delete(f"/api/v1/deployments/{deploy_id}").status_code == 204
    gone = live.until(lambda m: _data(m)["kind"] == "deleted")
    assert _data(gone[-1])["id"] is None and _data(gone[-1])["status"] == "deleted"
    assert only_other.got.empty(), "a model filter lets other models' events by"


def test_the_stream_needs_the_read_scope(api: httpx.Client, anon: httpx.Client) -> None:
    resp = anon.get(STREAM)
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "not_authenticated"
    predictor = _mint(api, "predictor", "predict", "deploy")
    resp = anon.get(STREAM, headers=bearer(predictor))
    assert resp.status_code == 403 and "'read'" in resp.json()["error"]["message"]
    reader_token = _mint(api, "watcher", "read")
    ok = anon.get(STREAM, params={"follow": "false"}, headers=bearer(reader_token))
    assert ok.status_code == 200 and ok.text.startswith("retry:")
    for bad in ({"Last-Event-ID": "12; drop"}, {"Last-Event-ID": "9" * 40}):
        resp = anon.get(STREAM, headers=bearer(reader_token) | bad)
        assert resp.status_code == 400 and resp.json()["error"]["code"] == "bad_request"
    resp = anon.get(STREAM, params={"since": -1}, headers=bearer(reader_token))
    assert resp.status_code == 422


def _record_events(app: FastAPI, deploy_id: str, count: int, per_commit: int = 500) -> None:
    """``count`` events recorded for ``deploy_id`` the way the server records them."""
    state: AppState = app.state.ds
    done = 0
    while done < count:
        with state.sessions.begin() as session:
            d = queries.get_deployment(session, deploy_id)
            for i in range(done, min(count, done + per_commit)):
                queries.add_event(session, d, "note", f"event {i} " + "x" * 200)
        done = min(count, done + per_commit)


@pytest.fixture
def small_queue_app(settings: Settings, fake_runtime: FakeRuntime) -> FastAPI:
    tight = settings.model_copy(update={"events_queue_size": 32, "events_keepalive": 0.2})
    return create_app(tight, runtime=fake_runtime)


def test_a_stuck_reader_is_dropped_and_its_queue_stays_bounded(
    small_queue_app: FastAPI, tmp_path: Path
) -> None:
    app = small_queue_app
    with serve(app) as url, httpx.Client(base_url=url, headers=bearer(ADMIN_TOKEN)) as api:
        up = api.post(
            "/api/v1/deployments",
            params={"start": "false"},
            files=multipart({"model": "noisy"}, package_files()),
        )
        deploy_id = up.json()["deploy_id"]
        hub = app.state.ds.events
        # a reader that asks for the stream, then never reads: a tiny receive window
        port = int(url.rsplit(":", 1)[1])
        stuck = socket.socket()
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect(("127.0.0.1", port))
        head = f"GET {STREAM} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\r\n"
        stuck.sendall(head.encode())
        eventually(lambda: hub.subscribers == 1, what="the stuck reader subscribed")
        (sub,) = hub.subscriptions()
        # commits of 16 events, half its queue: only a reader that stops reading falls behind
        _record_events(app, deploy_id, 20_000, per_commit=16)
        eventually(lambda: sub.ended is not None, what="the stuck reader dropped")
        assert sub.ended is not None and sub.ended.startswith("dropped")
        assert hub.dropped == 1
        assert sub.high_water <= 32, "its queue never held more than its bound"
        assert len(sub) == 0, "what it had queued is let go at once"
        # the others are not held back: a reader now hears what happens next
        fresh = Reader(url, ADMIN_TOKEN)
        _record_events(app, deploy_id, 1)
        (heard,) = fresh.until(lambda m: True)
        assert _data(heard)["message"].startswith("event 0 ")
        fresh.close()
        # what the stuck reader finally reads ends with why it was dropped
        stuck.settimeout(30)
        received = b""
        while not received.endswith(b"\r\n0\r\n\r\n"):  # the last chunk: the answer is over
            chunk = stuck.recv(65536)
            assert chunk, "the connection closed before the answer was over"
            received += chunk
        last = received.rsplit(b"event: ", 1)[1]
        assert last.startswith(b"end") and b"fell 32 events behind" in last, last
        stuck.close()
        eventually(lambda: hub.subscribers == 0, what="no subscriber left")


def test_revoking_the_token_ends_the_stream(small_queue_app: FastAPI) -> None:
    with (
        serve(small_queue_app) as url,
        httpx.Client(base_url=url, headers=bearer(ADMIN_TOKEN)) as api,
    ):
        created = api.post("/api/v1/tokens", json={"name": "watcher", "scopes": ["read"]}).json()
        watcher = Reader(url, created["token"])
        assert api.delete(f"/api/v1/tokens/{created['id']}").status_code == 204
        (end,) = watcher.until(lambda m: m.event == "end")
        assert "token" in _data(end)["message"]
        assert watcher.got.get(timeout=30) is None, "and the answer is over"
        watcher.close()


def test_a_stopping_server_ends_its_streams(app: FastAPI) -> None:
    with serve(app) as url:
        watcher = Reader(url, ADMIN_TOKEN)
    (end,) = watcher.until(lambda m: m.event == "end")
    assert _data(end)["message"] == "the server is stopping"
    watcher.close()
