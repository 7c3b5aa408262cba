"""Users: argon2id password hashes, and the password login that hands out short tokens.

Login tokens live in the same table as API tokens, with an expiry and the user's id:
one lookup path for every request, revocable like any token, gone with their user,
and no signing key to keep secret or rotate.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from deployserver.access import credentials
from deployserver.errors import Conflict, InvalidGrant, InvalidScope, UserNotFound
from deployserver.store import identities, orm

log = logging.getLogger("deployserver.access.accounts")
_hasher = PasswordHasher()  # argon2id with the RFC 9106 low-memory profile


@functools.cache
def _decoy_hash() -> str:
    """Checked against when the user is unknown, so a login takes as long either way."""
    return _hasher.hash("not a password anyone has")


def create_user(
    session: Session,
    *,
    name: str,
    password: str,
    scopes: Iterable[str],
    now: datetime,
    actor: str,
) -> orm.User:
    user = orm.User(
        name=name,
        password_hash=_hasher.hash(password),
        scopes=credentials.join_scopes(credentials.parse_scopes(scopes)),
        created_at=now,
    )
    try:
        with session.begin_nested():
            session.add(user)
    except IntegrityError as exc:
        raise Conflict(f"a user named {name!r} already exists") from exc
    log.info("user %s (%s) created by %s", name, user.scopes, actor)
    return user


def get_user(session: Session, name: str) -> orm.User:
    user = identities.find_user(session, name)
    if user is None:
        raise UserNotFound(f"no user {name!r}")
    return user


def list_users(session: Session) -> Sequence[orm.User]:
    return identities.all_users(session)


def delete_user(session: Session, name: str, *, actor: str) -> None:
    """Remove a user; their login tokens go with them."""
    user = get_user(session, name)
    log.info("user %s deleted by %s", name, actor)
    identities.remove_user(session, user)


def _verified(session: Session, name: str, password: str) -> orm.User:
    # The decoy is made by the first login of any kind, so that one extra hash is no clue
    # to whether a name exists.
    decoy = _decoy_hash()
    user = identities.find_user(session, name)
    try:
        _hasher.verify(decoy if user is None else user.password_hash, password)
    except (VerificationError, InvalidHashError):
        user = None
    if user is None:
        raise InvalidGrant("unknown user or wrong password")
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    return user


def login(
    session: Session,
    *,
    name: str,
    password: str,
    scopes: Iterable[str],
    lifetime: int,
    now: datetime,
) -> tuple[str, orm.ApiToken]:
    """A token for ``lifetime`` seconds with the asked scopes (default: all the user's)."""
    user = _verified(session, name, password)
    held = frozenset(user.scopes.split())
    asked = credentials.parse_scopes(scopes) or held
    # admin implies every scope, so an admin may ask for a token with less (say, read)
    if "admin" not in held and not asked <= held:
        missing = ", ".join(sorted(asked - held))
        raise InvalidScope(f"user {name!r} does not hold the scope(s) {missing}")
    # Expired login tokens are dead weight: drop them while we are here.
    identities.drop_expired_login_tokens(session, now)
    row, plaintext = credentials.issue_token(
        session,
        name=user.name,
        scopes=asked,
        now=now,
        expires_at=now + timedelta(seconds=lifetime),
        user=user,
    )
    return plaintext, row
