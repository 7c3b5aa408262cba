"""The proxy's HTTP/1.1 client towards the cells: keep-alive connections pooled per cell,
each an asyncio protocol whose answers httptools parses (the C parser uvicorn itself
uses). It does only what the hop to a cell needs: a request head and body written in
one go when small, streamed with flow control when not; the answer streamed back with
reading paused while the caller is slower; no cookies, redirects, compression or TLS.
Measured against aiohttp's client on the same path (bench/proxy, README "Performance"),
it is what keeps /serve's added latency down.

Failures tell the proxy what it may do next: :class:`NotSent` (refused, or no connection
in time: the request never left), :class:`Dropped` (the connection closed before the
answer's end: the cell died holding it, or closed an idle connection as it went out),
``TimeoutError`` (no byte within the read timeout) and :class:`BadAnswer`.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator
from types import TracebackType
from typing import cast
from urllib.parse import urlsplit

import httptools

READ_HIGH = 256 * 1024
"""Bytes of an answer held unread before reading from the cell pauses."""
READ_LOW = 64 * 1024
KEEP_IDLE = 4.0
"""Seconds an idle connection is kept: below the cells' own keep-alive (uvicorn: 5 s),
so the pool never hands out one the cell is closing."""
MAX_IDLE = 64
"""Idle connections kept per cell."""
MAX_HEAD = 64 * 1024
"""Bytes of header lines a cell's answer may have (a cell is untrusted code: without a
bound, an endless header would grow the server's memory)."""


class CellError(Exception):
    """The hop to a cell failed."""


class NotSent(CellError):
    """No connection to the cell: the request never left."""


class Dropped(CellError):
    """The connection closed before the cell's answer ended."""


class BadAnswer(CellError):
    """The cell's answer is not HTTP/1.1 the parser accepts."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request on it at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self._head: asyncio.Future[None] | None = None
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._complete = False
        self._keep_alive = False
        self._error: Exception | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._head_bytes = 0
        self._head_done = False
        self._framed = False
        self._busy = False
        self._interim = False
        self._writable = asyncio.Event()
        self._writable.set()

    # asyncio.Protocol --------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # (uvloop's: no subclass)

    def data_received(self, data: bytes) -> None:
        if not self._busy:  # an answer nobody asked for: never handed to the next caller
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except (BadAnswer, httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            if not self._complete:  # (past an answer's end: the answer stands, the link goes)
                ours = exc if isinstance(exc, BadAnswer) else exc.__context__
                why = f"the cell's answer is not valid HTTP: {exc}"
                self._fail(ours if isinstance(ours, BadAnswer) else BadAnswer(why))
            self.close()
            return
        if not self._head_done:  # counted raw: httptools gathers a header line whole first
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD:
                self._fail(BadAnswer(f"the cell's answer has over {MAX_HEAD} bytes of head"))
                self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._writable.set()
        if self._head_done and not self._framed and exc is None and not self._complete:
            self._complete = True  # an answer with neither length nor chunks ends at the close
            self._busy = False
            self._wake()
        if not self._complete:
            self._fail(Dropped("the cell closed the connection" + (f": {exc}" if exc else "")))

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # httptools callbacks -----------------------------------------------------------
    def on_message_begin(self) -> None:
        if not self._busy:
            raise BadAnswer("the cell sent an answer nobody asked for")
        self._interim = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        if name.lower() in (b"content-length", b"transfer-encoding"):
            self._framed = True

    def on_headers_complete(self) -> None:
        self._status = self.parser.get_status_code()
        self._keep_alive = self.parser.should_keep_alive()  # (reset once the message ends)
        if 100 <= self._status < 200:  # an interim answer (103 Early Hints): the real one follows
            self._interim = True
            self._headers, self._framed = [], False
            return
        self._head_done = True
        if self._head is not None and not self._head.done():
            self._head.set_result(None)

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > READ_HIGH and not self._reading_paused and self.transport:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            return
        self._complete = True
        self._busy = False
        self._wake()

    # the request ---------------------------------------------------------------------
    def begin(self, loop: asyncio.AbstractEventLoop) -> None:
        self._head = loop.create_future()
        self._status, self._headers, self._complete, self._error = 0, [], False, None
        self._keep_alive = False
        self._chunks.clear()
        self._buffered = 0
        self._head_bytes = 0
        self._head_done = self._framed = False
        self._busy = True

    async def write(self, data: bytes, timeout: float) -> None:
        if self.closed or self.transport is None:
            raise Dropped("the cell closed the connection")
        self.transport.write(data)
        if not self._writable.is_set():  # a cell that stops reading: no longer than timeout
            async with asyncio.timeout(timeout):
                await self._writable.wait()

    async def head(self, timeout: float) -> tuple[int, list[tuple[bytes, bytes]]]:
        assert self._head is not None
        arrived = self._head.done() and self._head.exception() is None
        if self._error is not None and not arrived:
            raise self._error
        async with asyncio.timeout(timeout):
            await self._head
        return self._status, self._headers

    async def chunks(self, timeout: float) -> AsyncIterator[bytes]:
        """The answer's body as it arrives; ends at its end."""
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._reading_paused and self._buffered < READ_LOW and self.transport:
                    self._reading_paused = False
                    self.transport.resume_reading()
                yield chunk
                continue
            if self._error is not None:
                raise self._error
            if self._complete:
                return
            self._wakeup = asyncio.get_running_loop().create_future()
            async with asyncio.timeout(timeout):
                await self._wakeup

    def end_without_body(self) -> None:
        self._complete = True

    @property
    def reusable(self) -> bool:
        return self._complete and self._keep_alive and not self.closed

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _fail(self, exc: Exception) -> None:
        if self._error is not None:  # the first failure is the one to tell
            return
        self._error = exc
        if self._head is not None and not self._head.done():
            self._head.set_exception(exc)
            self._head.exception()  # retrieved: nobody may be waiting yet
        self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)


