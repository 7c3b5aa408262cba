"""Adaptive batching: predictions that arrive together reach the model as one call.

A deployment opts in with metadata ``"batching": {"max_batch_size": 32,
"max_latency_ms": 5}``; its script's ``predict`` is then given a list of inputs, one per
request in arrival order, and answers a list of as many outputs, the i-th going back to
the i-th request (docs/api.md, "Batching").

When a batch goes to the model:

- at once when no batch is running: a request that arrives alone is never held;
- at once when it is full (``max_batch_size`` requests);
- else when its oldest request has waited ``max_latency_ms``, even while another batch
  still runs. The window only matters while a batch fills behind a busy model.

Requests that arrive in the same turn of the event loop are looked at together. Requests
whose parameters differ never share a batch (the script gets one set of keyword
arguments per call). A script's exception fails every request of its batch; an answer
that does not split back into one item per request fails them all with ``BatchMismatch``;
an exception the script puts in its answer list fails only that item's request.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from serving_cell.errors import BatchMismatch, ModelNotReady, PredictionFailed, describe
from serving_cell.streaming import is_stream

if TYPE_CHECKING:
    from serving_cell.contracts import Call

logger = logging.getLogger("serving_cell")

MAX_BATCH_SIZE = 1024
"""Largest ``max_batch_size`` a deployment may ask for."""
MAX_LATENCY_MS = 1000.0
"""Longest ``max_latency_ms`` a deployment may ask for."""
DEFAULT_MAX_BATCH_SIZE = 32
DEFAULT_MAX_LATENCY_MS = 5.0
FIELDS = ("max_batch_size", "max_latency_ms")


BATCHED_CONTRACTS = ("model",)
"""Contracts whose predict can take a list of inputs: this project's ``Model``."""


class BatchingUnsupported(ValueError):
    """The deployment asks for batching but its script's contract cannot take a batch."""


def check_contract(contract: str) -> None:
    """Refuse batching for a script of a contract that cannot take a batch."""
    if contract not in BATCHED_CONTRACTS:
        raise BatchingUnsupported(
            f"metadata 'batching' needs this project's contract (a class Model whose "
            f"predict takes a list of inputs); a {contract!r} scoring script cannot take "
            "a batch"
        )


@dataclass(frozen=True)
class BatchLimits:
    """How large a batch may grow and how long its oldest request may wait for it."""

    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    max_latency_ms: float = DEFAULT_MAX_LATENCY_MS

    @property
    def max_latency(self) -> float:
        """``max_latency_ms`` in seconds."""
        return self.max_latency_ms / 1000

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> BatchLimits | None:
        """The metadata's ``batching``, checked as the server checks it at upload (a cell
        may be started by hand); None when batching is off. Raises ValueError."""
        value = metadata.get("batching")
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ValueError("metadata 'batching' must be an object like {\"max_batch_size\": 32}")
        unknown = sorted(set(value) - set(FIELDS))
        if unknown:
            raise ValueError(f"metadata 'batching' has unknown fields {unknown}; known: {FIELDS}")
        size = value.get("max_batch_size", DEFAULT_MAX_BATCH_SIZE)
        if type(size) is not int or not 1 <= size <= MAX_BATCH_SIZE:
            raise ValueError(
                f"batching.max_batch_size must be an integer from 1 to {MAX_BATCH_SIZE}, "
                f"not {size!r}"
            )
        latency = value.get("max_latency_ms", DEFAULT_MAX_LATENCY_MS)
        if type(latency) not in (int, float) or not 0 < latency <= MAX_LATENCY_MS:
            raise ValueError(
                f"batching.max_latency_ms must be a number above 0 and at most "
                f"{MAX_LATENCY_MS:g}, not {latency!r}"
            )
        return cls(size, float(latency))


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """Time as the batcher sees it: the event loop's, or a test's."""

    def now(self) -> float: ...

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer: ...


class LoopClock:
    """The running event loop's clock and timers."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        return asyncio.get_running_loop().call_at(when, callback)


RunBatch = Callable[[list["Call"]], Awaitable[Any]]
"""Predict on a batch of calls (their inputs as one list); the script's raw answer."""


@dataclass(eq=False)
class _Waiting:
    call: Call
    key: str
    arrived: float
    answer: asyncio.Future[Any]


def _key(kwargs: Mapping[str, Any]) -> str:
    """Requests share a batch only when their parameters are the same."""
    return json.dumps(kwargs, sort_keys=True, default=repr)


