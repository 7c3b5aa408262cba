"""A thread of one upload's own that parses, hashes and writes the body's batches in the
order the event loop hands them over, with up to ``depth`` of them waiting: the loop goes
on receiving while the thread works, and never waits for a thread hop per batch."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable

Data = bytes | bytearray


class Feeder:
    def __init__(self, feed: Callable[[Data], None], depth: int) -> None:
        self._feed = feed
        self._loop = asyncio.get_running_loop()
        self._queue: queue.SimpleQueue[Data | None] = queue.SimpleQueue()
        self._room = asyncio.Semaphore(depth)
        self._done: asyncio.Future[None] = self._loop.create_future()
        self._error: BaseException | None = None
        self._abandoned = False
        self._thread = threading.Thread(target=self._run, name="upload-feed", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while (data := self._queue.get()) is not None:
                if self._error is None and not self._abandoned:
                    try:
                        self._feed(data)
                    except BaseException as exc:  # the loop raises it at the next hand-over
                        self._error = exc
                self._loop.call_soon_threadsafe(self._room.release)
        finally:
            self._loop.call_soon_threadsafe(self._finished)

    def _finished(self) -> None:
        if not self._done.done():
            self._done.set_result(None)

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    async def put(self, data: Data) -> None:
        """Hand ``data`` over; waits while ``depth`` batches are waiting already."""
        self._raise()
        await self._room.acquire()
        self._raise()
        self._queue.put(data)

    async def finish(self) -> None:
        """Wait until every batch handed over is parsed and written."""
        self._queue.put(None)
        await asyncio.shield(self._done)
        self._raise()

    async def abandon(self) -> None:
        """Stop (what waits is dropped) and wait until the thread has let go of the
        files: when cancelled meanwhile, by joining it, so that no file is closed under it."""
        self._abandoned = True
        self._queue.put(None)
        try:
            await asyncio.shield(self._done)
        except asyncio.CancelledError:
            self._thread.join()
            raise
