"""Routes for API tokens: create (the plaintext is answered once), list, revoke; admin only."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Response, status

from deployserver.access import credentials
from deployserver.api.deps import AdminAccess, SessionDep, StateDep, require_scope
from deployserver.schemas import TokenCreate, TokenCreated, TokenList, TokenRead
from deployserver.store import orm

router = APIRouter(prefix="/api/v1/tokens", tags=["tokens"], dependencies=[require_scope("admin")])


def to_read(row: orm.ApiToken) -> TokenRead:
    return TokenRead(
        id=row.public_id,
        name=row.name,
        scopes=row.scopes.split(),
        user=None if row.user is None else row.user.name,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
    )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=TokenCreated)
def create_token(body: TokenCreate, state: StateDep, caller: AdminAccess) -> TokenCreated:
    """A new token; its plaintext is in this answer only (the server keeps a hash)."""
    now = state.clock()
    expires_at = None if body.expires_in is None else now + timedelta(seconds=body.expires_in)
    with state.sessions.begin() as session:
        row, plaintext = credentials.issue_token(
            session,
            name=body.name,
            scopes=body.scopes,
            now=now,
            expires_at=expires_at,
            actor=caller.name,
        )
        return TokenCreated(**to_read(row).model_dump(), token=plaintext)


@router.get("", response_model=TokenList)
def list_tokens(session: SessionDep) -> TokenList:
    """Every token, revoked and expired ones too; never their plaintext."""
    return TokenList(items=[to_read(row) for row in credentials.list_tokens(session)])


@router.delete("/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_token(token_id: str, state: StateDep, caller: AdminAccess) -> Response:
    """Revoke a token: the next request that carries it is refused."""
    with state.sessions.begin() as session:
        credentials.revoke_token(session, token_id, now=state.clock(), actor=caller.name)
    state.token_cache.clear()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
