"""/serve against callers that leave: the proxy in its real ASGI stack (uvicorn with the
server's own HTTP protocol, the body idle limit) in front of raw-socket cells. A caller
that goes away mid-body never has a cut body run as if whole; one that goes away during
an answer that never ends frees the cell's connection at once. A replica that dies
between its answer's head and body has dropped the request: a small answer goes to
another replica, one the caller already got bytes of is cut, never resent."""

from __future__ import annotations

import asyncio
import types
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn

from deployserver.api.limits import BodyIdleTimeout, LimitedHttpToolsProtocol
from deployserver.serving.balance import Load
from deployserver.serving.proxy import ServeProxy, cell_client
from deployserver.serving.routetable import Replica, Route

Handler = Any


class _Routes:
    def __init__(self, urls: tuple[str, ...], then: Route | None) -> None:
        self.urls = urls
        self.then = then
        """What the model resolves to once a replica was taken out (a version switch)."""
        self.switched = False

    async def resolve(self, model: str) -> Route:
        if self.switched and self.then is not None:
            return self.then
        replicas = tuple(Replica(f"c{i}", url) for i, url in enumerate(self.urls))
        return Route(model, "d1", True, 0.0, replicas)

    def invalidate(self, model: str | None = None) -> None:
        self.switched = True


class _Metrics:
    def __init__(self) -> None:
        self.statuses: list[int] = []

    def observe_proxy(self, label: str, status: int, seconds: float) -> None:
        self.statuses.append(status)


async def _fallback(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 404, "headers": []})
    await send({"type": "http.response.body", "body": b""})


