"""Client commands over the REST API: status, list, logs, start/stop/restart/delete,
rollback, predict, models (``init`` and ``push`` live in ``cli_push``)."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from pathlib import Path
from typing import Any

from deployserver.cli import push
from deployserver.cli.output import (
    EXIT_OK,
    EXIT_USAGE,
    emit,
    handles_errors,
    human_size,
    table,
)
from deployserver.client.sdk import DeployClient, cell_path
from deployserver.domain import DeploymentStatus
from deployserver.schemas import DeploymentRead, StreamEvent

FOLLOW_INTERVAL = 1.0
FOLLOW_TAIL = 1000
_ENDED = {DeploymentStatus.FAILED, DeploymentStatus.STOPPED}


def client_options() -> argparse.ArgumentParser:
    """``--server``, ``--token`` and ``--json``, shared by every client command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--server", help="server URL (env DEPLOYSERVER_URL, default http://127.0.0.1:8000)"
    )
    common.add_argument(
        "--token",
        help="bearer token (env DEPLOYSERVER_TOKEN; for a local server the admin token "
        "in $DEPLOYSERVER_DATA_DIR/admin-token, default ./data/admin-token)",
    )
    common.add_argument(
        "--json", dest="json_output", action="store_true", help="machine-readable stdout"
    )
    return common


def connect(args: argparse.Namespace) -> DeployClient:
    return DeployClient(args.server, args.token)


def describe(record: DeploymentRead) -> str:
    """A deployment for people, one fact a line."""
    lines = [
        f"deploy_id  {record.deploy_id}",
        f"model      {record.model} (version {record.version})",
        f"status     {record.status}{'  (active)' if record.active else ''}",
    ]
    if record.status_reason:
        lines.append(f"reason     {record.status_reason}")
    if record.cell is not None:
        cell = record.cell
        lines.append(f"cell       {cell.runtime} {cell.url or ''}, restarts {cell.restarts}")
    if record.replicas is not None and record.status == DeploymentStatus.READY:
        r = record.replicas
        lines.append(f"replicas   {r.ready} ready of {r.desired} wanted ({r.tier})")
    size = human_size(sum(f.size for f in record.files))
    lines += [
        f"files      {len(record.files)} ({size})",
        f"created    {record.created_at:%Y-%m-%d %H:%M:%S}",
    ]
    return "\n".join(lines)


@handles_errors
def _status(args: argparse.Namespace) -> int:
    with connect(args) as ds:
        record = ds.get(args.deploy_id)
    emit(args, record, lambda: describe(record))
    return EXIT_OK


@handles_errors
def _list(args: argparse.Namespace) -> int:
    with connect(args) as ds:
        items = ds.list(model=args.model, status=args.status, limit=args.limit)
    rows = [
        (d.deploy_id, d.model, d.version, d.status, "yes" if d.active else "", f"{d.created_at:%c}")
        for d in items
    ]
    head = ("DEPLOY_ID", "MODEL", "VERSION", "STATUS", "ACTIVE", "CREATED")
    emit(args, [d.model_dump(mode="json") for d in items], lambda: table(head, rows))
    return EXIT_OK


@handles_errors
def _models(args: argparse.Namespace) -> int:
    with connect(args) as ds:
        items = ds.models()
    rows = [(m.name, m.active_deploy_id or "-", m.latest_version, len(m.versions)) for m in items]
    head = ("MODEL", "ACTIVE_DEPLOY_ID", "LATEST", "VERSIONS")
    emit(args, [m.model_dump(mode="json") for m in items], lambda: table(head, rows))
    return EXIT_OK


def new_lines(seen: list[str], now: list[str]) -> list[str]:
    """The lines of ``now`` after its longest prefix that ends ``seen`` (a log's new tail)."""
    for k in range(min(len(seen), len(now)), 0, -1):
        if seen[-k:] == now[:k]:
            return now[k:]
    return now


