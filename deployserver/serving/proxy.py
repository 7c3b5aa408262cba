"""/serve/{model}/{path}: requests streamed both ways to a replica of the model's active
deployment, balanced by requests outstanding (``balance``); a model with none running is
woken first (``wake``).

A plain ASGI layer in front of the routes rather than a FastAPI route, and a lean pooled
HTTP/1.1 client of our own towards the cells (``cellclient``: httptools parsing) rather
than aiohttp's or httpx's: this is the data path, and measured side by side (bench/,
README "Performance") these choices are what keep its cost near a direct call. Bodies
are streamed (small sized ones are sent whole), hop-by-hop headers are dropped, and the
caller's Authorization, cookies and forwarding claims never reach the cell; the cell's
answers set no cookie and are sandboxed. When the replica chosen could not be reached
(killed, or gone in a version switch), it is taken out at once and the request, not sent
yet, goes to another. A replica that dies holding a request (its connection closed before
the caller got a byte: small answers are read whole first) is taken out too, and the
request, when its body was kept, is sent once more to another: the caller never got an
answer, so none is lost or doubled. A deployment whose predict has side effects outside
the cell opts out (``scaling.resend_dropped``), and then such a request answers 502.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from typing import Any
from urllib.parse import quote

from starlette.types import ASGIApp, Receive, Scope, Send

from deployserver.access.authorize import authorize
from deployserver.errors import DeployServerError, TryAgainLater, error_json
from deployserver.serving import dataloop
from deployserver.serving.balance import Load
from deployserver.serving.callerbody import CallerBody, CallerGone, header
from deployserver.serving.cellclient import Answer, CellClient, CellError, Dropped, NotSent
from deployserver.serving.routetable import Route, RouteTable

log = logging.getLogger("deployserver.serving.proxy")
PREFIX = "/serve/"
MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
MAX_TRIES = 3
"""Replicas one request may be sent to when the earlier ones could not be reached."""
UNKNOWN_MODEL = "_unknown"
FOUND_KEY = "deployserver.model_found"
"""Set in a /serve request's scope once its model was found (its metrics label)."""
AUTHORIZED_KEY = "deployserver.serve_authorized"
"""Set in a /serve request's scope once its token was let through for ``predict``."""
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
        b"expect",  # the body is sent at once
    }
)
# The caller's own claims of where it connects from, and its cookies for this origin
# (a web UI's session, say), are not the cell's to see: the server sets the X-Forwarded-*
# headers itself, from the connection.
CALLER_DROPPED = frozenset(
    {b"cookie", b"cookie2", b"forwarded", b"x-real-ip", b"x-client-ip", b"true-client-ip"}
)
FORWARDED_PREFIX = b"x-forwarded-"
# Cells answer under the control plane's origin: they may not set its cookies, and what
# they send is never run there as a page (sandboxed, no sniffing into HTML or script).
SERVE_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"content-security-policy", b"sandbox; default-src 'none'; frame-ancestors 'none'"),
)
RESPONSE_DROPPED = (HOP_BY_HOP - {b"content-length"}) | {
    b"set-cookie",
    b"set-cookie2",
    b"content-security-policy-report-only",
    # a cell may not clear the control plane's site data nor pin its transport
    b"clear-site-data",
    b"strict-transport-security",
    *(name for name, _ in SERVE_HEADERS),
}


def cell_client(timeout: float) -> CellClient:
    """The pooled client towards the cells (use it inside the running loop). It keeps
    no cookies: one client serves every caller and every cell."""
    return CellClient(read_timeout=timeout)


async def _send_exc(send: Send, exc: DeployServerError) -> None:
    extra = []
    if isinstance(exc, TryAgainLater):
        extra.append((b"retry-after", str(max(1, math.ceil(exc.retry_after))).encode()))
    await _send_error(send, exc.status_code, exc.code, exc.message, extra)


BOUNDED = 1024 * 1024
"""Answers up to this length are relayed without watching for the caller to leave."""
CLIENT_CLOSED = 499
"""The status recorded (nothing is sent) for a request whose caller went away."""


SMALL_ANSWER = 64 * 1024
"""Answers up to this length are read whole from the cell before the caller gets a byte."""


def _length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name.lower() == b"content-length":
            return int(value) if value.isdigit() else None
    return None


async def _relay(answer: Answer, send: Send) -> None:
    async for chunk in answer.iter_chunks():
        await send({"type": "http.response.body", "body": chunk, "more_body": True})


