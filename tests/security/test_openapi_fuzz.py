"""A schema-driven fuzz run of the server's own OpenAPI document (schemathesis), against a
real ``deployserver serve`` on loopback, bounded in time: no answer is a server error, and
every status answered is one the document lists for that route."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers import server_process

FUZZ_SECONDS = 60


def test_fuzzing_the_openapi_finds_no_server_error_and_no_undocumented_status(
    tmp_path: Path,
) -> None:
    st = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert st is not None, "schemathesis is in the test extras: pip install -e '.[test]'"
    with server_process(tmp_path / "data", {"DEPLOYSERVER_RUNTIME": "process"}) as (url, _p, token):
        for seed in SEEDS:
            done = _fuzz(st, url, token, seed, tmp_path)
            summary = done.stdout[-6000:]
            # A crash of the fuzzer itself (CPython raising SystemError while it compiles
            # its generated code) tells nothing of the server: run again, once, with
            # another seed. Any finding about the server fails at once.
            if done.returncode == 0 or "Failures:" in summary or TOOL_CRASH not in done.stdout:
                break
    assert done.returncode == 0, summary
    assert " passed" in summary and "failures" not in summary.split("SUMMARY")[-1], summary


SEEDS = (20261121, 20261122)
TOOL_CRASH = "SystemError"


def _fuzz(
    st: str, url: str, token: str, seed: int, folder: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            st,
            "run",
            f"{url}/openapi.json",
            "--header",
            f"Authorization: Bearer {token}",
            "--checks",
            "not_a_server_error,status_code_conformance",
            "--max-time",
            str(FUZZ_SECONDS),
            "--workers",
            "2",
            "--seed",
            str(seed),
            "--no-color",
        ],
        cwd=folder,  # schemathesis keeps its replay cache in the working folder
        capture_output=True,
        text=True,
        timeout=FUZZ_SECONDS * 5,
    )
