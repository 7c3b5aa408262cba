"""Each benchmark runs at a tiny size and reports a figure or "not available yet".

No timing is asserted here, ever: the figures are for people (``python -m bench``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--quick", "--repeats", "1", "--duration", "1", "--size", "4MiB"]
TINY += ["--records", "6", "--cells", "2", "--idle", "1", "--no-cold"]


def run_bench(name: str, tmp_path: Path, *extra: str) -> list[dict[str, Any]]:
    """``python -m bench --only name`` at the tiny size; the figures it wrote."""
    args = [sys.executable, "-m", "bench", *TINY, "--only", name, *extra]
    args += ["--results", str(tmp_path), "--work", str(tmp_path / "work")]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "latest.json").read_text())
    figures: list[dict[str, Any]] = report["benchmarks"][name]["figures"]
    assert figures
    for fig in figures:
        # a measured figure (an idle CPU share may truly be 0 over a tiny window), or the
        # benchmark's own word that its route is missing: never an absent number
        assert (fig["ratio"] is None and fig["note"] == "not available yet") or (
            isinstance(fig["ratio"], (int, float)) and fig["ratio"] >= 0
        )
        assert fig["name"] in done.stdout
    assert not list((tmp_path / "work").iterdir()), "the benchmark left scratch files"
    return figures


@pytest.mark.slow
def test_upload_benchmark_runs(tmp_path: Path) -> None:
    figures = run_bench("upload", tmp_path)
    assert all(f["ratio"] is not None for f in figures)


@pytest.mark.slow
@pytest.mark.docker
@pytest.mark.parametrize("name", ["deploy", "proxy", "scale", "async", "batching", "replicas"])
def test_docker_benchmark_runs(name: str, tmp_path: Path, docker_client: Any) -> None:
    run_bench(name, tmp_path)
    left = docker_client.containers.list(all=True, filters={"label": "deployserver.test=1"})
    assert not [c for c in left if c.name.startswith("ds-bench-")]


@pytest.mark.slow
def test_peers_benchmark_runs_for_the_cell_alone(tmp_path: Path) -> None:
    """``--peers none``: the cell straight and through /serve (process runtime), and no
    peer installed: nothing is downloaded, no virtualenv made."""
    peers_dir = tmp_path / "peers"
    figures = run_bench("peers", tmp_path, "--peers", "none", "--peers-dir", str(peers_dir))
    assert [f["name"] for f in figures] == [
        "peers: cell via /serve / cell direct throughput, 32 concurrent",
        "peers: cell via /serve / cell direct p50, 1 concurrent",
    ]
    assert all(f["ratio"] > 0 for f in figures)
    assert not peers_dir.exists()


def test_peers_switch_names_the_peers_or_none() -> None:
    import argparse

    from bench.__main__ import parse_peers

    assert parse_peers("none") == ()
    assert parse_peers("MLServer, bentoml") == ("mlserver", "bentoml")
    with pytest.raises(argparse.ArgumentTypeError, match=r"unknown peers \['torchserve'\]"):
        parse_peers("mlserver,torchserve")
