"""The health gate, called directly over a fake cell (httpx.MockTransport) with a fake
clock and sleep: which verdict each kind of cell gets, after which backoff delays, and
how one ping is bounded (total deadline, body cap), and the watch's round of pings
(concurrency) over a real aiohttp server on loopback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp import web

from deployserver.control import health_gate
from deployserver.control.health_gate import (
    HealthPolicy,
    Verdict,
    await_ready,
    ping_all,
    ping_ready,
)
from deployserver.runtime.base import CellInfo

URL = "http://cell.test:8080"
# the server's defaults: a ping at once, then 50 ms doubling to 0.5 s
POLICY = HealthPolicy(first_delay=0.05, max_delay=0.5, deadline=180.0, ping_timeout=2.0)

STARTING = {"state": "STARTING", "reason": "loading the model"}
READY = {"state": "READY"}
FAILED = {"state": "SETUP_FAILED", "reason": "ZeroDivisionError: division by zero\n\nTraceback"}

Answer = dict[str, Any] | httpx.Response | Exception


class FakeCell:
    """Answers /health/ready from a script, one answer per ping, the last one repeated:
    a dict is JSON (200 for READY, else 503), a Response is sent as it is, an exception
    is raised as the transport would. Records each ping and the timeout it was given."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.pings: list[httpx.Request] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.pings.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, httpx.Response):
            return answer
        return httpx.Response(200 if answer["state"] == "READY" else 503, json=answer)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handle))

    @property
    def timeouts(self) -> list[float]:
        return [request.extensions["timeout"]["read"] for request in self.pings]


