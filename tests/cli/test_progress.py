"""The upload progress bar: drawn in a real terminal (tmux), absent when output is piped."""

from __future__ import annotations

import re
import secrets
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.conftest import Server, write_package
from tests.helpers import SCORE_PY, eventually

BIG = 200 * 1024 * 1024
BAR_CHARS = ("━", "╸", "╺")


def _package_with_big_file(folder: Path, model: str) -> Path:
    write_package(folder, {"model": model}, {"score.py": SCORE_PY})
    with (folder / "weights.bin").open("wb") as fh:
        fh.truncate(BIG)  # sparse: quick to make, read as BIG bytes of zeros
    return folder


@pytest.fixture
def tmux() -> Iterator[list[str]]:
    """``tmux -L <own socket>``: a tmux server of our own, killed afterwards."""
    command = ["tmux", "-L", f"ds-test-{secrets.token_hex(6)}"]
    try:
        yield command
    finally:
        subprocess.run([*command, "kill-server"], capture_output=True)


@pytest.mark.slow
def test_bar_shows_bytes_speed_and_eta_in_a_terminal(
    server: Server, tmux: list[str], tmp_path: Path
) -> None:
    folder = _package_with_big_file(tmp_path / "big", "progress-tty")
    wanted = ("PYTHONPATH", "DEPLOYSERVER_URL", "DEPLOYSERVER_DATA_DIR")
    env = shlex.join(["-u", "DEPLOYSERVER_TOKEN", "-u", "DEPLOYSERVER_ADMIN_TOKEN"])
    env += " " + shlex.join(f"{k}={server.cli_env()[k]}" for k in wanted)
    push = shlex.join([sys.executable, "-m", "deployserver.cli", "push", str(folder), "--no-start"])
    script = tmp_path / "run.sh"
    script.write_text(f'env {env} {push}; echo "EXIT=$?"; sleep 600\n')
    subprocess.run(
        [*tmux, "new-session", "-d", "-x", "200", "-y", "50", f"sh {shlex.quote(str(script))}"],
        check=True,
    )

    def screen() -> str:
        return subprocess.run(
            [*tmux, "capture-pane", "-p"], capture_output=True, text=True, check=True
        ).stdout

    eventually(lambda: "EXIT=" in screen(), timeout=300, what="the push to end")
    shown = screen()
    assert "EXIT=0" in shown, shown
    assert any(c in shown for c in BAR_CHARS), shown
    assert re.search(r"\b209\.7/209\.7 MB\b", shown), shown  # bytes sent / total
    assert re.search(r"\d+(\.\d+)? [kMG]?B/s", shown), shown  # speed
    assert re.search(r"eta \d+:\d\d:\d\d", shown), shown  # time remaining
    deploy_id = next(line for line in shown.splitlines() if "progress-tty version 1" in line)
    assert deploy_id.split(":")[0] in {d["deploy_id"] for d in server.deployments()}


def test_no_bar_when_output_is_not_a_terminal(server: Server, tmp_path: Path) -> None:
    folder = write_package(
        tmp_path / "pkg", {"model": "progress-pipe"}, {"w.bin": b"\x00" * 5_000_000}
    )
    (folder / "score.py").write_bytes(SCORE_PY)
    out = server.cli("push", folder, "--no-start")
    assert out.returncode == 0, out.stderr
    for stream in (out.stdout, out.stderr):
        assert not any(c in stream for c in BAR_CHARS), stream
        assert "B/s" not in stream and "eta" not in stream and "\x1b[" not in stream
    assert "progress-pipe version 1" in out.stdout
