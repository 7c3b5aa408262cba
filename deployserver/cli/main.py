"""The ``deployserver`` command line: serve, db upgrade/downgrade, token and user, and the
client commands (init, push, status, list, logs, predict, ...: see ``cli_client``)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from deployserver.cli import admin, commands
from deployserver.config import Settings
from deployserver.errors import DeployServerError


def _settings_from(args: argparse.Namespace) -> Settings:
    overrides = {
        key: value
        for key in ("host", "port", "grpc_port", "data_dir", "database_url", "runtime")
        if (value := getattr(args, key, None)) is not None
    }
    return Settings(**overrides)


def _serve(args: argparse.Namespace) -> int:

    from deployserver.api.limits import Server, server_config
    from deployserver.main import create_app

    settings = _settings_from(args)
    app = create_app(settings)
    Server(server_config(app, settings, log_level=args.log_level)).run()
    return 0


def _db(args: argparse.Namespace) -> int:
    from deployserver.store import db

    settings = _settings_from(args)
    if args.db_command == "upgrade":
        db.prepare(settings, args.revision or "head")
    else:
        db.downgrade(settings.resolved_database_url, args.revision or "base")
    return 0


def _add_server_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, help="data folder (env DEPLOYSERVER_DATA_DIR)")
    p.add_argument("--database-url", help="SQLAlchemy URL (env DEPLOYSERVER_DATABASE_URL)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deployserver", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the deployment server")
    serve.add_argument("--host", help="bind address (env DEPLOYSERVER_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (env DEPLOYSERVER_PORT, default 8000)")
    serve.add_argument(
        "--grpc-port",
        type=int,
        help="also serve the Open Inference Protocol over gRPC on this port "
        "(env DEPLOYSERVER_GRPC_PORT; default: off)",
    )
    serve.add_argument(
        "--runtime",
        choices=["docker", "process", "swarm"],
        help="cell runtime (env DEPLOYSERVER_RUNTIME)",
    )
    serve.add_argument("--log-level", default="info")
    _add_server_options(serve)
    serve.set_defaults(func=_serve)

    dbp = sub.add_parser("db", help="create or migrate the database schema")
    dbsub = dbp.add_subparsers(dest="db_command", required=True)
    for name in ("upgrade", "downgrade"):
        p = dbsub.add_parser(name, help=f"alembic {name}")
        p.add_argument("revision", nargs="?")
        _add_server_options(p)
        p.set_defaults(func=_db)
    admin.add_commands(sub, _add_server_options, _settings_from)
    commands.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except DeployServerError as exc:
        print(f"deployserver: {exc.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
