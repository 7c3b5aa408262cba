"""The runner: ``python -m bench [--quick] [--only NAME ...] [--profile NAME]``.

Runs each benchmark (each interleaves subject and baseline and takes medians), prints
every ratio against its goal and a table, and writes ``bench/results/latest.json``.
Exits 1 when a benchmark could not run at all; a missed goal is a figure, not a failure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from bench import async_predictions, batching, deploy, peers, proxy, replicas, scale, upload
from bench.common import Figure, Options
from bench.peers.servers import PEERS

BENCHMARKS: dict[str, ModuleType] = {
    m.NAME: m for m in (upload, deploy, proxy, scale, async_predictions, batching, peers, replicas)
}
RESULTS = Path(__file__).parent / "results"
PEERS_DIR = Path(__file__).parent / ".peers"
FULL = {"size": "1GiB", "cells": 50, "records": 1000, "duration": 10.0, "repeats": 3, "idle": 30.0}
QUICK = {"size": "64MiB", "cells": 3, "records": 50, "duration": 2.0, "repeats": 3, "idle": 11.0}
UNITS = {"g": 2**30, "m": 2**20, "k": 2**10, "": 1}


def parse_size(text: str) -> int:
    """``1GiB``, ``64MiB``, ``512k`` or plain bytes (binary units all)."""
    found = re.fullmatch(r"([\d.]+)\s*([gmk]?)(?:ib|b)?", text.strip().lower())
    if found is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 1GiB or 64MiB)")
    return int(float(found[1]) * UNITS[found[2]])


def parse_peers(text: str) -> tuple[str, ...]:
    """``none``, or a comma-separated list of the peers' names."""
    if text.strip().lower() == "none":
        return ()
    names = tuple(n.strip().lower() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in PEERS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown peers {unknown}: choose from {', '.join(PEERS)}, or 'none'"
        )
    return names


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small sizes, for development")
    p.add_argument("--only", action="append", choices=sorted(BENCHMARKS), help="repeatable")
    p.add_argument("--size", help=f"upload file size (full {FULL['size']}, quick {QUICK['size']})")
    p.add_argument("--cells", type=int, help="running cells of 'scale' (full 50)")
    p.add_argument("--records", type=int, help="deployment records of 'scale' (full 1000)")
    p.add_argument("--duration", type=float, help="seconds of each load run (full 10)")
    p.add_argument("--repeats", type=int, help="interleaved rounds per figure (3)")
    p.add_argument("--idle", type=float, help="seconds of the idle-CPU window (full 30)")
    p.add_argument(
        "--cold",
        action=argparse.BooleanOptionalAction,
        help="also time a deploy that builds its environment image (default: on unless --quick)",
    )
    p.add_argument(
        "--profile",
        choices=sorted(BENCHMARKS),
        help="sample that benchmark's server with py-spy into bench/results/",
    )
    p.add_argument(
        "--peers",
        type=parse_peers,
        default=tuple(PEERS),
        help=f"servers the 'peers' benchmark compares with: comma-separated of "
        f"{', '.join(PEERS)}, or 'none' for the cell alone (default: all)",
    )
    p.add_argument(
        "--peers-dir",
        type=Path,
        default=PEERS_DIR,
        help="where the peers' virtualenvs are installed once and reused (default bench/.peers)",
    )
    p.add_argument("--results", type=Path, default=RESULTS, help="where JSON and profiles go")
    p.add_argument("--work", type=Path, help="scratch folder (default: the system's temp)")
    return p.parse_args(argv)


def options(args: argparse.Namespace, work: Path) -> Options:
    base = QUICK if args.quick else FULL

    def pick(name: str) -> Any:
        value = getattr(args, name)
        return base[name] if value is None else value

    return Options(
        quick=args.quick,
        size=parse_size(pick("size")),
        cells=pick("cells"),
        records=pick("records"),
        duration=pick("duration"),
        repeats=pick("repeats"),
        idle=pick("idle"),
        cold=not args.quick if args.cold is None else args.cold,
        profile=args.profile,
        results=args.results,
        work=work,
        peers=args.peers,
        peers_dir=args.peers_dir.resolve(),
    )


def machine() -> str:
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return (
        f"{os.cpu_count()} cores, {pages / 2**30:.0f} GiB, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}"
    )


def table(results: dict[str, dict[str, Any]]) -> str:
    """The figures as a Markdown table (what the README's Performance section holds)."""
    rows = ["| benchmark | figure | ratio | goal | met |", "|---|---|---|---|---|"]
    for name, result in results.items():
        if "error" in result:
            rows.append(f"| {name} | could not run: {result['error'][:80]} | - | - | - |")
        for fig in result.get("figures", []):
            ratio = "pending" if fig["ratio"] is None else f"{fig['ratio']:.2f}"
            met = {True: "yes", False: "**no**", None: "-"}[fig["met"]]
            title = fig["name"].split(": ", 1)[-1]
            rows.append(f"| {name} | {title} | {ratio} | {fig['goal']} | {met} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.results.mkdir(parents=True, exist_ok=True)
    if args.work:
        args.work.mkdir(parents=True, exist_ok=True)
    opts = options(args, Path())  # sizes checked before anything is made
    work = opts.work = Path(tempfile.mkdtemp(prefix="deployserver-bench-", dir=args.work))
    chosen = args.only or list(BENCHMARKS)
    results: dict[str, dict[str, Any]] = {}
    started = datetime.now(UTC)
    try:
        for name in chosen:
            print(f"== {name}: {BENCHMARKS[name].__doc__.splitlines()[0]}", flush=True)
            t0 = time.monotonic()
            try:
                figures: list[Figure] = BENCHMARKS[name].run(opts)
            except Exception as exc:  # one broken benchmark still leaves the others' figures
                print(f"  {name} could not run: {type(exc).__name__}: {exc}", flush=True)
                results[name] = {"error": f"{type(exc).__name__}: {exc}"}
                continue
            results[name] = {
                "seconds": round(time.monotonic() - t0, 1),
                "figures": [f.as_dict() for f in figures],
            }
            for fig in figures:  # each benchmark's ratios come last
                print(f"  -> {fig.line()}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {
        "date": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "options": {k: str(v) for k, v in vars(opts).items()},
        "benchmarks": results,
    }
    out = args.results / "latest.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{started:%Y-%m-%d}, {machine()}\n\n{table(results)}\n\nwritten: {out}")
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