class FakeTime:
    """A clock that moves only when the gate sleeps; the sleeps it was asked for."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class FakeRuntime:
    """What ``observe`` sees: the cell running until told otherwise."""

    def __init__(self, *infos: CellInfo | None) -> None:
        self.infos = list(infos) or [cell(running=True)]
        self.observed = 0

    async def observe(self) -> CellInfo | None:
        self.observed += 1
        return self.infos.pop(0) if len(self.infos) > 1 else self.infos[0]


def cell(*, running: bool, exit_code: int | None = None) -> CellInfo:
    return CellInfo("fake", "c1", "d1", URL, running, exit_code)


async def gate(
    fake: FakeCell,
    runtime: FakeRuntime | None = None,
    policy: HealthPolicy = POLICY,
    *,
    exited_reason: Callable[[CellInfo | None], Awaitable[str]] | None = None,
) -> tuple[Verdict, FakeTime]:
    clock = FakeTime()
    async with fake.client() as client:
        verdict = await await_ready(
            client,
            URL,
            (runtime or FakeRuntime()).observe,
            policy,
            clock=clock.clock,
            sleep=clock.sleep,
            exited_reason=exited_reason,
        )
    return verdict, clock


# --- await_ready --------------------------------------------------------------------------


async def test_a_cell_ready_at_once_is_pinged_once_without_waiting() -> None:
    fake, runtime = FakeCell(READY), FakeRuntime()
    verdict, clock = await gate(fake, runtime)
    assert verdict == Verdict(True)
    assert clock.sleeps == []
    assert [str(p.url) for p in fake.pings] == [f"{URL}/health/ready"]
    assert runtime.observed == 0


async def test_a_cell_ready_after_starting_answers_waits_the_policy_backoff() -> None:
    fake, runtime = FakeCell(*[STARTING] * 6, READY), FakeRuntime()
    verdict, clock = await gate(fake, runtime)
    assert verdict == Verdict(True)
    assert clock.sleeps == [0.05, 0.1, 0.2, 0.4, 0.5, 0.5]  # doubling, capped at max_delay
    assert len(fake.pings) == 7
    # after an answer that was not a verdict, at most every observe_every (0.25 s):
    # at 0, 0.35, 0.75 and 1.25 s, not at 0.05 nor 0.15 (the ping at 1.75 s is ready)
    assert runtime.observed == 4


async def test_a_cell_whose_setup_failed_gives_its_reason() -> None:
    fake, runtime = FakeCell(STARTING, FAILED), FakeRuntime()
    verdict, clock = await gate(fake, runtime)
    assert verdict == Verdict(
        False, "the scoring script failed to load: ZeroDivisionError: division by zero\n\nTraceback"
    )
    assert clock.sleeps == [0.05]
    assert len(fake.pings) == 2


async def test_a_setup_failure_without_a_reason_says_so() -> None:
    verdict, _ = await gate(FakeCell({"state": "SETUP_FAILED"}))
    assert verdict == Verdict(False, "the scoring script failed to load: ?")


async def test_a_cell_that_exits_gives_the_exit_reason() -> None:
    exited = cell(running=False, exit_code=3)
    fake, runtime = FakeCell(STARTING), FakeRuntime(cell(running=True), exited)
    seen: list[CellInfo | None] = []

    async def exit_reason(info: CellInfo | None) -> str:
        seen.append(info)
        return "the cell exited with code 3; last output:\nImportError: no module named torch"

    verdict, clock = await gate(fake, runtime, exited_reason=exit_reason)
    assert verdict == Verdict(
        False, "the cell exited with code 3; last output:\nImportError: no module named torch"
    )
    assert seen == [exited]
    # seen running after the first ping, exited at the next look 0.25 s on or later
    assert clock.sleeps == [0.05, 0.1, 0.2]


async def test_a_cell_that_is_gone_gives_the_exit_reason_of_nothing() -> None:
    seen: list[CellInfo | None] = []

    async def exit_reason(info: CellInfo | None) -> str:
        seen.append(info)
        return "the cell is gone"

    verdict, _ = await gate(FakeCell(STARTING), FakeRuntime(None), exited_reason=exit_reason)
    assert verdict == Verdict(False, "the cell is gone")
    assert seen == [None]


async def test_without_an_exit_reason_the_cell_exited() -> None:
    verdict, _ = await gate(FakeCell(STARTING), FakeRuntime(cell(running=False, exit_code=1)))
    assert verdict == Verdict(False, "the cell exited")


async def test_a_cell_never_ready_fails_when_the_deadline_passes() -> None:
    policy = HealthPolicy(first_delay=0.05, max_delay=0.5, deadline=1.0, ping_timeout=2.0)
    fake = FakeCell(STARTING)
    verdict, clock = await gate(fake, policy=policy)
    assert verdict == Verdict(False, "no ready answer from the cell in 1 s")
    assert clock.sleeps == [0.05, 0.1, 0.2, 0.4, 0.5]
    # each ping gets what is left of the deadline (at most ping_timeout); the last sleep
    # ends past the deadline (at 1.25 s), so the last ping gets the 50 ms floor
    assert fake.timeouts == pytest.approx([1.0, 0.95, 0.85, 0.65, 0.25, 0.05])


async def test_a_cell_pinged_often_while_it_boots_is_looked_at_less_often() -> None:
    # a woken replica: pinged every 20 ms, the engine asked whether it runs every 0.25 s
    policy = HealthPolicy(first_delay=0.01, max_delay=0.02, deadline=180.0, ping_timeout=2.0)
    fake, runtime = FakeCell(*[STARTING] * 50, READY), FakeRuntime()
    verdict, clock = await gate(fake, runtime, policy)
    assert verdict == Verdict(True) and len(fake.pings) == 51
    assert sum(clock.sleeps) == pytest.approx(0.99)
    assert runtime.observed == 4  # at 0, 0.25, 0.51 and 0.77 s


async def test_a_ping_that_times_out_counts_as_no_answer() -> None:
    timed_out = httpx.ReadTimeout("no answer in time")
    fake, runtime = FakeCell(timed_out, httpx.ConnectError("refused"), READY), FakeRuntime()
    verdict, clock = await gate(fake, runtime)
    assert verdict == Verdict(True)
    assert clock.sleeps == [0.05, 0.1]
    assert runtime.observed == 1  # the second failed ping came 0.05 s after the first look


async def test_a_hanging_ping_is_cut_off_by_the_ping_timeout() -> None:
    never = asyncio.Event()

    async def hang(request: httpx.Request) -> httpx.Response:
        await never.wait()
        raise AssertionError("unreachable")

    policy = HealthPolicy(first_delay=0.05, max_delay=0.5, deadline=1.0, ping_timeout=0.05)
    clock, runtime = FakeTime(), FakeRuntime(cell(running=False))
    async with httpx.AsyncClient(transport=httpx.MockTransport(hang)) as client:
        verdict = await asyncio.wait_for(
            await_ready(client, URL, runtime.observe, policy, clock=clock.clock, sleep=clock.sleep),
            1.0,  # a ping that is not cut off fails the test instead of hanging it
        )
    assert verdict == Verdict(False, "the cell exited")  # after one ping of 50 ms
    assert runtime.observed == 1


# --- ping_ready ---------------------------------------------------------------------------


async def ping(answer: Answer | Callable[[httpx.Request], Any], timeout: float = 2.0) -> Any:
    """One ping_ready; a ping that outlives a second fails the test instead of hanging it."""
    handler = answer if callable(answer) else FakeCell(answer).handle
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        return await asyncio.wait_for(ping_ready(client, URL, timeout), 1.0)


@pytest.mark.parametrize(
    ("answer", "verdict"),
    [
        (READY, Verdict(True)),
        (httpx.Response(200, text="not even JSON"), Verdict(True)),  # the status is the answer
        (STARTING, None),
        (httpx.Response(503, text="<html>bad gateway</html>"), None),
        (httpx.Response(503, content=b"\xff\xfe not UTF-8"), None),
        (httpx.Response(404, json={"error": "no such route"}), None),
        (httpx.ConnectError("connection refused"), None),
        (FAILED, Verdict(False, f"the scoring script failed to load: {FAILED['reason']}")),
    ],
    ids=["ready", "ready-any-body", "starting", "html", "binary", "404", "refused", "failed"],
)
async def test_ping_ready_verdicts(answer: Answer, verdict: Verdict | None) -> None:
    assert await ping(answer) == verdict


async def test_ping_ready_has_a_total_deadline_not_one_per_read() -> None:
    # a 200 whose body never completes: an answer not whole in time is no answer
    never = asyncio.Event()

    async def drip() -> AsyncIterator[bytes]:
        yield b'{"state": "REA'
        await never.wait()

    assert await ping(lambda _req: httpx.Response(200, content=drip()), timeout=0.02) is None


async def test_ping_ready_reads_at_most_the_body_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health_gate, "MAX_HEALTH_BODY", 100)
    sent: list[int] = []

    async def endless(first: bytes) -> AsyncIterator[bytes]:
        yield first
        while True:  # never ends: only the cap stops the reading
            sent.append(64)
            yield b" " * 64
            await asyncio.sleep(0)  # so a broken cap fails the test instead of hanging it

    failed = b'{"state": "SETUP_FAILED", "reason": "boom"}'
    at_cap = failed + b" " * (100 - len(failed))
    assert await ping(httpx.Response(503, content=at_cap)) == Verdict(
        False, "the scoring script failed to load: boom"
    )
    # past the cap a SETUP_FAILED answer is not read as one; a 200 is still ready
    assert await ping(lambda _req: httpx.Response(503, content=endless(failed))) is None
    assert len(sent) == 1  # read up to the cap, then dropped
    assert await ping(lambda _req: httpx.Response(200, content=endless(b"{}"))) == Verdict(True)


async def test_the_body_cap_is_one_mebibyte() -> None:
    assert health_gate.MAX_HEALTH_BODY == 1024**2


# --- ping_all (the watch's round, through aiohttp: a real server on loopback) ----------
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def cells_at(handler: Handler) -> AsyncIterator[str]:
    """An aiohttp server on loopback answering every path with ``handler``; its URL."""
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_ping_all_pings_at_most_concurrency_cells_at_once(concurrency: int) -> None:
    active, peak = 0, 0

    async def slow_cell(request: web.Request) -> web.Response:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.02)  # let every other ping that may start, start
        active -= 1
        ready = request.path.startswith("/ready")
        return web.json_response(READY if ready else STARTING, status=200 if ready else 503)

    async with cells_at(slow_cell) as base, aiohttp.ClientSession() as session:
        urls = [f"{base}/{'ready' if i % 3 else 'slow'}-{i}" for i in range(10)]
        verdicts = await ping_all(session, urls, 2.0, concurrency)
    assert peak == concurrency
    assert verdicts == [Verdict(True) if i % 3 else None for i in range(10)]  # in order


async def test_a_deeply_nested_answer_is_no_answer_and_spoils_no_round() -> None:
    # json.loads raises RecursionError (not ValueError) past ~1,000 levels; a cell runs
    # its user's code and may answer anything
    nested = httpx.Response(503, content=b"[" * 100_000)
    assert await ping(nested) is None

    async def cells(request: web.Request) -> web.Response:
        if request.path.startswith("/hostile"):
            return web.Response(status=503, body=b"[" * 100_000)
        return web.json_response(READY)

    async with cells_at(cells) as base, aiohttp.ClientSession() as session:
        urls = [f"{base}/a", f"{base}/hostile", f"{base}/b"]
        verdicts = await ping_all(session, urls, 2.0, 2)
    assert verdicts == [Verdict(True), None, Verdict(True)]
    verdict, _ = await gate(FakeCell(nested, READY))
    assert verdict == Verdict(True)


async def test_the_watch_ping_reads_no_more_than_the_cap_and_follows_no_redirect() -> None:
    async def cells(request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/moved"):
            raise web.HTTPFound(location="/a")
        if request.path.startswith("/huge"):
            return web.Response(status=503, body=b" " * (health_gate.MAX_HEALTH_BODY + 1))
        return web.json_response(FAILED, status=503)

    async with cells_at(cells) as base, aiohttp.ClientSession() as session:
        urls = [f"{base}/moved", f"{base}/huge", f"{base}/failed"]
        verdicts = await ping_all(session, urls, 2.0, 3)
    assert verdicts[:2] == [None, None]
    assert verdicts[2] is not None and not verdicts[2].ready
    assert "ZeroDivisionError" in verdicts[2].reason
