"""Routes for users who log in with a password: create, list, delete; admin only."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from deployserver.access import accounts
from deployserver.api.deps import AdminAccess, SessionDep, StateDep, require_scope
from deployserver.api.openapi import errors
from deployserver.schemas import UserCreate, UserList, UserRead
from deployserver.store import orm

router = APIRouter(prefix="/api/v1/users", tags=["users"], dependencies=[require_scope("admin")])


def to_read(user: orm.User) -> UserRead:
    return UserRead(name=user.name, scopes=user.scopes.split(), created_at=user.created_at)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=UserRead,
    responses=errors(s409="a user of that name already exists"),
)
def create_user(body: UserCreate, state: StateDep, caller: AdminAccess) -> UserRead:
    with state.sessions.begin() as session:
        user = accounts.create_user(
            session,
            name=body.name,
            password=body.password,
            scopes=body.scopes,
            now=state.clock(),
            actor=caller.name,
        )
        return to_read(user)


@router.get("", response_model=UserList)
def list_users(session: SessionDep) -> UserList:
    return UserList(items=[to_read(u) for u in accounts.list_users(session)])


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_user(name: str, state: StateDep, caller: AdminAccess) -> Response:
    """Remove a user and every token their logins were given."""
    with state.sessions.begin() as session:
        accounts.delete_user(session, name, actor=caller.name)
    state.token_cache.clear()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
