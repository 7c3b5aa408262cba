"""API tokens: scopes, the ``dst_<id>_<secret>`` format, issue, check, revoke, first admin."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy.orm import Session

from deployserver.config import Settings
from deployserver.domain import ADMIN_TOKEN_FILE
from deployserver.errors import InvalidScope, NotAuthenticated, TokenNotFound
from deployserver.store import identities, orm

log = logging.getLogger("deployserver.access.credentials")

SCOPES = {
    "read": "read deployments, models, events and logs",
    "deploy": "upload, start, stop, restart, delete and roll back deployments",
    "predict": "send predictions to models (not needed for models marked public)",
    "admin": "manage tokens and users; implies every other scope",
}
ADMIN_TOKEN_NAME = "admin"  # noqa: S105 (the name events show)
ENV_PUBLIC_ID = "env"
"""Lookup id of the operator's ``DEPLOYSERVER_ADMIN_TOKEN`` (any token not in our format)."""

_PREFIX = "dst_"
_FORMAT = re.compile(r"^dst_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
_MAX_TOKEN_LENGTH = 512


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's public id, its name (the actor in events) and scopes."""

    token_id: str
    name: str
    scopes: frozenset[str]
    expires_at: datetime | None = None

    def allows(self, scope: str) -> bool:
        """``admin`` can do everything: it could mint itself any other scope anyway."""
        return "admin" in self.scopes or scope in self.scopes


def parse_scopes(values: Iterable[str]) -> frozenset[str]:
    """Scopes from words (commas or spaces between them); unknown ones are refused."""
    words = frozenset(w for v in values for w in re.split(r"[,\s]+", v) if w)
    unknown = sorted(words - SCOPES.keys())
    if unknown:
        raise InvalidScope(f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(SCOPES)}")
    return words


def join_scopes(scopes: Iterable[str]) -> str:
    return " ".join(sorted(scopes))


def _digest(secret: str) -> str:
    # A fast hash is right here: the secrets are 256 random bits, not guessable passwords.
    return hashlib.sha256(secret.encode()).hexdigest()


def _split(token: str) -> tuple[str, str]:
    """(public id, secret) of a token; the operator's own token is looked up as ``env``."""
    if not token.startswith(_PREFIX):
        return ENV_PUBLIC_ID, token
    match = _FORMAT.match(token)
    if match is None:
        raise NotAuthenticated("invalid token")
    return match.group(1), match.group(2)


def issue_token(
    session: Session,
    *,
    name: str,
    scopes: Iterable[str],
    now: datetime,
    expires_at: datetime | None = None,
    user: orm.User | None = None,
    actor: str | None = None,
) -> tuple[orm.ApiToken, str]:
    """Store a new token (only its hash); returns the row and the plaintext, shown once.
    ``actor`` (who asked) is logged: token changes have no deployment events to go in."""
    public_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    row = orm.ApiToken(
        public_id=public_id,
        secret_sha256=_digest(secret),
        name=name,
        scopes=join_scopes(scopes),
        user_id=None if user is None else user.id,
        created_at=now,
        expires_at=expires_at,
    )
    session.add(row)
    session.flush()
    if actor is not None:
        log.info("token %s (%s: %s) created by %s", public_id, name, row.scopes, actor)
    return row, f"{_PREFIX}{public_id}_{secret}"


def authenticate(session: Session, token: str, *, now: datetime) -> Principal:
    """The caller behind ``token``, or NotAuthenticated if it is unknown, revoked or expired."""
    if len(token) > _MAX_TOKEN_LENGTH:
        raise NotAuthenticated("invalid token")
    public_id, secret = _split(token)
    row = identities.find_token(session, public_id)
    expected = row.secret_sha256 if row is not None else "0" * 64
    if not hmac.compare_digest(_digest(secret), expected) or row is None:
        raise NotAuthenticated("invalid token")
    if row.revoked_at is not None:
        raise NotAuthenticated("this token was revoked")
    if row.expires_at is not None and row.expires_at <= now:
        raise NotAuthenticated("this token has expired")
    return Principal(
        token_id=row.public_id,
        name=row.name,
        scopes=frozenset(row.scopes.split()),
        expires_at=row.expires_at,
    )


def list_tokens(session: Session) -> Sequence[orm.ApiToken]:
    return identities.all_tokens(session)


def revoke_token(session: Session, public_id: str, *, now: datetime, actor: str) -> orm.ApiToken:
    """Mark a token revoked (kept, so its name still explains past events)."""
    row = identities.find_token(session, public_id)
    if row is None:
        raise TokenNotFound(f"no token {public_id!r}")
    if row.revoked_at is None:
        row.revoked_at = now
        log.info("token %s (%s) revoked by %s", public_id, row.name, actor)
    return row


def sign_out(session: Session, public_id: str, *, now: datetime) -> bool:
    """Revoke the caller's own token when the password login gave it (a user signs out);
    False for a token made with POST /api/v1/tokens, which stays an admin's to revoke
    (a pasted CI or operator token must not die with a browser tab)."""
    row = identities.find_token(session, public_id)
    if row is None or row.user_id is None:
        return False
    if row.revoked_at is None:
        row.revoked_at = now
        log.info("token %s (%s) revoked: signed out", public_id, row.name)
    return True


def _live_admin_exists(session: Session, now: datetime) -> bool:
    rows = identities.standing_tokens(session, except_public_id=ENV_PUBLIC_ID)
    return any(
        "admin" in row.scopes.split() and (row.expires_at is None or row.expires_at > now)
        for row in rows
    )


def _sync_env_token(session: Session, token: str | None, now: datetime) -> None:
    """Make the ``env`` row match DEPLOYSERVER_ADMIN_TOKEN: installed, rotated, or revoked."""
    row = identities.find_token(session, ENV_PUBLIC_ID)
    if token is None:
        if row is not None and row.revoked_at is None:
            row.revoked_at = now
            log.info("DEPLOYSERVER_ADMIN_TOKEN is no longer set: its token is revoked")
        return
    if row is None:
        row = orm.ApiToken(public_id=ENV_PUBLIC_ID, name=ADMIN_TOKEN_NAME, created_at=now)
        session.add(row)
    row.secret_sha256, row.scopes = _digest(token), "admin"
    row.revoked_at = row.expires_at = row.user_id = None
    log.info("admin token: DEPLOYSERVER_ADMIN_TOKEN (only its hash is stored)")


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only, replacing it atomically."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text + "\n")
    os.replace(tmp, path)


def ensure_admin_token(session: Session, *, settings: Settings, now: datetime) -> None:
    """At start-up: honour DEPLOYSERVER_ADMIN_TOKEN, and when no admin token is usable,
    mint one into ``<data_dir>/admin-token`` (mode 0600) and say where it is."""
    env_token = settings.admin_token.get_secret_value() if settings.admin_token else None
    _sync_env_token(session, env_token, now)
    path = settings.data_dir / ADMIN_TOKEN_FILE
    if env_token is not None or _live_admin_exists(session, now):
        if env_token is None and path.exists():
            log.info("admin token: %s", path.resolve())
        return
    _row, plaintext = issue_token(session, name=ADMIN_TOKEN_NAME, scopes={"admin"}, now=now)
    # The file is written before the caller commits: a token nobody can read never lands.
    _write_private(path, plaintext)
    log.info("created an admin token; it is in %s (readable by this user only)", path.resolve())