async def _relay_while_there(answer: Answer, body: CallerBody, send: Send) -> None:
    """Relay until the answer ends; CallerGone (the cell's connection closed) as soon as
    the caller disconnects, for an ASGI server's send() to a gone caller says nothing."""
    relay = asyncio.ensure_future(_relay(answer, send))
    gone = asyncio.ensure_future(body.disconnected())
    try:
        await asyncio.wait({relay, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not relay.done():
            relay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relay
    if relay.cancelled():
        raise CallerGone("the caller went away during the answer")
    relay.result()


async def _failed(exc: Exception, body: CallerBody, send: Send) -> int:
    """The answer to a request its replica failed (and that goes nowhere else)."""
    if isinstance(exc, CallerGone):
        return CLIENT_CLOSED  # nobody to answer
    if body.responded:
        raise exc  # the answer was under way: all that is left is to drop it
    if body.stalled is not None:  # the caller stopped sending, not the cell
        await _send_exc(send, body.stalled)
        return body.stalled.status_code
    if isinstance(exc, asyncio.TimeoutError):
        await _send_error(send, 504, "cell_timeout", "the cell did not answer in time")
        return 504
    await _send_error(send, 502, "cell_dropped", f"the cell dropped the request: {exc}")
    return 502


async def _send_error(
    send: Send,
    status: int,
    code: str,
    message: str,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = error_json(code, message)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += SERVE_HEADERS
    headers += extra or []
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _forward_headers(scope: Scope) -> list[tuple[bytes, bytes]]:
    """The caller's headers for the cell, less hop-by-hop, credentials and forwarding
    claims; plus X-Forwarded-For/-Proto/-Host as this server saw the request."""
    raw: list[tuple[bytes, bytes]] = scope["headers"]
    dropped = HOP_BY_HOP | CALLER_DROPPED
    for name, value in raw:
        if name == b"connection":
            dropped = dropped | {v.strip().lower() for v in value.split(b",")}
    # "_" in a name is dropped too: some servers read it as "-" (X_Forwarded_For)
    headers = [
        (n, v)
        for n, v in raw
        if n not in dropped and not n.startswith(FORWARDED_PREFIX) and b"_" not in n
    ]
    client = scope.get("client")
    if client:
        headers.append((b"x-forwarded-for", client[0].encode("latin-1")))
    headers.append((b"x-forwarded-proto", scope.get("scheme", "http").encode("latin-1")))
    host = header(scope, b"host")
    if host:
        headers.append((b"x-forwarded-host", host))
    return headers


def _target(scope: Scope, model: str, rest: str) -> str:
    """The path to ask the cell for: as the caller spelled it (its own percent-escapes
    kept), less ``/serve/{model}``."""
    raw: bytes | None = scope.get("raw_path")
    prefix = f"{PREFIX}{model}".encode()
    if raw and raw.startswith(prefix) and raw[len(prefix) : len(prefix) + 1] in (b"/", b""):
        return raw[len(prefix) :].decode("latin-1") or "/"
    return quote(f"/{rest}", safe="/:@!$&'()*+,;=-._~")


def _token(scope: Scope) -> str | None:
    value = header(scope, b"authorization")
    if value is None:
        return None
    kind, _, token = value.decode("latin-1").partition(" ")
    return token.strip() if kind.lower() == "bearer" and token.strip() else None


class ServeProxy:
    """ASGI middleware: ``/serve/...`` goes to the cells, everything else to ``app``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        rest = scope["path"][len(PREFIX) :]
        if dataloop.served_here(scope["method"], rest, scope.get("query_string", b"")):
            await self.app(scope, receive, send)  # answered on our async predictions
            return
        state = scope["app"].state.ds
        started = time.perf_counter()
        model, _, rest = rest.partition("/")
        status = 502  # unless it ends: an answer under way was cut (its cell went away)
        try:
            status = await self._serve(state, model, rest, scope, receive, send)
        finally:
            # an unknown name gets no label of its own: callers must not grow the metrics.
            # Known is what this request found (the route table may forget it meanwhile).
            label = model if scope.get(FOUND_KEY) else UNKNOWN_MODEL
            state.metrics.observe_proxy(label, status, time.perf_counter() - started)

    async def _serve(
        self, state: Any, model: str, rest: str, scope: Scope, receive: Receive, send: Send
    ) -> int:
        routes: RouteTable = state.routes
        route = await routes.resolve(model) if MODEL_NAME.match(model) else None
        if route is None:
            await _send_error(send, 404, "model_not_found", f"no model {model!r}")
            return 404
        scope[FOUND_KEY] = True
        refused = await self._refused(state, route, scope, send)
        if refused is not None:
            return refused
        if not route.replicas:
            if not route.wakeable:
                await _send_error(send, 503, "no_ready_cell", f"model {model!r} has no ready cell")
                return 503
            try:  # paused or scaled to zero: held while it wakes
                route = await state.waker.ready_route(route)
            except DeployServerError as exc:
                await _send_exc(send, exc)
                return exc.status_code
            refused = await self._refused(state, route, scope, send)  # woken as another version
            if refused is not None:
                return refused
        return await self._balanced(state, route, rest, scope, CallerBody(scope, receive), send)

    async def _balanced(
        self, state: Any, route: Route, rest: str, scope: Scope, body: CallerBody, send: Send
    ) -> int:
        """Forward to a replica chosen by the balancer; one that could not be reached, or
        died holding the request, is taken out at once, and the request goes to another
        when it may (see the module's docstring)."""
        load: Load = state.load
        model, tried = route.model, list[str]()
        dropped: Exception | None = None
        while True:
            replica = load.choose(route.replicas, tried)
            if replica is None:
                break
            try:
                with load.request(route.deploy_id, replica.cell_id):
                    return await self._forward(
                        state.cell_client, replica.url, model, rest, scope, body, send
                    )
            except NotSent:
                again = True
            except Dropped as exc:
                if body.responded or body.stalled is not None:
                    return await _failed(exc, body, send)
                again = route.resend_dropped and dropped is None
                dropped = exc
            except (TimeoutError, CellError, DeployServerError) as exc:
                return await _failed(exc, body, send)
            load.eject(replica.cell_id)
            state.cell_client.forget(replica.url)
            state.routes.invalidate(model)
            state.reconciler.wake()  # it sees the replica gone, and replaces it
            tried.append(replica.cell_id)
            fresh = await state.routes.resolve(model) if again else None
            if not (body.resendable and len(tried) < MAX_TRIES and fresh and fresh.replicas):
                break
            route = fresh  # another replica, or the new version's after a switch
            refused = await self._refused(state, route, scope, send)  # which may be private
            if refused is not None:
                return refused
        if dropped is not None:
            return await _failed(dropped, body, send)
        await _send_error(send, 502, "cell_unreachable", f"the cell of {model!r} is down")
        return 502

    async def _refused(self, state: Any, route: Route, scope: Scope, send: Send) -> int | None:
        """None when the caller may use ``route`` (public, or its token was let through
        once); else the status of the refusal sent. Asked again whenever the request
        moves to another route: a version switched to private does not take a caller let
        in as the public one's."""
        if route.public or scope.get(AUTHORIZED_KEY):
            return None
        try:
            await authorize(
                state.token_cache,
                state.sessions,
                _token(scope),
                "predict",
                state.clock(),
                what="/serve",
            )
        except DeployServerError as exc:
            await _send_exc(send, exc)
            return exc.status_code
        scope[AUTHORIZED_KEY] = True
        return None

    async def _forward(
        self,
        client: CellClient,
        base: str,
        model: str,
        rest: str,
        scope: Scope,
        body: CallerBody,
        send: Send,
    ) -> int:
        query = scope.get("query_string", b"")
        target = _target(scope, model, rest) + (f"?{query.decode('latin-1')}" if query else "")
        payload = await body.payload()
        answer = await client.request(
            scope["method"], base, target, _forward_headers(scope), payload, body.size
        )
        async with answer:
            dropped = RESPONSE_DROPPED
            if answer.status in (204, 304):  # no body follows, whatever a length says
                dropped = dropped | {b"content-length"}
            headers = [(n, v) for n, v in answer.headers if n.lower() not in dropped]
            headers += SERVE_HEADERS
            length = _length(answer.headers)
            if length is not None and length <= SMALL_ANSWER:
                # read whole before a byte goes out: a replica that dies between its
                # answer's head and body has then dropped a request the caller never
                # saw answered, which may still go to another replica
                whole = b"".join([chunk async for chunk in answer.iter_chunks()])
                body.responded = True
                await send(
                    {"type": "http.response.start", "status": answer.status, "headers": headers}
                )
                await send({"type": "http.response.body", "body": whole})
                return answer.status
            body.responded = True
            await send({"type": "http.response.start", "status": answer.status, "headers": headers})
            if length is not None and length <= BOUNDED:
                await _relay(answer, send)
            else:  # a stream may never end by itself: it ends when its caller goes
                await _relay_while_there(answer, body, send)
            await send({"type": "http.response.body", "body": b""})
            return answer.status
