"""/serve/{model}/{path}: requests streamed both ways to the model's active cell.

A plain ASGI middleware in front of the app rather than a FastAPI route: this is the
data path, and skipping routing, dependency injection and response models is what
keeps its cost near a direct call. Bodies are streamed (never held whole), hop-by-hop
headers are dropped, and the caller's Authorization never reaches the cell. When the
cell it resolved is gone before the request was sent (a version switch), the request
is routed again once; a cell that drops a request already sent answers 502.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from deployserver import auth
from deployserver.errors import DeployServerError, NotAuthenticated, PermissionDenied
from deployserver.routes import Route, RouteTable

log = logging.getLogger("deployserver.proxy")
PREFIX = "/serve/"
MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
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


def _error(status: int, code: str, message: str) -> tuple[int, bytes]:
    return status, json.dumps({"error": {"code": code, "message": message}}).encode()


async def _send_error(send: Send, status: int, code: str, message: str) -> None:
    status, body = _error(status, code, message)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _forward_headers(scope: Scope) -> list[tuple[bytes, bytes]]:
    raw: list[tuple[bytes, bytes]] = scope["headers"]
    dropped = set(HOP_BY_HOP)
    for name, value in raw:
        if name == b"connection":
            dropped.update(v.strip().lower() for v in value.split(b","))
    headers = [(n, v) for n, v in raw if n not in dropped]
    client = scope.get("client")
    if client:
        headers.append((b"x-forwarded-for", client[0].encode()))
    headers.append((b"x-forwarded-proto", scope.get("scheme", "http").encode()))
    return headers


def _token(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            kind, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if kind.lower() == "bearer" and token.strip() else None
    return None


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
        state.metrics.observe_proxy(model, status, time.perf_counter() - started)

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
        body = _Body(receive)
        for attempt in (1, 2):
            if route is None or route.url is None:
                await _send_error(send, 503, "no_ready_cell", f"model {model!r} has no ready cell")
                return 503
            try:
                return await self._forward(state.proxy_client, route, rest, scope, body, send)
            except httpx.ConnectError:
                routes.invalidate(model)
                fresh = await routes.resolve(model)
                if attempt == 1 and not body.started and fresh and fresh.url != route.url:
                    route = fresh  # the model switched cells under us: go to the new one
                    continue
                await _send_error(send, 502, "cell_unreachable", f"the cell of {model!r} is down")
                return 502
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
                if body.responded:
                    raise  # the answer was under way: all we can do is drop the connection
                await _send_error(send, 502, "cell_dropped", f"the cell dropped the request: {exc}")
                return 502
            except httpx.TimeoutException:
                await _send_error(send, 504, "cell_timeout", "the cell did not answer in time")
                return 504
        return 502  # pragma: no cover - the loop always returns

    async def _authorize(self, state: Any, token: str | None) -> None:
        if not token:
            raise NotAuthenticated("/serve needs a token with the 'predict' scope")
        principal = state.token_cache.get(token)
        if principal is None:
            with state.sessions() as session:
                principal = auth.authenticate(session, token, now=state.clock())
            state.token_cache.put(token, principal)
        if not principal.allows("predict"):
            raise PermissionDenied(f"token {principal.name!r} lacks the 'predict' scope")

    async def _forward(
        self,
        client: httpx.AsyncClient,
        route: Route,
        rest: str,
        scope: Scope,
        body: _Body,
        send: Send,
    ) -> int:
        query = scope.get("query_string", b"")
        url = f"{route.url}/{rest}" + (f"?{query.decode('latin-1')}" if query else "")
        request = client.build_request(
            scope["method"],
            url,
            headers=_forward_headers(scope),
            content=body.stream() if body.has_body(scope) else None,
        )
        response = await client.send(request, stream=True)
        try:
            headers = [(n, v) for n, v in response.headers.raw if n.lower() not in HOP_BY_HOP]
            if "content-length" in response.headers:
                headers.append((b"content-length", response.headers["content-length"].encode()))
            body.responded = True
            await send(
                {"type": "http.response.start", "status": response.status_code, "headers": headers}
            )
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()
        return response.status_code


class _Body:
    """The caller's request body as a one-shot stream, remembering whether it started."""

    def __init__(self, receive: Receive) -> None:
        self.receive = receive
        self.started = False
        self.responded = False

    @staticmethod
    def has_body(scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"content-length":
                return value != b"0"
            if name == b"transfer-encoding":
                return True
        return False

    async def stream(self) -> AsyncIterator[bytes]:
        self.started = True
        while True:
            message: Message = await self.receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return
