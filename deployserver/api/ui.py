"""The web UI's routes: its page shell at /ui (and / for a browser) and its static files.

All of it is open (``PUBLIC``): the shell and the files hold no data. Every figure the UI
shows comes from the API, with the token the person signed in with, sent as a bearer
header (never a cookie, so there is nothing to forge across sites). Every answer carries a
strict Content-Security-Policy: scripts and styles from this origin only, none inline.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse
from starlette.exceptions import HTTPException

from deployserver.api.deps import PUBLIC, StateDep
from deployserver.ui.assets import Asset

router = APIRouter(include_in_schema=False, dependencies=[PUBLIC])

CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob: data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    )
)
"""No inline script or style, nothing from another origin, never framed; and no string
may become markup or script (Trusted Types with no policy: the UI builds nodes only)."""
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}
SHELL_CACHE = "no-cache"
"""The shell names the files' current version: a browser asks again each time (an ETag
makes that a 304 while nothing changed)."""
STATIC_CACHE = "public, max-age=31536000, immutable"
"""A file's URL holds the version of all of them: a changed file is a new URL."""


def _answer(request: Request, asset: Asset, cache: str) -> Response:
    headers = {**SECURITY_HEADERS, "Cache-Control": cache, "ETag": asset.etag}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.content_type, headers=headers)


@router.get("/")
def root(request: Request) -> Response:
    """A browser asking for the server's root is sent to the UI; others get the usual 404."""
    if "text/html" in request.headers.get("accept", ""):
        return RedirectResponse("/ui", status_code=303)
    raise HTTPException(status_code=404)


@router.get("/ui/static/{version}/{name:path}")
def static_file(version: str, name: str, request: Request, state: StateDep) -> Response:
    bundle = state.ui
    asset = bundle.files.get(name) if version == bundle.version else None
    if asset is None:
        raise HTTPException(status_code=404)
    return _answer(request, asset, STATIC_CACHE)


@router.get("/ui")
@router.get("/ui/{page:path}")
def shell(request: Request, state: StateDep, page: str = "") -> Response:
    """The one page of the UI; it shows the screen its path names (``/ui/models/iris``)."""
    return _answer(request, state.ui.shell, SHELL_CACHE)
