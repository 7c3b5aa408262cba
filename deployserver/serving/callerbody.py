"""The body of a request to /serve as the proxy reads it from its caller: kept whole when
small and sized (so a request may be sent to another replica), streamed once otherwise,
and never handed to a cell cut short when the caller goes away mid-body."""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.types import Receive, Scope

from deployserver.errors import DeployServerError
from deployserver.serving.cellclient import CellError

SMALL_BODY = 64 * 1024
"""Bodies up to this size (with a length) are read whole before they are sent."""


def header(scope: Scope, wanted: bytes) -> bytes | None:
    for name, value in scope["headers"]:
        if name == wanted:
            return value  # type: ignore[no-any-return]
    return None


class CallerGone(CellError):
    """The caller went away before its request's body ended."""


class CallerBody:
    """The caller's request body: read whole when small and sized, else a one-shot stream."""

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.receive = receive
        length = header(scope, b"content-length")
        self.size = int(length) if length and length.isdigit() else None
        self.chunked = header(scope, b"transfer-encoding") is not None
        self.started = False
        self.responded = False
        self.whole: bytes | None = None
        self.stalled: DeployServerError | None = None
        """Set when the caller stopped sending (the client towards the cell wraps it)."""

    async def payload(self) -> bytes | AsyncIterator[bytes] | None:
        if self.size is not None and self.size <= SMALL_BODY:
            if self.whole is None:
                whole = b"".join([chunk async for chunk in self._chunks()])
                if len(whole) != self.size:  # never a cut body that looks whole to the cell
                    raise CallerGone(f"the caller sent {len(whole)} of {self.size} bytes")
                self.whole = whole
            return self.whole  # resendable: a re-route may send it again
        if self.size or self.chunked:
            return self._chunks()
        return None

    async def disconnected(self) -> None:
        """Returns once the caller disconnects (call after the body was read)."""
        while (await self.receive())["type"] != "http.disconnect":
            pass

    @property
    def resendable(self) -> bool:
        return self.whole is not None or not self.started

    async def _chunks(self) -> AsyncIterator[bytes]:
        self.started = True
        while True:
            try:
                message = await self.receive()
            except DeployServerError as exc:  # RequestTimeout from the body's idle limit
                self.stalled = exc
                raise
            if message["type"] == "http.disconnect":  # mid-body: the cell must not run it
                raise CallerGone("the caller went away before its body ended")
            if message.get("body"):
                yield message["body"]
            if not message.get("more_body", False):
                return