@handles_errors
def _logs(args: argparse.Namespace) -> int:
    with connect(args) as ds:
        text = ds.logs(args.deploy_id, tail=args.tail)
        sys.stdout.write(text)
        sys.stdout.flush()
        if not args.follow:
            return EXIT_OK
        seen = text.splitlines()
        while True:  # the server has no log stream: poll its tail, print what is new
            time.sleep(FOLLOW_INTERVAL)
            ended = ds.get(args.deploy_id).status in _ENDED
            now = ds.logs(args.deploy_id, tail=FOLLOW_TAIL).splitlines()
            for line in new_lines(seen, now):
                print(line, flush=True)
            seen = now
            if ended:
                return EXIT_OK


def event_line(e: StreamEvent) -> str:
    """An event for people: when, which deployment, what happened, who did it."""
    who = f"  [{e.actor}]" if e.actor else ""
    when = e.at.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    return f"{when}  {e.model} v{e.version}  {e.kind:<18} {e.message}{who}"


@handles_errors
def _events(args: argparse.Namespace) -> int:
    # --follow alone: only what happens from now on; else the last 20 first
    replay_none = args.since is not None or (args.follow and args.tail is None)
    tail = None if replay_none else (args.tail or 20)
    json_out = getattr(args, "json_output", False)
    with connect(args) as ds:
        stream = ds.stream_events(
            model=args.model,
            deploy_id=args.deploy_id,
            since=args.since,
            tail=tail,
            follow=args.follow,
        )
        if json_out and not args.follow:  # one JSON document, as every command's --json
            emit(args, [e.model_dump(mode="json") for e in stream], "")
            return EXIT_OK
        for e in stream:  # one line each (JSON lines with --json) as they come
            print(e.model_dump_json() if json_out else event_line(e), flush=True)
    return EXIT_OK


def _change(verb: str) -> Any:
    @handles_errors
    def run(args: argparse.Namespace) -> int:
        with connect(args) as ds:
            if verb == "delete":
                ds.delete(args.deploy_id)
                emit(args, {"deploy_id": args.deploy_id, "deleted": True}, "deleted")
                return EXIT_OK
            record = getattr(ds, verb)(args.deploy_id)
        emit(args, record, f"{record.deploy_id}: {record.status} ({verb} requested)")
        return EXIT_OK

    return run


@handles_errors
def _scale(args: argparse.Namespace) -> int:
    given: dict[str, float | bool | None] = {
        "min_replicas": args.min,
        "max_replicas": args.max,
        "target_concurrency": args.target,
        "idle_seconds": args.idle_seconds,
        "resend_dropped": args.resend_dropped,
    }
    if args.replicas is not None:  # a fixed number: both bounds
        given["min_replicas"] = given["max_replicas"] = args.replicas
    if all(v is None for v in given.values()):
        print("deployserver scale: give a number of replicas, or --min/--max/...", file=sys.stderr)
        return EXIT_USAGE
    with connect(args) as ds:
        record = ds.scale(args.deploy_id, **given)
    s = record.metadata.get("scaling") or {}
    human = (
        f"{record.deploy_id}: {s.get('min_replicas')} to {s.get('max_replicas')} replicas, "
        f"target {s.get('target_concurrency')} in flight, idle after {s.get('idle_seconds')} s"
    )
    emit(args, record, human)
    return EXIT_OK


@handles_errors
def _rollback(args: argparse.Namespace) -> int:
    with connect(args) as ds:
        record = ds.rollback(args.model, version=args.version, deploy_id=args.deploy_id)
    human = f"{record.model} version {record.version} ({record.deploy_id}): {record.status}"
    emit(args, record, human + ", becomes active once ready")
    return EXIT_OK


def _input(text: str) -> Any:
    """``--json`` input: JSON text, ``@file.json`` or ``-`` for stdin."""
    if text == "-":
        text = sys.stdin.read()
    elif text.startswith("@"):
        text = Path(text[1:]).read_text(encoding="utf-8")
    return json.loads(text)


@handles_errors
def _predict(args: argparse.Namespace) -> int:
    try:
        data = None if args.data is None else _input(args.data)
    except (OSError, ValueError) as exc:
        print(f"deployserver: --json: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        path = cell_path(args.path)
    except ValueError as exc:
        print(f"deployserver: --path: {exc}", file=sys.stderr)
        return EXIT_USAGE
    with connect(args) as ds:
        answer = ds.predict(args.model, data, file=args.file, path=path)
    print(json.dumps(answer, indent=2), flush=True)
    return EXIT_OK


@handles_errors
def _login(args: argparse.Namespace) -> int:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"password for {args.username}: ")
    with connect(args) as ds:
        answer = ds.login(args.username, password, scopes=args.scopes or ())
    emit(args, answer, answer.access_token)
    return EXIT_OK


