"""The command line as a user runs it: a subprocess against a real server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from deployserver.cli.commands import new_lines
from tests.cli.conftest import Server, broken_package, write_package
from tests.helpers import SCORE_PY, eventually


def _stored_files(server: Server, deploy_id: str) -> list[str]:
    record = server.api.get(f"/api/v1/deployments/{deploy_id}").json()
    return sorted(f["path"] for f in record["files"])


def test_init_then_push_wait_ends_ready(server: Server, tmp_path: Path) -> None:
    folder = tmp_path / "sentiment"
    made = server.cli("init", folder, "--template", "python")
    assert made.returncode == 0, made.stderr
    assert (folder / "score.py").exists() and "push . --wait" in made.stdout

    pushed = server.cli("push", folder, "--wait", "--model", "cli-sentiment")
    assert pushed.returncode == 0, pushed.stderr
    # the transitions, live: polling may miss a short "starting", never the end
    lines = pushed.stderr.splitlines()
    assert lines[-1].split()[-1] == "ready", pushed.stderr
    deploy_id = pushed.stdout.split(":")[0]
    assert server.api.get(f"/api/v1/deployments/{deploy_id}").json()["status"] == "ready"
    kinds = [e["kind"] for e in server.api.get(f"/api/v1/deployments/{deploy_id}/events").json()]
    assert kinds[:3] == ["received", "starting", "ready"], kinds

    status = server.cli("status", deploy_id, "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["active"] is True
    listed = server.cli("list", "--model", "cli-sentiment")
    assert deploy_id in listed.stdout and "ready" in listed.stdout
    assert "cli-sentiment" in server.cli("models").stdout
    assert "loaded" in server.cli("logs", deploy_id, "--tail", "20").stdout


def test_init_lists_the_templates_for_an_unknown_name(server: Server, tmp_path: Path) -> None:
    out = server.cli("init", tmp_path / "x", "--template", "nope")
    assert out.returncode == 2
    assert "unknown template 'nope'" in out.stderr
    assert "python" in out.stderr and "sklearn" in out.stderr
    assert not (tmp_path / "x").exists()


def test_broken_package_exits_non_zero_with_the_reason(server: Server, tmp_path: Path) -> None:
    out = server.cli("push", broken_package(tmp_path / "broken", "cli-broken"), "--wait")
    assert out.returncode == 1
    assert "failed" in out.stderr
    assert "ValueError: weights are corrupt" in out.stderr
    assert "last 20 log lines" in out.stderr


def test_deployignore_is_honoured(server: Server, tmp_path: Path) -> None:
    files = {
        "score.py": SCORE_PY,
        "weights/model.bin": b"\x01" * 100,
        "data/train.csv": b"a,b\n",
        "debug.log": b"noise",
        ".deployignore": b"data/\n*.log\n",
        "__pycache__/score.cpython-311.pyc": b"\x00",
    }
    folder = write_package(tmp_path / "pkg", {"model": "cli-ignore"}, files)
    out = server.cli("push", folder, "--no-start", "--json")
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)  # stdout is the record and nothing else
    assert _stored_files(server, record["deploy_id"]) == ["score.py", "weights/model.bin"]


def test_files_patterns_are_honoured(server: Server, tmp_path: Path) -> None:
    metadata = {"model": "cli-globs", "files": ["*.py", "weights/"]}
    files = {
        "score.py": SCORE_PY,
        "weights/model.bin": b"\x01",
        "notes.md": b"#",
        ".deployignore": b"*.py\n",  # not consulted when 'files' is given
    }
    out = server.cli("push", write_package(tmp_path / "pkg", metadata, files), "--no-start")
    assert out.returncode == 0, out.stderr
    deploy_id = out.stdout.split(":")[0]
    assert _stored_files(server, deploy_id) == ["score.py", "weights/model.bin"]


def test_dry_run_lists_and_uploads_nothing(server: Server, tmp_path: Path) -> None:
    folder = write_package(
        tmp_path / "pkg", {"model": "cli-dry"}, {"score.py": SCORE_PY, "w.bin": b"\x00" * 2048}
    )
    before = [d["deploy_id"] for d in server.deployments()]
    out = server.cli("push", folder, "--dry-run", "--json")
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["files"] == [
        {"path": "score.py", "size": len(SCORE_PY)},
        {"path": "w.bin", "size": 2048},
    ]
    human = server.cli("push", folder, "--dry-run")
    assert "w.bin" in human.stdout and "nothing sent" in human.stdout
    assert [d["deploy_id"] for d in server.deployments()] == before


def test_lifecycle_commands_and_their_exit_codes(server: Server, tmp_path: Path) -> None:
    folder = write_package(tmp_path / "pkg", {"model": "cli-cycle"}, {"score.py": SCORE_PY})
    first = json.loads(server.cli("push", folder, "--wait", "--json").stdout)
    assert first["status"] == "ready" and first["version"] == 1
    second = json.loads(server.cli("push", folder, "--wait", "--json").stdout)
    assert second["version"] == 2

    back = server.cli("rollback", "cli-cycle", "--version", "1", "--json")
    assert back.returncode == 0 and json.loads(back.stdout)["deploy_id"] == first["deploy_id"]
    for verb in ("stop", "start", "restart"):
        out = server.cli(verb, second["deploy_id"], "--json")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["deploy_id"] == second["deploy_id"]
    gone = server.cli("delete", second["deploy_id"])
    assert gone.returncode == 0, gone.stderr

    missing = server.cli("status", second["deploy_id"], "--json")
    assert missing.returncode == 3
    assert json.loads(missing.stdout)["error"]["code"] == "deployment_not_found"
    assert "deployment_not_found" in missing.stderr

    no_meta = server.cli("push", tmp_path)
    assert no_meta.returncode == 2 and "metadata.json is missing" in no_meta.stderr
    bad_token = server.cli("list", "--token", "wrong")
    assert bad_token.returncode == 3 and "not_authenticated" in bad_token.stderr
    nowhere = server.cli("list", "--server", "http://127.0.0.1:9")
    assert nowhere.returncode == 4 and "cannot reach" in nowhere.stderr


def test_logs_follow_prints_until_the_deployment_stops(server: Server, tmp_path: Path) -> None:
    folder = write_package(tmp_path / "pkg", {"model": "cli-follow"}, {"score.py": SCORE_PY})
    deploy_id = json.loads(server.cli("push", folder, "--wait", "--json").stdout)["deploy_id"]
    printed = tmp_path / "follow.out"
    with printed.open("w") as out:
        follow = subprocess.Popen(
            [sys.executable, "-m", "deployserver.cli", "logs", deploy_id, "--follow"],
            env=server.cli_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        eventually(lambda: "ready" in printed.read_text(), what="the cell's output so far")
        assert follow.poll() is None  # still following
        server.api.post(f"/api/v1/deployments/{deploy_id}/stop")
        assert follow.wait(timeout=120) == 0, printed.read_text()  # ends once stopped
    finally:
        follow.kill()


def test_new_lines_is_what_a_later_tail_adds() -> None:
    assert new_lines(["a", "b", "c"], ["b", "c", "d", "e"]) == ["d", "e"]
    assert new_lines(["a", "b"], ["a", "b"]) == []
    assert new_lines([], ["x"]) == ["x"]
    assert new_lines(["old"], ["new"]) == ["new"]  # rotated past what we saw: all of it


def test_scale_changes_the_replicas_and_refuses_bad_numbers(server: Server, tmp_path: Path) -> None:
    folder = write_package(tmp_path / "pkg", {"model": "cli-scale"}, {"score.py": SCORE_PY})
    deploy_id = server.cli("push", folder, "--no-start").stdout.split(":")[0]
    fixed = server.cli("scale", deploy_id, "3", "--json")
    assert fixed.returncode == 0, fixed.stderr
    scaling = json.loads(fixed.stdout)["metadata"]["scaling"]
    assert (scaling["min_replicas"], scaling["max_replicas"]) == (3, 3)
    ranged = server.cli("scale", deploy_id, "--min", "0", "--target", "2", "--idle-seconds", "60")
    assert ranged.returncode == 0, ranged.stderr
    assert "0 to 3 replicas, target 2.0 in flight, idle after 60.0 s" in ranged.stdout
    no_resend = server.cli("scale", deploy_id, "--no-resend-dropped", "--json")
    assert json.loads(no_resend.stdout)["metadata"]["scaling"]["resend_dropped"] is False
    nothing = server.cli("scale", deploy_id)
    assert nothing.returncode == 2 and "give a number of replicas" in nothing.stderr
    crossed = server.cli("scale", deploy_id, "--min", "5", "--max", "2")
    assert crossed.returncode == 3 and "invalid_scaling" in crossed.stderr