@asynccontextmanager
async def _proxy(*cell_urls: str, then: Route | None = None) -> AsyncIterator[tuple[int, _Metrics]]:
    """The proxy on a free port, its one model's replicas at ``cell_urls`` (``then``: its
    route once one was taken out)."""
    metrics = _Metrics()
    ds = types.SimpleNamespace(
        routes=_Routes(cell_urls, then),
        token_cache=None,  # (a request without a token is refused before any look-up)
        sessions=None,
        clock=lambda: None,
        load=Load(),
        cell_client=cell_client(5.0),
        metrics=metrics,
        reconciler=types.SimpleNamespace(wake=lambda: None),
    )
    stack = BodyIdleTimeout(ServeProxy(_fallback), 5.0)
    app_state = types.SimpleNamespace(state=types.SimpleNamespace(ds=ds))

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scope["app"] = app_state
        await stack(scope, receive, send)

    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, http=LimitedHttpToolsProtocol, lifespan="off"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield server.servers[0].sockets[0].getsockname()[1], metrics
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@asynccontextmanager
async def _cell(handler: Handler) -> AsyncIterator[str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    async with server:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def test_a_body_cut_by_its_caller_never_reaches_the_cell_as_whole() -> None:
    bodies: list[bytes] = []

    async def cell(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        bodies.append(await reader.read())  # all that came before the connection closed
        writer.close()

    async with _cell(cell) as url, _proxy(url) as (port, metrics):
        for head, sent in (
            (b"transfer-encoding: chunked", b"5\r\nhello\r\n"),  # no last chunk
            (b"content-length: 100000", b"x" * 70000),  # streamed, then cut
            (b"content-length: 1000", b"x" * 10),  # small: read whole first
        ):
            _, caller = await asyncio.open_connection("127.0.0.1", port)
            caller.write(b"POST /serve/m/predict HTTP/1.1\r\nhost: x\r\n" + head + b"\r\n\r\n")
            caller.write(sent)
            await caller.drain()
            await asyncio.sleep(0.2)
            caller.close()  # gone mid-body
        for _ in range(100):
            if len(metrics.statuses) == 3:
                break
            await asyncio.sleep(0.05)
    assert metrics.statuses == [499, 499, 499]
    # what reached the cell is visibly cut: no last chunk, fewer bytes than announced
    assert all(not body.endswith(b"0\r\n\r\n") for body in bodies), bodies
    assert all(len(body) < 100000 for body in bodies)


async def test_a_caller_leaving_an_endless_answer_frees_the_cells_connection() -> None:
    freed = asyncio.Event()

    async def cell(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        try:
            while True:  # tokens, for ever
                writer.write(b"6\r\ntoken\n\r\n")
                await writer.drain()
                await asyncio.sleep(0.01)
        except ConnectionError:
            freed.set()

    async with _cell(cell) as url, _proxy(url) as (port, metrics):
        reader, caller = await asyncio.open_connection("127.0.0.1", port)
        caller.write(b"GET /serve/m/stream HTTP/1.1\r\nhost: x\r\n\r\n")
        await caller.drain()
        assert b"token" in await reader.read(4096)
        caller.close()
        await asyncio.wait_for(freed.wait(), 5)  # the cell saw its connection go
    assert metrics.statuses == [499]


async def _dies_after(answer: bytes, calls: list[str], name: str) -> Handler:
    async def cell(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        calls.append(name)
        writer.write(answer)
        await writer.drain()
        writer.close()  # died here

    return cell


async def _answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        await reader.readexactly(length)
        body = b'{"predictions": "from the other replica"}'
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()


async def test_a_replica_dying_between_head_and_body_leaves_the_request_to_another() -> None:
    calls: list[str] = []
    head_only = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 41\r\n\r\n"
    dying = await _dies_after(head_only, calls, "dying")
    async with (
        _cell(dying) as first,
        _cell(_answers) as second,
        _proxy(first, second) as (
            port,
            metrics,
        ),
    ):
        reader, caller = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(4):  # the balancer may pick either first; the dying one is ejected
            caller.write(
                b"POST /serve/m/predict HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}"
            )
            await caller.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            assert b"content-length: 41" in head.lower()
            assert await reader.readexactly(41) == b'{"predictions": "from the other replica"}'
        caller.close()
    assert metrics.statuses == [200] * 4
    assert calls == ["dying"]  # it died once, and was taken out


async def test_a_replica_dying_mid_answer_after_bytes_went_out_is_not_resent() -> None:
    calls: list[str] = []
    begun = b"HTTP/1.1 200 OK\r\ncontent-length: 200000\r\n\r\n" + b"x" * 1000
    dying = await _dies_after(begun, calls, "dying")
    async with _cell(dying) as url, _proxy(url) as (port, metrics):
        reader, caller = await asyncio.open_connection("127.0.0.1", port)
        caller.write(b"POST /serve/m/predict HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")
        await caller.drain()
        got = await asyncio.wait_for(reader.read(), 5)  # until the proxy closes
        caller.close()
    assert got.startswith(b"HTTP/1.1 200") and got.endswith(b"x" * 1000)  # cut, visibly
    assert calls == ["dying"] and metrics.statuses == [502]  # counted as failed


async def test_a_request_rerouted_to_a_version_gone_private_needs_a_token() -> None:
    # the public version's replica is gone (refused); the model's route is now a new
    # version that is private: the request, let in without a token, is not sent there
    seen: list[bytes] = []

    async def private(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.close()

    gone = await asyncio.start_server(private, "127.0.0.1", 0)
    gone_url = f"http://127.0.0.1:{gone.sockets[0].getsockname()[1]}"
    gone.close()
    await gone.wait_closed()  # nothing listens there now
    async with _cell(private) as url:
        then = Route("m", "d2", False, 0.0, (Replica("c9", url),))
        async with _proxy(gone_url, then=then) as (port, metrics):
            reader, caller = await asyncio.open_connection("127.0.0.1", port)
            caller.write(
                b"POST /serve/m/predict HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}"
            )
            await caller.drain()
            answer = await asyncio.wait_for(reader.readuntil(b"}}"), 5)
            caller.close()
    assert answer.startswith(b"HTTP/1.1 401"), answer
    assert b"needs a token" in answer
    assert seen == [] and metrics.statuses == [401]