@handles_errors
def _logout(args: argparse.Namespace) -> int:
    with connect(args) as ds:
        answer = ds.logout()
    text = (
        "signed out: the token is revoked"
        if answer.revoked
        else (
            "signed out; the token was made by an admin and stays valid (revoke it with "
            "DELETE /api/v1/tokens/{id})"
        )
    )
    emit(args, answer, text)
    return EXIT_OK


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the client commands to the main parser."""
    common = client_options()

    def command(name: str, run: Any, help: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help, parents=[common])
        p.set_defaults(func=run)
        return p

    push.add_commands(command)
    command("status", _status, "show a deployment").add_argument("deploy_id")
    lst = command("list", _list, "list deployments, newest first")
    lst.add_argument("--model", help="only this model's")
    lst.add_argument("--status", help="only deployments with this status")
    lst.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    logs = command("logs", _logs, "print a deployment's cell output")
    logs.add_argument("deploy_id")
    logs.add_argument("--tail", type=int, help="only the last N lines (server default 200)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    for verb, help in (
        ("start", "start a deployment's cell (a failed one gets a fresh try)"),
        ("stop", "stop a deployment's cell"),
        ("restart", "restart a deployment's cell"),
        ("delete", "stop a deployment and remove it"),
    ):
        command(verb, _change(verb), help).add_argument("deploy_id")
    scale = command("scale", _scale, "change how many replicas a deployment runs, live")
    scale.add_argument("deploy_id")
    scale.add_argument("replicas", nargs="?", type=int, help="a fixed number of replicas")
    scale.add_argument("--min", type=int, help="fewest replicas (0: scale to zero when idle)")
    scale.add_argument("--max", type=int, help="most replicas")
    scale.add_argument("--target", type=float, help="requests in flight per replica")
    scale.add_argument("--idle-seconds", type=float, help="idle time before pausing (min 0)")
    scale.add_argument(
        "--resend-dropped",
        action=argparse.BooleanOptionalAction,
        help="send a request a replica died holding once to another (off: predict has "
        "side effects outside the cell)",
    )
    rollback = command("rollback", _rollback, "make an earlier version of a model active again")
    rollback.add_argument("model")
    which = rollback.add_mutually_exclusive_group(required=True)
    which.add_argument("--version", type=int, help="the version number to go back to")
    which.add_argument("--deploy-id", help="or the deployment to go back to")
    command("models", _models, "list models and their active deployment")
    events = command("events", _events, "print deployment events (and follow new ones)")
    events.add_argument("--model", help="only this model's")
    events.add_argument("--deploy-id", help="only this deployment's")
    replay = events.add_mutually_exclusive_group()
    replay.add_argument("--tail", type=int, help="the last N recorded events (default 20)")
    replay.add_argument("--since", type=int, help="the recorded events after this event id")
    events.add_argument(
        "-f", "--follow", action="store_true", help="then print each new event as it happens"
    )
    login = command("login", _login, "trade a user's password for a token (printed)")
    login.add_argument("username")
    login.add_argument("--password-stdin", action="store_true", help="read it from stdin")
    login.add_argument("--scopes", nargs="+", help="fewer scopes than the user holds")
    command("logout", _logout, "revoke the token in use, if a password login gave it")

    predict = sub.add_parser("predict", help="send a prediction to a model's active cell")
    predict.add_argument("model")
    given = predict.add_mutually_exclusive_group(required=True)
    given.add_argument("--json", dest="data", help="JSON input: text, @file.json or - (stdin)")
    given.add_argument("--file", type=Path, help="send this file as a multipart 'file' part")
    predict.add_argument(
        "--path",
        default="predict",
        help="the cell path to call (default predict), e.g. api/v1.0/predictions, "
        "v2/models/MODEL/infer, invocations",
    )
    predict.add_argument("--server", help="server URL (env DEPLOYSERVER_URL)")
    predict.add_argument("--token", help="bearer token (env DEPLOYSERVER_TOKEN)")
    predict.set_defaults(func=_predict)
