"""The proxy's client towards the cells, against raw sockets that misbehave on purpose:
connections reused, bodies streamed both ways with flow control, and each failure named
for what the proxy may do next (sent elsewhere, resent, or answered 502/504)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from deployserver.serving.cellclient import (
    READ_HIGH,
    BadAnswer,
    CellClient,
    CellError,
    Dropped,
    NotSent,
)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n{}"


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """(head, body) of one request with a content-length or chunked body."""
    head = await reader.readuntil(b"\r\n\r\n")
    lower = head.lower()
    if b"transfer-encoding: chunked" in lower:
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                return head, body
            body += chunk[:-2]
    length = 0
    for line in lower.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head, await reader.readexactly(length)


async def _serve(handler: Handler) -> tuple[asyncio.Server, str, list[int]]:
    """A server on loopback; the list counts the connections it accepted."""
    accepted: list[int] = []

    async def counted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        try:
            await handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(counted, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}", accepted


async def test_keep_alive_connections_are_reused_and_headers_reach_the_cell() -> None:
    heads: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head, body = await _read_request(reader)
            heads.append(head + body)
            writer.write(OK)

    server, url, accepted = await _serve(handler)
    client = CellClient(read_timeout=5)
    async with server:
        for _ in range(3):
            headers = [(b"x-a", b"1")]
            answer = await client.request("POST", f"{url}/cell", "/predict?x=1", headers, b"[1]")
            async with answer:
                assert answer.status == 200
                assert b"".join([c async for c in answer.iter_chunks()]) == b"{}"
        await client.close()
    assert len(accepted) == 1  # one connection, three requests
    assert heads[0].startswith(b"POST /cell/predict?x=1 HTTP/1.1\r\nhost: 127.0.0.1:")
    assert b"x-a: 1\r\n" in heads[0] and heads[0].endswith(b"content-length: 3\r\n\r\n[1]")


async def test_an_answer_streams_before_it_ends_and_a_chunked_body_streams_in() -> None:
    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, body = await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        writer.write(b"%x\r\n%s\r\n" % (len(body), body))
        await writer.drain()
        await release.wait()  # the first piece is out; the rest waits for the test
        writer.write(b"4\r\nlast\r\n0\r\n\r\n")

    async def pieces() -> AsyncIterator[bytes]:
        for piece in (b"ab", b"", b"cd"):
            yield piece

    server, url, _ = await _serve(handler)
    client = CellClient(read_timeout=5)
    async with server:
        answer = await client.request("POST", url, "/", [], pieces())
        async with answer:
            chunks = answer.iter_chunks()
            assert await anext(chunks) == b"abcd"  # before the cell finished
            release.set()
            assert [c async for c in chunks] == [b"last"]
        await client.close()


async def test_a_refused_connection_is_not_sent() -> None:
    server, url, _ = await _serve(lambda r, w: asyncio.sleep(0))
    server.close()
    await server.wait_closed()
    with pytest.raises(NotSent):
        await CellClient(read_timeout=5).request("POST", url, "/", [], b"{}")


async def test_a_cell_that_dies_holding_the_request_dropped_it() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)  # received it whole, then the connection goes

    server, url, _ = await _serve(handler)
    async with server:
        with pytest.raises(Dropped):
            await CellClient(read_timeout=5).request("POST", url, "/", [], b"{}")


async def test_garbage_is_a_bad_answer_and_silence_a_timeout() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"SMTP ready\r\n\r\n")
        await asyncio.sleep(1)

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await asyncio.sleep(5)

    for handler, error in ((garbage, BadAnswer), (silent, TimeoutError)):
        server, url, _ = await _serve(handler)
        async with server:
            with pytest.raises(error):
                await CellClient(read_timeout=0.3).request("GET", url, "/", [], None)


async def test_connection_close_and_head_answers_are_not_reused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, _ = await _read_request(reader)
        if head.startswith(b"HEAD"):  # a length, and no body, as HTTP has it
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok")
        await asyncio.sleep(1)

    server, url, accepted = await _serve(handler)
    client = CellClient(read_timeout=5)
    async with server:
        for method in ("GET", "HEAD", "GET"):
            async with await client.request(method, url, "/", [], None) as answer:
                body = b"".join([c async for c in answer.iter_chunks()])
                assert body == (b"" if method == "HEAD" else b"ok")
        await client.close()
    assert len(accepted) == 3


async def test_a_cell_cannot_answer_the_next_caller_ahead_or_grow_the_servers_memory() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, _ = await _read_request(reader)
        if b"/smuggle" in head:  # an answer, and one more nobody asked for
            writer.write(OK + b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nevil")
        elif b"/endless" in head:
            writer.write(b"HTTP/1.1 200 OK\r\n")
            for n in range(10_000):
                writer.write(b"x-%d: %s\r\n" % (n, b"y" * 100))
                await writer.drain()
        else:  # an interim answer first, then the real one
            writer.write(b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n" + OK)
        await asyncio.sleep(1)

    server, url, accepted = await _serve(handler)
    client = CellClient(read_timeout=5)
    async with server:
        async with await client.request("GET", url, "/smuggle", [], None) as answer:
            assert b"".join([c async for c in answer.iter_chunks()]) == b"{}"
        async with await client.request("GET", url, "/hints", [], None) as answer:
            assert answer.status == 200 and (b"link", b"</a>") not in answer.headers
            assert b"".join([c async for c in answer.iter_chunks()]) == b"{}"
        await client.close()
        with pytest.raises(BadAnswer, match="bytes of head"):
            await CellClient(read_timeout=5).request("GET", url, "/endless", [], None)
    assert len(accepted) == 3  # the smuggled answer closed its connection


async def test_a_body_that_ends_early_never_leaves_the_cell_waiting() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(1)

    async def short() -> AsyncIterator[bytes]:
        yield b"half"

    server, url, _ = await _serve(handler)
    async with server:
        with pytest.raises(CellError, match="after 4 of 8 bytes"):
            await CellClient(read_timeout=5).request("POST", url, "/", [], short(), size=8)


async def test_reading_pauses_while_the_caller_is_slower_than_the_cell() -> None:
    big = 16 * READ_HIGH

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % big)
        writer.write(b"x" * big)
        await writer.drain()

    server, url, _ = await _serve(handler)
    client = CellClient(read_timeout=5)
    async with server:
        answer = await client.request("GET", url, "/", [], None)
        async with answer:
            chunks = answer.iter_chunks()
            got = len(await anext(chunks))
            await asyncio.sleep(0.3)  # the cell keeps sending; the client stops reading
            held = answer._conn._buffered  # what memory the answer holds
            assert held <= 2 * READ_HIGH, held
            got += sum([len(c) async for c in chunks])
        assert got == big
        await client.close()


async def test_an_endless_header_line_or_a_cell_that_stops_reading_ends_in_time() -> None:
    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nx-a: ")
        for _ in range(400):  # one header line that never ends
            writer.write(b"a" * 4096)
            await writer.drain()

    async def deaf(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(5)  # reads no more of the body

    async def plenty() -> AsyncIterator[bytes]:
        for _ in range(400):
            yield b"x" * 65536

    server, url, _ = await _serve(endless)
    async with server:
        with pytest.raises(BadAnswer, match="bytes of head"):
            await CellClient(read_timeout=5).request("GET", url, "/", [], None)
    server, url, _ = await _serve(deaf)
    async with server:
        with pytest.raises(TimeoutError):
            await CellClient(read_timeout=0.5).request("POST", url, "/", [], plenty())


async def test_an_answer_that_ends_with_its_connection_is_whole() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end")

    server, url, _ = await _serve(handler)
    client = CellClient(read_timeout=5)
    async with server:
        async with await client.request("GET", url, "/", [], None) as answer:
            assert b"".join([c async for c in answer.iter_chunks()]) == b"until the end"
        await client.close()
