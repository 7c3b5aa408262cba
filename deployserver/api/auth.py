"""POST /api/v1/auth/token: the OAuth2 password login; open, since it is the way in."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.security import OAuth2PasswordRequestForm

from deployserver import users
from deployserver.api.deps import PUBLIC, StateDep
from deployserver.schemas import AccessToken

router = APIRouter(prefix="/api/v1/auth", tags=["auth"], dependencies=[PUBLIC])


@router.post("/token", response_model=AccessToken)
def login(form: Annotated[OAuth2PasswordRequestForm, Depends()], state: StateDep) -> AccessToken:
    """Trade a user's name and password (and optional ``scope``) for a short-lived token."""
    lifetime = state.settings.login_token_seconds
    with state.sessions.begin() as session:
        plaintext, _row = users.login(
            session,
            name=form.username,
            password=form.password,
            scopes=form.scopes,
            lifetime=lifetime,
            now=state.clock(),
        )
    return AccessToken(access_token=plaintext, expires_in=lifetime)
