"""The upload's feeding thread: batches parsed in order, at most ``depth`` waiting, a
failure raised at the next hand-over, and no batch touched once the upload is abandoned."""

from __future__ import annotations

import threading

import pytest

from deployserver.errors import InvalidUpload
from deployserver.upload.feeder import Data, Feeder


async def test_batches_are_fed_in_order_on_a_thread_of_their_own() -> None:
    seen: list[bytes] = []
    threads: set[str] = set()

    def feed(data: Data) -> None:
        threads.add(threading.current_thread().name)
        seen.append(bytes(data))

    feeder = Feeder(feed, depth=2)
    for i in range(50):
        await feeder.put(bytes([i]) * 10)
    await feeder.finish()
    assert seen == [bytes([i]) * 10 for i in range(50)]
    assert threads == {"upload-feed"}


async def test_a_failure_is_raised_at_the_next_hand_over_and_nothing_more_is_fed() -> None:
    fed: list[bytes] = []
    failed = threading.Event()

    def feed(data: Data) -> None:
        if data == b"bad":
            failed.set()
            raise InvalidUpload("malformed multipart body")
        fed.append(bytes(data))

    feeder = Feeder(feed, depth=1)
    await feeder.put(b"good")
    await feeder.put(b"bad")
    with pytest.raises(InvalidUpload):
        for _ in range(100):  # the thread fails while the loop goes on handing over
            await feeder.put(b"after")
    assert failed.is_set() and fed == [b"good"]
    await feeder.abandon()


async def test_abandon_waits_for_the_batch_in_hand_and_drops_the_rest() -> None:
    started, release = threading.Event(), threading.Event()
    fed: list[bytes] = []

    def feed(data: Data) -> None:
        started.set()
        release.wait(5)
        fed.append(bytes(data))

    feeder = Feeder(feed, depth=3)
    for name in (b"a", b"b", b"c"):
        await feeder.put(name)
    assert started.wait(5)
    threading.Timer(0.05, release.set).start()
    await feeder.abandon()
    assert fed == [b"a"]  # the one in hand finished; the waiting ones were dropped