class Answer:
    """A cell's answer: status and headers at once, the body streamed; leaving the
    ``async with`` returns the connection to the pool when the answer was read whole."""

    def __init__(self, client: CellClient, origin: str, conn: _Connection, method: bytes) -> None:
        self._client, self._origin, self._conn = client, origin, conn
        self._method = method
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []

    async def __aenter__(self) -> Answer:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None and self._conn.reusable and self._method != b"HEAD":
            self._client.release(self._origin, self._conn)
        else:
            self._conn.close()

    def iter_chunks(self) -> AsyncIterator[bytes]:
        if self._method == b"HEAD":  # no body follows, whatever its headers say
            self._conn.end_without_body()
        return self._conn.chunks(self._client.read_timeout)


class CellClient:
    """Pooled connections to every cell; one per server, used on its event loop."""

    def __init__(self, read_timeout: float, connect_timeout: float = 2.0) -> None:
        self.read_timeout = read_timeout
        self.connect_timeout = connect_timeout
        self._idle: dict[str, list[_Connection]] = {}
        self._origins: dict[str, tuple[str, int, bytes, bytes]] = {}

    async def request(
        self,
        method: str,
        base: str,
        target: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes | AsyncIterator[bytes] | None,
        size: int | None = None,
    ) -> Answer:
        """Send ``method target`` to the cell at ``base`` (``http://host:port[/path]``) and
        wait for its answer's head. ``body``: bytes, or chunks (``size`` bytes in all
        when known, else sent chunked)."""
        host, port, netloc, prefix = self._origin(base)
        conn = await self._acquire(base, host, port)
        loop = asyncio.get_running_loop()
        conn.begin(loop)
        verb = method.encode("latin-1")
        path = prefix + target.encode("latin-1")
        lines = [b"%s %s HTTP/1.1\r\nhost: %s\r\n" % (verb, path, netloc)]
        lines += [name + b": " + value + b"\r\n" for name, value in headers]
        try:
            if isinstance(body, bytes):
                lines.append(b"content-length: %d\r\n\r\n" % len(body))
                await conn.write(b"".join(lines) + body, self.read_timeout)
            elif body is None:
                await conn.write(b"".join(lines) + b"\r\n", self.read_timeout)
            else:
                await self._stream(conn, lines, body, size)
            status, answer_headers = await conn.head(self.read_timeout)
        except BaseException:
            conn.close()
            raise
        answer = Answer(self, base, conn, verb)
        answer.status, answer.headers = status, answer_headers
        return answer

    async def _stream(
        self,
        conn: _Connection,
        lines: list[bytes],
        body: AsyncIterator[bytes],
        size: int | None,
    ) -> None:
        if size is not None:
            lines.append(b"content-length: %d\r\n\r\n" % size)
            await conn.write(b"".join(lines), self.read_timeout)
            sent = 0
            async for chunk in body:
                sent += len(chunk)
                await conn.write(chunk, self.read_timeout)
            if sent != size:  # the caller went away mid-body: the cell must not wait on
                raise CellError(f"the request body ended after {sent} of {size} bytes")
            return
        lines.append(b"transfer-encoding: chunked\r\n\r\n")
        await conn.write(b"".join(lines), self.read_timeout)
        async for chunk in body:
            if chunk:
                await conn.write(b"%x\r\n%s\r\n" % (len(chunk), chunk), self.read_timeout)
        await conn.write(b"0\r\n\r\n", self.read_timeout)

    def release(self, origin: str, conn: _Connection) -> None:
        idle = self._idle.setdefault(origin, [])
        if len(idle) >= MAX_IDLE:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        idle.append(conn)

    async def _acquire(self, origin: str, host: str, port: int) -> _Connection:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < KEEP_IDLE:
                return conn
            conn.close()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(_Connection, host, port)
        except TimeoutError as exc:
            raise NotSent(f"no connection to {origin} in {self.connect_timeout:g} s") from exc
        except OSError as exc:
            raise NotSent(f"cannot connect to {origin}: {exc.strerror or exc}") from exc
        return conn

    def _origin(self, base: str) -> tuple[str, int, bytes, bytes]:
        found = self._origins.get(base)
        if found is None:
            parts = urlsplit(base)
            if parts.scheme != "http" or not parts.hostname:
                raise NotSent(f"not a cell address: {base!r}")
            netloc, prefix = parts.netloc.encode("latin-1"), parts.path.rstrip("/").encode()
            found = (parts.hostname, parts.port or 80, netloc, prefix)
            if len(self._origins) < 10_000:
                self._origins[base] = found
        return found

    def forget(self, origin: str) -> None:
        """Close the idle connections to a cell taken out."""
        for conn in self._idle.pop(origin, []):
            conn.close()

    async def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
