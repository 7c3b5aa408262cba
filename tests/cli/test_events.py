"""`deployserver events` and the SDK's stream_events against a real server: the recorded
events, then new ones as they happen (--follow), as lines or JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from deployserver.client.sdk import DeployClient, Forbidden
from deployserver.schemas import StreamEvent
from tests.cli.conftest import Server, write_package
from tests.helpers import SCORE_PY, wait_for_status

pytestmark = pytest.mark.slow


def _push(server: Server, folder: Path, model: str) -> str:
    package = write_package(folder, {"model": model}, {"score.py": SCORE_PY})
    with DeployClient(server.url, server.token) as ds:
        deploy_id = ds.push(package).deploy_id
    wait_for_status(server.api, deploy_id, "ready")
    return deploy_id


def test_events_prints_the_recorded_ones_as_lines_and_json(server: Server, tmp_path: Path) -> None:
    deploy_id = _push(server, tmp_path / "a", "evented")
    done = server.cli("events", "--model", "evented")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[4] for line in lines][:4] == ["received", "starting", "ready", "activated"]
    assert "evented v1" in lines[0] and "[admin]" in lines[0]
    as_json = server.cli("events", "--deploy-id", deploy_id, "--tail", "2", "--json")
    assert as_json.returncode == 0, as_json.stderr
    events = json.loads(as_json.stdout)
    assert [e["kind"] for e in events] == ["ready", "activated"]
    assert {e["deploy_id"] for e in events} == {deploy_id}
    again = server.cli("events", "--since", str(events[0]["id"]), "--json", "--model", "evented")
    assert [e["kind"] for e in json.loads(again.stdout)] == ["activated"]


def test_events_follow_prints_new_ones_as_they_happen(server: Server, tmp_path: Path) -> None:
    _push(server, tmp_path / "before", "followed")
    follower = subprocess.Popen(
        [sys.executable, "-m", "deployserver.cli", "events", "--follow", "--tail", "1", "--json"],
        env=server.cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stdout is not None
        # the last recorded event comes first: the stream is open, the next ones will follow
        assert json.loads(follower.stdout.readline())["model"] == "followed"
        deploy_id = _push(server, tmp_path / "after", "followed")
        seen = []
        for line in follower.stdout:
            event = json.loads(line)
            if event["deploy_id"] == deploy_id:
                seen.append(event["kind"])
            if "activated" in seen:
                break
        assert seen[:2] == ["received", "starting"] and "ready" in seen
        assert follower.poll() is None, "it keeps following"
    finally:
        follower.terminate()
        follower.wait(30)


def test_the_sdk_streams_typed_events_and_raises_the_servers_errors(server: Server) -> None:
    with DeployClient(server.url, server.token) as ds:
        events = list(ds.stream_events(follow=False, tail=3))
    assert len(events) == 3 and all(isinstance(e, StreamEvent) for e in events)
    assert [e.id for e in events] == sorted(e.id for e in events if e.id is not None)
    made = server.api.post("/api/v1/tokens", json={"name": "no-read", "scopes": ["predict"]})
    with DeployClient(server.url, made.json()["token"]) as ds, pytest.raises(Forbidden) as no:
        list(ds.stream_events(follow=False))
    assert no.value.code == "permission_denied" and "'read'" in no.value.message
    done = server.cli("events", "--json", DEPLOYSERVER_TOKEN=made.json()["token"])
    assert done.returncode == 3 and json.loads(done.stdout)["error"]["code"] == "permission_denied"
