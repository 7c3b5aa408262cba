"""``deployserver token ...`` and ``deployserver user ...``: work on the database directly."""

from __future__ import annotations

import argparse
import getpass
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from deployserver.access import accounts, credentials
from deployserver.config import Settings
from deployserver.errors import BadRequest
from deployserver.store import db, orm

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MIN_PASSWORD = 8  # as the API's UserCreate
CLI_ACTOR = "cli"  # the name logged for changes made from the command line


def parse_duration(text: str) -> int:
    """Seconds from ``3600``, ``90m``, ``12h`` or ``30d``."""
    match = re.fullmatch(r"([1-9][0-9]*)([smhd]?)", text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 3600, 90m, 12h, 30d")
    return int(match.group(1)) * _UNITS[match.group(2) or "s"]


@contextmanager
def _transaction(settings: Settings) -> Iterator[Session]:
    """A session in a transaction on the configured database, upgraded to head first."""
    url = db.prepare(settings)
    engine = db.make_engine(url)
    try:
        with db.make_sessionmaker(engine).begin() as session:
            yield session
    finally:
        engine.dispose()


def _show(row: orm.ApiToken) -> str:
    expires = row.expires_at.isoformat(timespec="seconds") if row.expires_at else "never"
    state = "revoked" if row.revoked_at else f"expires {expires}"
    user = f" (login of {row.user.name})" if row.user else ""
    return f"{row.public_id}\t{row.name}\t{row.scopes}\t{state}{user}"


def _token(args: argparse.Namespace, settings: Settings) -> int:
    now = orm.utcnow()
    with _transaction(settings) as session:
        if args.verb == "create":
            expires = None if args.expires_in is None else now + timedelta(seconds=args.expires_in)
            _row, plaintext = credentials.issue_token(
                session,
                name=args.name,
                scopes=credentials.parse_scopes(args.scopes),
                now=now,
                expires_at=expires,
                actor=CLI_ACTOR,
            )
            print(plaintext)
            print("this token is shown once; the server keeps only its hash", file=sys.stderr)
        elif args.verb == "list":
            for row in credentials.list_tokens(session):
                print(_show(row))
        else:
            credentials.revoke_token(session, args.token_id, now=now, actor=CLI_ACTOR)
    return 0


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise BadRequest("the passwords differ")
    if len(password) < MIN_PASSWORD:
        raise BadRequest(f"a password needs at least {MIN_PASSWORD} characters")
    return password


def _user(args: argparse.Namespace, settings: Settings) -> int:
    if args.verb == "create":
        password = _read_password(args.password_stdin)
    with _transaction(settings) as session:
        if args.verb == "create":
            accounts.create_user(
                session,
                name=args.name,
                password=password,
                scopes=args.scopes,
                now=orm.utcnow(),
                actor=CLI_ACTOR,
            )
        elif args.verb == "list":
            for user in accounts.list_users(session):
                print(f"{user.name}\t{user.scopes}")
        else:
            accounts.delete_user(session, args.name, actor=CLI_ACTOR)
    return 0


def add_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    add_server_options: Callable[[argparse.ArgumentParser], None],
    settings_from: Callable[[argparse.Namespace], Settings],
) -> None:
    """Add the ``token`` and ``user`` command groups to the main parser."""
    scopes_help = f"scopes, any of: {', '.join(credentials.SCOPES)} (admin implies all)"

    def leaf(group: Any, name: str, run: Any, help: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = group.add_parser(name, help=help)
        add_server_options(p)
        p.set_defaults(func=lambda args: run(args, settings_from(args)))
        return p

    tsub = sub.add_parser("token", help="create, list or revoke API tokens").add_subparsers(
        dest="verb", required=True
    )
    create = leaf(tsub, "create", _token, "mint a token and print it (once)")
    create.add_argument("name", help="who or what uses it; events show this name")
    create.add_argument("--scopes", nargs="+", required=True, help=scopes_help)
    create.add_argument("--expires-in", type=parse_duration, help="e.g. 3600, 90m, 12h, 30d")
    leaf(tsub, "list", _token, "every token, never its secret")
    leaf(tsub, "revoke", _token, "revoke a token by its id (see list)").add_argument("token_id")

    usub = sub.add_parser("user", help="create, list or delete users who log in").add_subparsers(
        dest="verb", required=True
    )
    ucreate = leaf(usub, "create", _user, "add a user; prompts for the password")
    ucreate.add_argument("name")
    ucreate.add_argument("--scopes", nargs="+", required=True, help=scopes_help)
    ucreate.add_argument("--password-stdin", action="store_true", help="read it from stdin")
    leaf(usub, "list", _user, "every user and their scopes")
    leaf(usub, "delete", _user, "remove a user and their login tokens").add_argument("name")
