"""POST /api/v1/auth/token: the OAuth2 password login, open since it is the way in;
GET /api/v1/auth/me: who the token in a request is (any valid token); and
POST /api/v1/auth/logout: sign out, revoking a login's own token."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl

import anyio
from fastapi import APIRouter, Request

from deployserver.access import accounts, credentials
from deployserver.api.deps import PUBLIC, StateDep, TokenAccess
from deployserver.api.openapi import errors
from deployserver.errors import BadRequest, InvalidGrant, RequestTooLarge, UnsupportedMediaType
from deployserver.schemas import AccessToken, CallerRead, SignedOut
from deployserver.state import AppState

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])

MAX_FORM_BYTES = 16 * 1024
"""A login form holds a name, a password and a few scopes: anything larger is refused
before it is read, so an anonymous caller cannot make the server hold big bodies."""
_FORM_TYPE = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class LoginForm:
    username: str
    password: str
    scopes: list[str]


async def read_login_form(request: Request) -> LoginForm:
    """The OAuth2 password form (RFC 6749 4.3.2), read with a size limit of its own."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != _FORM_TYPE:
        raise UnsupportedMediaType(f"the login takes {_FORM_TYPE} (username, password, scope)")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_FORM_BYTES:
        raise RequestTooLarge(f"a login form is at most {MAX_FORM_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise RequestTooLarge(f"a login form is at most {MAX_FORM_BYTES} bytes")
    try:
        pairs = parse_qsl(body.decode("ascii"), keep_blank_values=True, max_num_fields=10)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest("the login form is not url-encoded fields") from exc
    fields: dict[str, str] = {}
    for key, value in pairs:
        if key in fields:
            raise BadRequest(f"the login form has {key!r} twice")
        fields[key] = value
    if fields.get("grant_type", "password") != "password":
        raise BadRequest("grant_type must be 'password'")
    missing = [f for f in ("username", "password") if not fields.get(f)]
    if missing:
        raise BadRequest(f"the login form needs {' and '.join(missing)}")
    return LoginForm(fields["username"], fields["password"], fields.get("scope", "").split())


def _peer(request: Request) -> str:
    """The caller's address: the connection's peer (headers can be forged)."""
    return request.client.host if request.client else "unknown"


def _login(state: AppState, form: LoginForm) -> str:
    with state.sessions.begin() as session:
        plaintext, _row = accounts.login(
            session,
            name=form.username,
            password=form.password,
            scopes=form.scopes,
            lifetime=state.settings.login_token_seconds,
            now=state.clock(),
        )
    return plaintext


_FORM_SCHEMA = {
    "type": "object",
    "required": ["username", "password"],
    "properties": {
        "grant_type": {"type": "string", "enum": ["password"]},
        "username": {"type": "string"},
        "password": {"type": "string", "format": "password"},
        "scope": {"type": "string", "description": "scopes wanted, space-separated"},
    },
}


@router.post(
    "/token",
    response_model=AccessToken,
    dependencies=[PUBLIC],
    openapi_extra={
        "requestBody": {"required": True, "content": {_FORM_TYPE: {"schema": _FORM_SCHEMA}}}
    },
    responses=errors(
        400,
        413,
        415,
        s429="too many tries from this address or for this name (Retry-After)",
        s503="every hashing slot is taken; try again soon (Retry-After)",
    ),
)
async def login(request: Request, state: StateDep) -> AccessToken:
    """Trade a user's name and password (and optional ``scope``) for a short-lived token.

    Limited before any password is hashed: tries per client address and per user name,
    a lockout of names after repeated failures, and a few hashes at once."""
    guard = state.login_guard
    guard.admit_client(_peer(request))  # before the body is even read
    form = await read_login_form(request)
    guard.admit_name(form.username)
    async with guard.slots.slot():
        # Tries that queued behind the failures which locked the name go no further.
        guard.check_lockout(form.username)
        try:
            # A worker thread, as for sync routes; the slots bound how many logins hold one.
            plaintext = await anyio.to_thread.run_sync(_login, state, form)
        except InvalidGrant:
            guard.failed(form.username)
            raise
    guard.succeeded(form.username)
    return AccessToken(access_token=plaintext, expires_in=state.settings.login_token_seconds)


@router.get("/me", response_model=CallerRead)
def whoami(caller: TokenAccess) -> CallerRead:
    """The calling token's name, scopes and expiry (``admin`` implies every scope)."""
    return CallerRead(
        token_id=caller.token_id,
        name=caller.name,
        scopes=sorted(caller.scopes),
        expires_at=caller.expires_at,
    )


@router.post("/logout", response_model=SignedOut)
def logout(caller: TokenAccess, state: StateDep) -> SignedOut:
    """Sign out: the calling token is revoked when a password login gave it, and every
    request that carries it from now on is refused. A token made with
    ``POST /api/v1/tokens`` is left as it is (``revoked: false``): an admin revokes those."""
    with state.sessions.begin() as session:
        revoked = credentials.sign_out(session, caller.token_id, now=state.clock())
    if revoked:
        state.token_cache.clear()
    return SignedOut(revoked=revoked)
