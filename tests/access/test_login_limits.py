"""The password login's limits as pure logic, on a clock moved by hand: token buckets,
the exponential lockout and its decay, bounded tables, the hashing slots."""

from __future__ import annotations

import anyio
import pytest

from deployserver.access.login_limits import (
    MAX_TRACKED,
    BoundedTable,
    HashSlots,
    Lockout,
    LoginGuard,
    RateLimiter,
    client_key,
    name_key,
)
from deployserver.config import Settings
from deployserver.errors import LoginBusy, TooManyLoginAttempts


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_allows_a_burst_then_refills_evenly() -> None:
    clock = Clock()
    limiter = RateLimiter(6, clock=clock)  # 6 a minute: one back every 10 s
    assert [limiter.take("a") for _ in range(6)] == [0.0] * 6
    assert limiter.take("a") == pytest.approx(10.0)
    assert limiter.take("b") == 0.0  # another key has its own bucket
    clock.now += 4
    assert limiter.take("a") == pytest.approx(6.0)  # a refused try costs nothing
    clock.now += 6
    assert limiter.take("a") == 0.0
    assert limiter.take("a") == pytest.approx(10.0)
    clock.now += 3600  # refilled, never past the burst
    assert [limiter.take("a") for _ in range(7)][-2:] == [0.0, pytest.approx(10.0)]


def test_lockout_doubles_refuses_while_locked_and_decays() -> None:
    clock = Clock()
    lockout = Lockout(after=3, first=30, longest=100, clock=clock)
    assert [lockout.failed("alice") for _ in range(2)] == [0.0, 0.0]
    assert lockout.retry_after("alice") == 0.0
    assert lockout.failed("alice") == 30.0
    clock.now += 10
    assert lockout.retry_after("alice") == pytest.approx(20.0)
    clock.now += 20
    assert lockout.retry_after("alice") == 0.0  # the lock ran out ...
    assert lockout.failed("alice") == 60.0  # ... but the next failure doubles it
    clock.now += 60
    assert lockout.failed("alice") == 100.0  # capped
    clock.now += 100
    assert lockout.failed("alice") == 100.0
    # forgotten after 2 * longest without a failure: back to the first free tries
    clock.now += 200
    assert lockout.retry_after("alice") == 0.0
    assert lockout.failed("alice") == 0.0
    assert len(lockout.table) == 1


def test_a_success_clears_the_failures() -> None:
    clock = Clock()
    lockout = Lockout(after=2, first=30, longest=100, clock=clock)
    lockout.failed("bob")
    lockout.succeeded("bob")
    assert lockout.failed("bob") == 0.0  # one failure again, not two


def test_tables_stay_bounded_when_keys_rotate() -> None:
    clock = Clock()
    limiter = RateLimiter(5, max_keys=100, clock=clock)
    for i in range(10_000):
        limiter.take(f"name-{i}")
    assert len(limiter.table) == 100
    # the newest keys are the ones kept: a rotating attacker evicts only its own
    assert limiter.table.get("name-9999") is not None
    assert limiter.table.get("name-0") is None


def test_a_full_table_drops_what_no_longer_matters_before_what_is_live() -> None:
    table: BoundedTable[int] = BoundedTable(3, lambda value, _now: value == 0)
    for key, value in (("live-old", 1), ("stale", 0), ("live", 1)):
        table.put(key, value, 0.0)
    table.put("new", 1, 0.0)  # full: the stale entry goes, not the oldest live one
    assert [table.get(k) for k in ("live-old", "stale", "live", "new")] == [1, None, 1, 1]
    table.put("newer", 1, 0.5)  # nothing stale left: the least recently used goes
    assert table.get("live-old") is None and len(table) == 3


def test_the_guard_answers_the_same_for_any_name_and_stays_small() -> None:
    clock = Clock()
    settings = Settings(login_client_per_minute=1000, login_name_per_minute=1000)
    guard = LoginGuard.from_settings(settings, clock)
    for _ in range(settings.login_lockout_after):
        guard.admit_name("alice")
        guard.failed("alice")
        guard.admit_name("no-such-user")
        guard.failed("no-such-user")
    answers = []
    for name in ("alice", "no-such-user"):
        with pytest.raises(TooManyLoginAttempts) as caught:
            guard.admit_name(name)
        answers.append((caught.value.message, caught.value.retry_after))
    assert answers[0] == answers[1]
    assert answers[0][1] == settings.login_lockout_seconds
    for i in range(3 * MAX_TRACKED):  # an attacker rotating names
        guard.admit_name(f"rotating-{i}")
        guard.failed(f"rotating-{i}")
    assert len(guard.names.table) <= MAX_TRACKED
    assert len(guard.lockout.table) <= MAX_TRACKED
    assert len(name_key("x" * 1_000_000)) == 16


def test_the_client_limit_names_the_address_and_when_to_come_back() -> None:
    clock = Clock()
    guard = LoginGuard.from_settings(Settings(login_client_per_minute=2), clock)
    guard.admit_client("10.0.0.1")
    guard.admit_client("10.0.0.1")
    with pytest.raises(TooManyLoginAttempts, match=r"from 10\.0\.0\.1; try again in 30 s"):
        guard.admit_client("10.0.0.1")
    guard.admit_client("10.0.0.2")


def test_an_ipv6_client_counts_by_its_64_so_it_cannot_rotate_addresses() -> None:
    clock = Clock()
    guard = LoginGuard.from_settings(Settings(login_client_per_minute=2), clock)
    guard.admit_client("2001:db8:1:2::1")
    guard.admit_client("2001:db8:1:2:ffff::9")
    with pytest.raises(TooManyLoginAttempts, match=r"from 2001:db8:1:2::/64;"):
        guard.admit_client("2001:db8:1:2:abcd::7")
    guard.admit_client("2001:db8:1:3::1")  # the next /64 is another subscriber
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert client_key("192.0.2.7") == "192.0.2.7"
    assert client_key("unknown") == "unknown"


async def test_hash_slots_bound_work_and_waiting() -> None:
    slots = HashSlots(1, wait=0.05, max_waiting=1)
    release = anyio.Event()
    entered = anyio.Event()

    async def holder() -> None:
        async with slots.slot():
            entered.set()
            await release.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(holder)
        await entered.wait()
        with pytest.raises(LoginBusy) as busy:  # waited 0.05 s, no slot came
            async with slots.slot():
                raise AssertionError("two hashes at once")
        assert busy.value.retry_after > 0 and slots.waiting == 0
        slots.waiting = slots.max_waiting  # as if another login were queued already
        with pytest.raises(LoginBusy):  # refused without waiting at all
            async with slots.slot():
                raise AssertionError("queued past the bound")
        slots.waiting = 0
        release.set()
    async with slots.slot():  # released: the next one gets it at once
        assert slots.busy == 1
    assert slots.busy == 0
