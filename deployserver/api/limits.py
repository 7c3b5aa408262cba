"""Limits on what one HTTP connection may hold: the size and count of a request's headers
(431), the time its headers may take (408), the idle time of a body that stops sending
(408), and how long a shutdown waits for requests in flight.

The header limits live in the connection protocol, since by the time a request reaches
the app its whole head is already in memory; the body's idle time lives in an ASGI layer
around the app, so an upload that stalls ends in the app's own clean-up.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from deployserver.errors import DeployServerError, error_json

if TYPE_CHECKING:
    from deployserver.config import Settings


class RequestTimeout(DeployServerError):
    """The request's body stopped arriving for longer than the server waits."""

    status_code = 408
    code = "request_timeout"


@dataclass(frozen=True)
class HeadLimits:
    max_bytes: int = 64 * 1024
    """Most bytes of a request line plus headers."""
    max_count: int = 100
    """Most header lines."""
    timeout: float = 30.0
    """Seconds from a connection's first byte (or its opening) to its complete head."""


BODY_HIGH_WATER = 512 * 1024
"""Body bytes a connection buffers before it stops reading until the app takes them."""


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing heads that are too large, too many or too
    slow before they are buffered whole."""

    limits: ClassVar[HeadLimits] = HeadLimits()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_open = True
        self._head_bytes = 0
        self._head_size = 0
        self._header_count = 0
        self._refusal: tuple[int, str, str] | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._head_open:
            self._arm_head_timer()
            self._head_bytes += len(data)
        super().data_received(data)
        if self._refusal is None and self._head_open and self._head_bytes > self.limits.max_bytes:
            self._refusal = self._too_large()
        if self._refusal is not None and not self.transport.is_closing():
            self._refuse(*self._refusal)

    # parser callbacks ------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_size = 0
        self._header_count = 0

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._head_size += len(name) + len(value) + 4
        if self._header_count > self.limits.max_count:
            self._refusal = (
                431,
                "too_many_headers",
                f"the request has more than {self.limits.max_count} header lines",
            )
        elif self._head_size > self.limits.max_bytes:
            self._refusal = self._too_large()
        if self._refusal is None:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_open = False
        self._head_bytes = 0
        self._cancel_head_timer()
        if self._refusal is None:
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        """uvicorn's, buffering up to ``BODY_HIGH_WATER`` (not 64 KiB) before it stops
        reading: a large body reaches the app in fewer, larger messages, each of which
        costs a pass through the middleware and the receiving loop."""
        cycle = self.cycle
        if self._refusal is not None or cycle.response_complete:
            return
        if self.parser.should_upgrade() and self._should_upgrade():
            return
        cycle.body += body
        if len(cycle.body) > BODY_HIGH_WATER:
            self.flow.pause_reading()
        cycle.message_event.set()

    def on_message_complete(self) -> None:
        self._head_open = True  # what comes next on this connection is a new head
        if self._refusal is None:
            super().on_message_complete()

    # refusals --------------------------------------------------------------------------
    def _too_large(self) -> tuple[int, str, str]:
        return (
            431,
            "request_header_too_large",
            f"the request's line and headers are over {self.limits.max_bytes} bytes",
        )

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.limits.timeout, self._head_too_slow)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self._head_open and not self.transport.is_closing():
            if self._head_bytes == 0 and self.cycle is not None:
                self.transport.close()  # an idle keep-alive connection: nothing to answer
                return
            message = f"the request's headers did not arrive within {self.limits.timeout:g} s"
            self._refuse(408, "request_timeout", message)

    def _refuse(self, status: int, code: str, message: str) -> None:
        body = error_json(code, message)
        head = [
            STATUS_LINE[status],
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()


class BodyIdleTimeout:
    """ASGI layer: a request body that sends nothing for ``timeout`` seconds ends the
    request with :class:`RequestTimeout` (408), raised where the app reads the body."""

    def __init__(self, app: ASGIApp, timeout: float) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_done = False

        async def timed_receive() -> Message:
            nonlocal body_done
            if body_done:  # after the body, receive() waits for a disconnect: no limit
                return await receive()
            try:
                async with asyncio.timeout(self.timeout):
                    message = await receive()
            except TimeoutError:
                raise RequestTimeout(
                    f"the request body sent nothing for {self.timeout:g} s; send it again"
                ) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        await self.app(scope, timed_receive, send)


class Server(uvicorn.Server):
    """uvicorn's server, telling the app (its ``stopping()``, when it has one) that a
    shutdown begins, before it waits for the requests in flight: answers that never end
    by themselves (event streams) end then, instead of holding the shutdown for its grace."""

    async def shutdown(self, sockets: Any = None) -> None:
        stopping = getattr(self.config.app, "stopping", None)
        if callable(stopping):
            stopping()
        await super().shutdown(sockets)


def server_config(app: ASGIApp, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """The uvicorn configuration every server process (and test server) runs with."""
    limits = HeadLimits(
        max_bytes=settings.max_header_bytes,
        max_count=settings.max_header_count,
        timeout=settings.header_timeout,
    )
    protocol = type("HttpProtocol", (LimitedHttpToolsProtocol,), {"limits": limits})
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "http": protocol,
        "timeout_graceful_shutdown": max(1, round(settings.shutdown_grace)),
        # uvicorn believes X-Forwarded-For/-Proto from loopback unless told otherwise, and
        # by default every caller is on loopback: only proxies the operator names count.
        "proxy_headers": settings.trusted_proxies is not None,
        "forwarded_allow_ips": settings.trusted_proxies,
        **overrides,
    }
    return uvicorn.Config(app, **options)
