"""``deployserver init`` and ``deployserver push``: from a template to a ready deployment,
with a progress bar while uploading and the status transitions while waiting."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from deployserver.cli.output import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    emit,
    handles_errors,
    human_size,
    say,
    stderr_console,
    table,
)
from deployserver.client.packing import METADATA_FILE, Package, pack
from deployserver.client.sdk import DeployClient
from deployserver.domain import DeploymentStatus
from deployserver.schemas import DeploymentRead

FAILURE_LOG_LINES = 20
ARTEFACT_SCRIPTS = ("train.py", "make_sample.py")


def templates_dir() -> Path:
    """The scoring-script templates: ``DEPLOYSERVER_TEMPLATES``, else ``templates/`` beside
    the package (a source checkout or an editable install)."""
    if env := os.environ.get("DEPLOYSERVER_TEMPLATES"):
        return Path(env)
    return Path(__file__).resolve().parents[2] / "templates"


def list_templates() -> dict[str, str]:
    """Template name -> its metadata's description."""
    found = {}
    root = templates_dir()
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        meta = folder / METADATA_FILE
        if meta.is_file():
            found[folder.name] = json.loads(meta.read_text()).get("description", "")
    return found


@handles_errors
def _init(args: argparse.Namespace) -> int:
    known = list_templates()
    if args.template not in known:
        wanted = f"unknown template {args.template!r}; " if args.template else ""
        say(f"deployserver: {wanted}choose one with --template:")
        say(table(("TEMPLATE", "DESCRIPTION"), sorted(known.items())))
        return EXIT_USAGE
    target: Path = args.dir
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        say(f"deployserver: {target} exists and is not an empty folder")
        return EXIT_USAGE
    source = templates_dir() / args.template
    skip = shutil.ignore_patterns("__pycache__")
    shutil.copytree(source, target, dirs_exist_ok=True, ignore=skip)
    steps = [f"python {s}" for s in ARTEFACT_SCRIPTS if (target / s).exists()]
    steps.append("deployserver push . --wait")
    human = f"created {target} from the {args.template} template; next:\n" + "\n".join(
        f"  cd {target} && {s}" if i == 0 else f"  {s}" for i, s in enumerate(steps)
    )
    emit(args, {"path": str(target), "template": args.template, "next": steps}, human)
    return EXIT_OK


def _dry_run(args: argparse.Namespace, package: Package) -> int:
    files = [{"path": f.path, "size": f.size} for f in package.files]
    rows = [(f.path, human_size(f.size)) for f in package.files]
    total = human_size(package.total_bytes)
    human = f"{table(('FILE', 'SIZE'), rows)}\n{len(files)} files, {total} (nothing sent)"
    emit(
        args,
        {"model": package.model, "files": files, "total_bytes": package.total_bytes},
        human,
    )
    return EXIT_OK


@contextmanager
def upload_progress(label: str) -> Iterator[Callable[[int, int], None]]:
    """A progress callback drawing bytes, speed and ETA on stderr, only when it is a
    terminal (rich leaves the bar out otherwise)."""
    console = stderr_console()
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal,
    )
    task = bar.add_task(label, total=None)

    def update(sent: int, total: int) -> None:
        bar.update(task, completed=sent, total=total)

    with bar:
        yield update


def _watch(started: float) -> Callable[[DeploymentRead], None]:
    def show(record: DeploymentRead) -> None:
        reason = f": {record.status_reason}" if record.status_reason else ""
        say(f"  {time.monotonic() - started:6.1f}s  {record.status}{reason}")

    return show


def _wait(args: argparse.Namespace, ds: DeployClient, up: DeploymentRead) -> int:
    say(f"waiting for {up.deploy_id} ({up.model} version {up.version}):")
    record = ds.wait(up.deploy_id, timeout=args.timeout, on_status=_watch(time.monotonic()))
    emit(args, record, f"{record.deploy_id}: {record.status}")
    if record.status is DeploymentStatus.READY:
        return EXIT_OK
    say(f"deployserver: {record.model} version {record.version} is {record.status}")
    if record.status_reason:
        say(f"reason: {record.status_reason}")
    lines = ds.logs(record.deploy_id, tail=FAILURE_LOG_LINES).rstrip("\n")
    if lines:
        say(f"last {FAILURE_LOG_LINES} log lines:\n{lines}")
    return EXIT_FAILED


@handles_errors
def _push(args: argparse.Namespace) -> int:
    if args.wait and args.no_start:
        say("deployserver: --wait needs a start: drop --no-start")
        return EXIT_USAGE
    package = pack(args.dir, model=args.model)
    if args.dry_run:
        return _dry_run(args, package)
    with DeployClient(args.server, args.token) as ds:
        size = human_size(package.total_bytes)
        say(f"pushing {package.model}: {len(package.files)} files, {size} to {ds.url}")
        with upload_progress(package.model) as progress:
            up = ds.push(package, start=not args.no_start, progress=progress)
        if args.wait:
            return _wait(args, ds, up)
    human = f"{up.deploy_id}: {up.model} version {up.version}, {up.status}"
    emit(args, up, human)
    return EXIT_OK


def add_commands(command: Callable[[str, Any, str], argparse.ArgumentParser]) -> None:
    """Add ``init`` and ``push`` through ``command(name, run, help)``."""
    init = command("init", _init, "start a package folder from a template")
    init.add_argument("dir", type=Path, help="the folder to create")
    init.add_argument("--template", help="template name (unknown or none: list them)")
    push = command("push", _push, "upload a package folder as a new deployment")
    push.add_argument("dir", type=Path, nargs="?", default=Path("."), help="default: .")
    push.add_argument("--model", help="model name (overrides metadata.json)")
    push.add_argument("--wait", action="store_true", help="wait for ready (exit 0) or failed")
    push.add_argument("--timeout", type=float, help="with --wait: give up after N seconds")
    push.add_argument("--no-start", action="store_true", help="record it, start no cell")
    push.add_argument("--dry-run", action="store_true", help="list what would be sent; send none")
