"""/serve/{model}/{path}: requests streamed both ways to the model's active cell.

A plain ASGI layer in front of the routes rather than a FastAPI route, and aiohttp's
pooled client (C-accelerated HTTP parsing) towards the cells rather than httpx: this is
the data path, and measured side by side (bench/, README "Performance") these choices
are what keep its cost near a direct call. Bodies are streamed (small sized ones are
sent whole), hop-by-hop headers are dropped, and the caller's Authorization never
reaches the cell. When the cell it resolved is gone before the request could be sent
(a version switch), the request is routed again once; a cell that drops a request it
had received answers 502.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from starlette.types import ASGIApp, Receive, Scope, Send

from deployserver.errors import DeployServerError, NotAuthenticated, PermissionDenied
from deployserver.routes import Route, RouteTable

log = logging.getLogger("deployserver.proxy")
PREFIX = "/serve/"
MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
SMALL_BODY = 64 * 1024
UNKNOWN_MODEL = "_unknown"
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"authorization",
        b"content-length",
    }
)
RESPONSE_DROPPED = HOP_BY_HOP - {b"content-length"}
NO_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding")


def cell_session(timeout: float) -> aiohttp.ClientSession:
    """The pooled client towards the cells (create it inside the running loop)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=1000, keepalive_timeout=30),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=2, sock_read=timeout),
        auto_decompress=False,
    )


async def _send_error(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _forward_headers(scope: Scope) -> list[tuple[str, str]]:
    raw: list[tuple[bytes, bytes]] = scope["headers"]
    dropped = set(HOP_BY_HOP)
    for name, value in raw:
        if name == b"connection":
            dropped.update(v.strip().lower() for v in value.split(b","))
    headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in raw if n not in dropped]
    client = scope.get("client")
    if client:
        headers.append(("x-forwarded-for", client[0]))
    headers.append(("x-forwarded-proto", scope.get("scheme", "http")))
    return headers


def _header(scope: Scope, wanted: bytes) -> bytes | None:
    for name, value in scope["headers"]:
        if name == wanted:
            return value  # type: ignore[no-any-return]
    return None


def _token(scope: Scope) -> str | None:
    value = _header(scope, b"authorization")
    if value is None:
        return None
    kind, _, token = value.decode("latin-1").partition(" ")
    return token.strip() if kind.lower() == "bearer" and token.strip() else None


class _Body:
    """The caller's request body: read whole when small and sized, else a one-shot stream."""

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.receive = receive
        length = _header(scope, b"content-length")
        self.size = int(length) if length and length.isdigit() else None
        self.chunked = _header(scope, b"transfer-encoding") is not None
        self.started = False
        self.responded = False
        self.whole: bytes | None = None

    async def payload(self) -> bytes | AsyncIterator[bytes] | None:
        if self.size is not None and self.size <= SMALL_BODY:
            if self.whole is None:
                self.whole = b"".join([chunk async for chunk in self._chunks()])
            return self.whole  # resendable: a re-route may send it again
        if self.size or self.chunked:
            return self._chunks()
        return None

    @property
    def resendable(self) -> bool:
        return self.whole is not None or not self.started

    async def _chunks(self) -> AsyncIterator[bytes]:
        self.started = True
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                return
            if message.get("body"):
                yield message["body"]
            if not message.get("more_body", False):
                return


class ServeProxy:
    """ASGI middleware: ``/serve/...`` goes to the cells, everything else to ``app``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        state = scope["app"].state.ds
        started = time.perf_counter()
        model, _, rest = scope["path"][len(PREFIX) :].partition("/")
        status = await self._serve(state, model, rest, scope, receive, send)
        # an unknown name gets no label of its own: callers must not grow the metrics
        label = model if state.routes.known(model) else UNKNOWN_MODEL
        state.metrics.observe_proxy(label, status, time.perf_counter() - started)

    async def _serve(
        self, state: Any, model: str, rest: str, scope: Scope, receive: Receive, send: Send
    ) -> int:
        routes: RouteTable = state.routes
        route = await routes.resolve(model) if MODEL_NAME.match(model) else None
        if route is None:
            await _send_error(send, 404, "model_not_found", f"no model {model!r}")
            return 404
        if not route.public:
            try:
                await self._authorize(state, _token(scope))
            except DeployServerError as exc:
                await _send_error(send, exc.status_code, exc.code, exc.message)
                return exc.status_code
        body = _Body(scope, receive)
        for attempt in (1, 2):
            if route is None or route.url is None:
                await _send_error(send, 503, "no_ready_cell", f"model {model!r} has no ready cell")
                return 503
            try:
                return await self._forward(state.cell_session, route, rest, scope, body, send)
            except aiohttp.ClientConnectorError:
                routes.invalidate(model)
                fresh = await routes.resolve(model)
                if attempt == 1 and body.resendable and fresh and fresh.url != route.url:
                    route = fresh  # the model switched cells under us: go to the new one
                    continue
                await _send_error(send, 502, "cell_unreachable", f"the cell of {model!r} is down")
                return 502
            except (TimeoutError, aiohttp.ClientError) as exc:
                if body.responded:
                    raise  # the answer was under way: all that is left is to drop it
                if isinstance(exc, asyncio.TimeoutError):
                    await _send_error(send, 504, "cell_timeout", "the cell did not answer in time")
                    return 504
                await _send_error(send, 502, "cell_dropped", f"the cell dropped the request: {exc}")
                return 502
        return 502  # pragma: no cover - the loop always returns

    async def _authorize(self, state: Any, token: str | None) -> None:
        if not token:
            raise NotAuthenticated("/serve needs a token with the 'predict' scope")
        principal = state.token_cache.authenticate(state.sessions, token, state.clock())
        if not principal.allows("predict"):
            raise PermissionDenied(f"token {principal.name!r} lacks the 'predict' scope")

    async def _forward(
        self,
        session: aiohttp.ClientSession,
        route: Route,
        rest: str,
        scope: Scope,
        body: _Body,
        send: Send,
    ) -> int:
        query = scope.get("query_string", b"")
        url = f"{route.url}/{rest}" + (f"?{query.decode('latin-1')}" if query else "")
        async with session.request(
            scope["method"],
            url,
            headers=_forward_headers(scope),
            data=await body.payload(),
            allow_redirects=False,
            skip_auto_headers=NO_AUTO_HEADERS,
        ) as response:
            headers = [(n, v) for n, v in response.raw_headers if n.lower() not in RESPONSE_DROPPED]
            body.responded = True
            await send(
                {"type": "http.response.start", "status": response.status, "headers": headers}
            )
            async for chunk in response.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return response.status
