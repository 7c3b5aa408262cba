"""Queries of identities, tokens and users: the access wing decides, these find and remove."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from deployserver.store import orm

T = orm.ApiToken


def find_token(session: Session, public_id: str) -> orm.ApiToken | None:
    """The token whose public id is ``public_id``, or None."""
    return session.scalar(select(T).where(T.public_id == public_id))


def all_tokens(session: Session) -> Sequence[orm.ApiToken]:
    return session.scalars(select(T).order_by(T.id)).all()


def standing_tokens(session: Session, *, except_public_id: str) -> Sequence[orm.ApiToken]:
    """Unrevoked tokens not handed out by a login (and not ``except_public_id``)."""
    return session.scalars(
        select(T).where(
            T.user_id.is_(None), T.revoked_at.is_(None), T.public_id != except_public_id
        )
    ).all()


def drop_expired_login_tokens(session: Session, now: datetime) -> None:
    """Login tokens past their expiry are dead weight."""
    session.execute(delete(T).where(T.user_id.is_not(None), T.expires_at <= now))


def find_user(session: Session, name: str) -> orm.User | None:
    return session.scalar(select(orm.User).where(orm.User.name == name))


def all_users(session: Session) -> Sequence[orm.User]:
    return session.scalars(select(orm.User).order_by(orm.User.name)).all()


def remove_user(session: Session, user: orm.User) -> None:
    """A user and the tokens their logins were given."""
    session.execute(delete(T).where(T.user_id == user.id))
    session.delete(user)
