"""The batcher on a fake clock: which requests go together, when a batch goes, and how
answers and errors split back. No real time passes: a timer fires only when a test
moves the clock, so "not held" means answered with the clock standing still."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from serving_cell.batching import Batcher, BatchLimits, split
from serving_cell.contracts import Call
from serving_cell.errors import BatchMismatch, PredictionFailed

WINDOW = 0.005  # 5 ms


@dataclass
class FakeTimer:
    when: float
    callback: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class FakeClock:
    """Time stands still until ``advance`` moves it and fires the timers then due."""

    t: float = 100.0
    timers: list[FakeTimer] = field(default_factory=list)

    def now(self) -> float:
        return self.t

    def call_at(self, when: float, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer(when, callback)
        self.timers.append(timer)
        return timer

    def pending(self) -> list[FakeTimer]:
        return [t for t in self.timers if not t.cancelled]

    def advance(self, seconds: float) -> None:
        self.t += seconds
        for timer in sorted(self.pending(), key=lambda t: t.when):
            if timer.when <= self.t and not timer.cancelled:
                timer.cancelled = True  # fired once
                timer.callback()


class Model:
    """A batched predict that records each batch; ``hold()`` keeps the next batches
    running until ``release()``, as a busy model would."""

    def __init__(self, answer: Callable[[list[Any]], Any] | None = None) -> None:
        self.batches: list[list[Any]] = []
        self.kwargs: list[dict[str, Any]] = []
        self.answer = answer or (lambda inputs: [f"out-{x}" for x in inputs])
        self.gate: asyncio.Event | None = None

    def hold(self) -> None:
        self.gate = asyncio.Event()

    def release(self) -> None:
        assert self.gate is not None
        self.gate.set()
        self.gate = None

    async def __call__(self, calls: list[Call]) -> Any:
        inputs = [c.inputs for c in calls]
        self.batches.append(inputs)
        self.kwargs.append(calls[0].kwargs)
        if self.gate is not None:
            await self.gate.wait()
        return self.answer(inputs)


async def spin() -> None:
    """Let every ready callback and task run; no timer fires (the clock stands still)."""
    for _ in range(10):
        await asyncio.sleep(0)


def make(model: Model, clock: FakeClock, size: int = 32, window: float = WINDOW) -> Batcher:
    return Batcher(model, BatchLimits(size, window * 1000), clock)


def send(batcher: Batcher, value: Any, **kwargs: Any) -> asyncio.Task[Any]:
    return asyncio.ensure_future(batcher.submit(Call(inputs=value, kwargs=kwargs)))


async def test_requests_arriving_together_are_one_call() -> None:
    model, clock = Model(), FakeClock()
    batcher = make(model, clock)
    tasks = [send(batcher, i) for i in range(3)]
    await spin()
    assert model.batches == [[0, 1, 2]]
    assert [t.result() for t in tasks] == ["out-0", "out-1", "out-2"]
    assert clock.t == 100.0 and not clock.pending()


async def test_a_lone_request_goes_at_once() -> None:
    model, clock = Model(), FakeClock()
    batcher = make(model, clock, window=1.0)
    task = send(batcher, "alone")
    await spin()
    assert task.result() == "out-alone"  # answered with the clock standing still
    assert model.batches == [["alone"]]
    assert clock.t == 100.0


async def test_requests_behind_a_busy_model_go_together_when_it_is_free() -> None:
    model, clock = Model(), FakeClock()
    batcher = make(model, clock)
    model.hold()
    first = send(batcher, "a")
    await spin()
    later = [send(batcher, x) for x in "bcd"]
    await spin()
    clock.advance(WINDOW * 0.9)
    await spin()
    assert model.batches == [["a"]] and batcher.waiting == 3  # within the window: they wait
    model.release()  # "a" finishes before the window ends: b, c, d go at once, together
    await spin()
    assert model.batches == [["a"], ["b", "c", "d"]]
    assert first.result() == "out-a"
    assert [t.result() for t in later] == ["out-b", "out-c", "out-d"]


async def test_the_window_sends_a_batch_even_while_the_model_is_busy() -> None:
    model, clock = Model(), FakeClock()
    batcher = make(model, clock)
    model.hold()
    first = send(batcher, "a")
    await spin()
    second = send(batcher, "b")
    await spin()
    clock.advance(0.004)
    third = send(batcher, "c")  # arrives later: the window counts from the oldest, "b"
    await spin()
    clock.advance(0.0009)
    await spin()
    assert model.batches == [["a"]]
    clock.advance(0.0002)  # 5.1 ms after "b"
    await spin()
    assert model.batches == [["a"], ["b", "c"]]
    assert batcher.running == 2
    model.release()
    await spin()
    assert [first.result(), second.result(), third.result()] == ["out-a", "out-b", "out-c"]


async def test_a_full_batch_goes_at_once_and_none_is_larger_than_max_batch_size() -> None:
    model, clock = Model(), FakeClock()
    batcher = make(model, clock, size=3)
    model.hold()
    tasks = [send(batcher, 0)]
    await spin()
    tasks += [send(batcher, i) for i in range(1, 8)]
    await spin()
    # busy with [0]; two full batches leave at once, the last one waits for the window
    assert model.batches == [[0], [1, 2, 3], [4, 5, 6]]
    assert batcher.waiting == 1
    clock.advance(WINDOW)
    await spin()
    assert model.batches[-1] == [7]
    model.release()
    await spin()
    assert [t.result() for t in tasks] == [f"out-{i}" for i in range(8)]
    assert max(len(b) for b in model.batches) == 3


async def test_more_than_max_batch_size_arriving_together_are_cut_into_batches() -> None:
    model, clock = Model(), FakeClock()
    batcher = make(model, clock, size=4)
    tasks = [send(batcher, i) for i in range(10)]
    await spin()
    clock.advance(WINDOW)
    await spin()
    assert [len(b) for b in model.batches] == [4, 4, 2]
    assert [t.result() for t in tasks] == [f"out-{i}" for i in range(10)]


async def test_requests_with_other_parameters_never_share_a_batch() -> None:
    model, clock = Model(), FakeClock()
    batcher = make(model, clock)
    tasks = [send(batcher, 1, scale=2), send(batcher, 2), send(batcher, 3, scale=2)]
    await spin()
    clock.advance(WINDOW)
    await spin()
    assert model.batches == [[1, 3], [2]]
    assert model.kwargs == [{"scale": 2}, {}]
    assert [t.result() for t in tasks] == ["out-1", "out-2", "out-3"]


async def test_a_raising_predict_fails_each_request_of_its_batch() -> None:
    def boom(inputs: list[Any]) -> Any:
        raise ValueError(f"cannot score {len(inputs)} rows")

    model, clock = Model(boom), FakeClock()
    batcher = make(model, clock)
    tasks = [send(batcher, i) for i in range(3)]
    await spin()
    for task in tasks:
        error = task.exception()
        assert isinstance(error, PredictionFailed)
        assert error.message == "ValueError: cannot score 3 rows"
    assert len({id(t.exception()) for t in tasks}) == 3  # each request its own error


async def test_an_exception_in_the_answer_fails_only_its_own_request() -> None:
    def answer(inputs: list[Any]) -> list[Any]:
        return [ValueError(f"{x} is negative") if x < 0 else x * 10 for x in inputs]

    model, clock = Model(answer), FakeClock()
    batcher = make(model, clock)
    ok, bad, fine = send(batcher, 1), send(batcher, -2), send(batcher, 3)
    await spin()
    assert model.batches == [[1, -2, 3]]
    assert ok.result() == 10 and fine.result() == 30
    error = bad.exception()
    assert isinstance(error, PredictionFailed) and error.message == "ValueError: -2 is negative"


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (lambda inputs: inputs[:-1], "batch of 3 inputs and answered 2 items"),
        (lambda inputs: {"rows": inputs}, "batch of 3 inputs and answered dict"),
        (lambda inputs: 42, "batch of 3 inputs and answered int"),
        (lambda inputs: (x for x in inputs), "answered a stream"),
    ],
    ids=["wrong-length", "dict", "scalar", "generator"],
)
async def test_an_answer_that_does_not_split_back_fails_every_request_clearly(
    answer: Callable[[list[Any]], Any], words: str
) -> None:
    model, clock = Model(answer), FakeClock()
    batcher = make(model, clock)
    tasks = [send(batcher, i) for i in range(3)]
    await spin()
    for task in tasks:
        error = task.exception()
        assert isinstance(error, BatchMismatch) and error.status_code == 500
        assert words in error.message
        assert "a batched predict answers a list with one item per input" in error.message


async def test_the_batcher_keeps_serving_after_a_failed_batch() -> None:
    failures = iter([True, False])

    def flaky(inputs: list[Any]) -> list[Any]:
        if next(failures):
            raise RuntimeError("once")
        return inputs

    model, clock = Model(flaky), FakeClock()
    batcher = make(model, clock)
    failed = send(batcher, 1)
    await spin()
    worked = send(batcher, 2)
    await spin()
    assert isinstance(failed.exception(), PredictionFailed)
    assert worked.result() == 2


async def test_a_caller_that_gives_up_while_waiting_leaves_its_batch() -> None:
    model, clock = Model(), FakeClock()
    batcher = make(model, clock)
    model.hold()
    first = send(batcher, "a")
    await spin()
    gone, stays = send(batcher, "b"), send(batcher, "c")
    await spin()
    gone.cancel()
    await spin()
    assert batcher.waiting == 1
    model.release()
    await spin()
    assert model.batches == [["a"], ["c"]]
    assert first.result() == "out-a" and stays.result() == "out-c"


def test_a_numpy_answer_splits_by_rows() -> None:
    rows = split(np.arange(6).reshape(3, 2), 3)
    assert [r.tolist() for r in rows] == [[0, 1], [2, 3], [4, 5]]
    with pytest.raises(BatchMismatch, match="answered int64"):
        split(np.int64(3), 1)


def test_limits_from_metadata() -> None:
    assert BatchLimits.from_metadata({}) is None
    assert BatchLimits.from_metadata({"batching": None}) is None
    assert BatchLimits.from_metadata({"batching": {}}) == BatchLimits(32, 5.0)
    limits = BatchLimits.from_metadata({"batching": {"max_batch_size": 8, "max_latency_ms": 2}})
    assert limits == BatchLimits(8, 2.0) and limits.max_latency == 0.002


@pytest.mark.parametrize(
    ("batching", "words"),
    [
        ([32], "must be an object"),
        ({"max_batch": 32}, "unknown fields ['max_batch']"),
        ({"max_batch_size": 0}, "max_batch_size must be an integer from 1 to 1024, not 0"),
        ({"max_batch_size": 5000}, "from 1 to 1024, not 5000"),
        ({"max_batch_size": True}, "not True"),
        ({"max_batch_size": 8.0}, "not 8.0"),
        ({"max_latency_ms": 0}, "max_latency_ms must be a number above 0 and at most 1000"),
        ({"max_latency_ms": "5"}, "not '5'"),
        ({"max_latency_ms": 1e9}, "at most 1000"),
    ],
)
def test_limits_from_metadata_refuse_what_the_server_refuses(batching: Any, words: str) -> None:
    with pytest.raises(ValueError) as caught:
        BatchLimits.from_metadata({"batching": batching})
    assert words in str(caught.value)