def split(answer: Any, size: int) -> list[Any]:
    """The script's answer to a batch of ``size`` inputs, one item per input."""
    inputs = f"{size} input{'s' if size != 1 else ''}"
    if is_stream(answer):
        raise BatchMismatch(
            f"predict was given a batch of {inputs} and answered a stream; a batched "
            "predict answers a list with one item per input"
        )
    if isinstance(answer, list | tuple):
        items = list(answer)
    elif type(answer).__module__ == "numpy" and getattr(answer, "ndim", 0) >= 1:
        items = list(answer)  # a numpy array: one row per input
    else:
        raise BatchMismatch(
            f"predict was given a batch of {inputs} and answered {type(answer).__name__}; "
            "a batched predict answers a list with one item per input"
        )
    if len(items) != size:
        raise BatchMismatch(
            f"predict was given a batch of {inputs} and answered {len(items)} items; "
            "a batched predict answers a list with one item per input, in order"
        )
    return items


class Batcher:
    """Queues predictions and sends them to ``run`` in batches (see the module's rules).

    ``observe`` is told each batch's size (the cell's metrics)."""

    def __init__(
        self,
        run: RunBatch,
        limits: BatchLimits,
        clock: Clock | None = None,
        observe: Callable[[int], None] | None = None,
    ) -> None:
        self.limits = limits
        self._run = run
        self._clock: Clock = clock or LoopClock()
        self._observe = observe
        self._waiting: list[_Waiting] = []
        self._running: set[asyncio.Task[None]] = set()
        self._timer: Timer | None = None
        self._timer_at = 0.0
        self._scheduled = False

    @property
    def waiting(self) -> int:
        """Requests waiting for their batch to go."""
        return len(self._waiting)

    @property
    def running(self) -> int:
        """Batches the model is working on."""
        return len(self._running)

    async def submit(self, call: Call) -> Any:
        """This call's own item of its batch's answer; a CellError when it failed."""
        loop = asyncio.get_running_loop()
        item = _Waiting(call, _key(call.kwargs), self._clock.now(), loop.create_future())
        self._waiting.append(item)
        self._schedule()
        try:
            return await item.answer
        finally:
            if item in self._waiting:  # the caller gave up before its batch went
                self._waiting.remove(item)

    def _schedule(self) -> None:
        """Look at the queue once this turn of the loop is over, so that requests that
        arrived in the same turn are seen together (no timer: nothing is held)."""
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._dispatch)

    def _on_timer(self) -> None:
        self._timer = None
        self._dispatch(at_least=self._timer_at)

    def _dispatch(self, at_least: float = 0.0) -> None:
        self._scheduled = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        # A loop may run a timer a hair before its time: its deadline has come all the same.
        now = max(self._clock.now(), at_least)
        size, window = self.limits.max_batch_size, self.limits.max_latency
        groups: dict[str, list[_Waiting]] = {}
        for item in self._waiting:
            groups.setdefault(item.key, []).append(item)
        leaving: list[list[_Waiting]] = []
        idle = not self._running
        for group in groups.values():  # the group of the oldest request first
            for start in range(0, len(group), size):
                batch = group[start : start + size]
                if len(batch) < size and not idle and now < batch[0].arrived + window:
                    break  # neither full nor due; the rest of this group came later still
                leaving.append(batch)
                idle = False
        gone = {id(item) for batch in leaving for item in batch}
        self._waiting = [item for item in self._waiting if id(item) not in gone]
        for batch in leaving:
            self._start(batch)
        if self._waiting:
            self._timer_at = min(item.arrived for item in self._waiting) + window
            self._timer = self._clock.call_at(self._timer_at, self._on_timer)

    def _start(self, batch: list[_Waiting]) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(batch))
        self._running.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if self._waiting:  # the model may be idle now: the next batch goes at once
            self._schedule()

    async def _serve(self, batch: list[_Waiting]) -> None:
        """Predict once for the batch and hand each request its own item (or error)."""
        batch = [item for item in batch if not item.answer.done()]  # callers gone
        if not batch:
            return
        if self._observe is not None:
            self._observe(len(batch))
        try:
            answer = await self._run([item.call for item in batch])
        except asyncio.CancelledError:  # the cell is stopping: nobody is left waiting
            for item in batch:
                _settle(item, error=ModelNotReady("the cell stopped before predicting"))
            raise
        except Exception as exc:
            logger.exception("batched prediction failed (%d requests)", len(batch))
            for item in batch:
                _settle(item, error=PredictionFailed(describe(exc)))
            return
        try:
            items = split(answer, len(batch))
        except BatchMismatch as exc:
            logger.error("batched prediction failed: %s", exc.message)
            for item in batch:
                _settle(item, error=BatchMismatch(exc.message))
            return
        for item, value in zip(batch, items, strict=True):
            if isinstance(value, BaseException):
                _settle(item, error=PredictionFailed(describe(value)))
            else:
                _settle(item, value=value)


def _settle(item: _Waiting, *, value: Any = None, error: Exception | None = None) -> None:
    if item.answer.done():  # answered already, or its caller went away
        return
    if error is not None:
        item.answer.set_exception(error)
    else:
        item.answer.set_result(value)
