"""Limits on the password login: per-address and per-name rates, lockout, hashing slots."""

from __future__ import annotations

import hashlib
import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Generic, TypeVar

import anyio

from deployserver.config import Settings
from deployserver.errors import LoginBusy, TooManyLoginAttempts

MAX_TRACKED = 10_000
"""Most addresses (or names) one table remembers: an attacker who rotates them evicts the
oldest entries instead of growing the server's memory."""
SWEEP_EVERY = 1.0
"""Seconds between two scans of a full table for entries that no longer matter."""
MAX_WAITING_PER_SLOT = 8
"""Logins that may wait for a hashing slot, per slot; more are answered 503 at once."""
BUSY_RETRY_AFTER = 1.0

Clock = Callable[[], float]
V = TypeVar("V")


def name_key(name: str) -> bytes:
    """A fixed-size key for a user name: any name (even a megabyte long) costs 16 bytes."""
    return hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def client_key(address: str) -> str:
    """Who a client address counts as: an IPv4 address itself, an IPv6 one by its /64
    (one subscriber's share, which it could otherwise rotate through at will)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address  # not an IP (a Unix socket, a test client): as it is
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
    return str(ip)


class BoundedTable(Generic[V]):
    """A dict of at most ``max_keys`` entries, least recently used first. When full, it
    first drops the entries ``stale(value, now)`` says are as good as absent, then the
    least recently used ones."""

    def __init__(self, max_keys: int, stale: Callable[[V, float], bool]) -> None:
        self.max_keys = max_keys
        self._stale = stale
        self._entries: OrderedDict[object, V] = OrderedDict()
        self._swept = float("-inf")

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: object) -> V | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: object, value: V, now: float) -> None:
        if key not in self._entries and len(self._entries) >= self.max_keys:
            self._make_room(now)
        self._entries[key] = value
        self._entries.move_to_end(key)

    def pop(self, key: object) -> None:
        self._entries.pop(key, None)

    def _make_room(self, now: float) -> None:
        # A scan is O(n): at most once per SWEEP_EVERY, so a flood of new keys stays cheap.
        if now - self._swept >= SWEEP_EVERY:
            self._swept = now
            for key in [k for k, v in self._entries.items() if self._stale(v, now)]:
                del self._entries[key]
        while len(self._entries) >= self.max_keys:
            self._entries.popitem(last=False)


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """A token bucket per key: ``per_minute`` tries, refilled evenly over a minute, with a
    burst of as many."""

    def __init__(
        self, per_minute: int, *, max_keys: int = MAX_TRACKED, clock: Clock = time.monotonic
    ) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.clock = clock
        self.table: BoundedTable[_Bucket] = BoundedTable(max_keys, self._full)

    def _full(self, bucket: _Bucket, now: float) -> bool:
        return bucket.tokens + (now - bucket.at) * self.rate >= self.capacity

    def take(self, key: object) -> float:
        """Spend one try of ``key``: 0 when allowed, else the seconds until one is back."""
        now = self.clock()
        bucket = self.table.get(key)
        tokens = self.capacity if bucket is None else bucket.tokens
        if bucket is not None:
            tokens = min(self.capacity, tokens + (now - bucket.at) * self.rate)
        if tokens < 1.0:
            return (1.0 - tokens) / self.rate
        self.table.put(key, _Bucket(tokens - 1.0, now), now)
        return 0.0


@dataclass
class _Failures:
    count: int
    last: float
    locked_until: float


class Lockout:
    """Exponential lockout per key: after ``after`` failures in a row, ``first`` seconds,
    doubling with each further failure up to ``longest``. Failures are forgotten after
    ``2 * longest`` seconds without one, or at a success."""

    def __init__(
        self,
        *,
        after: int,
        first: float,
        longest: float,
        max_keys: int = MAX_TRACKED,
        clock: Clock = time.monotonic,
    ) -> None:
        self.after = after
        self.first = first
        self.longest = longest
        self.forget_after = 2 * longest
        self.clock = clock
        self.table: BoundedTable[_Failures] = BoundedTable(max_keys, self._forgotten)

    def _forgotten(self, entry: _Failures, now: float) -> bool:
        return now >= entry.locked_until and now - entry.last >= self.forget_after

    def retry_after(self, key: object) -> float:
        """Seconds ``key`` stays locked out; 0 when it is not."""
        entry = self.table.get(key)
        return 0.0 if entry is None else max(0.0, entry.locked_until - self.clock())

    def failed(self, key: object) -> float:
        """Count a failure; returns the lockout it starts (0 for none yet)."""
        now = self.clock()
        entry = self.table.get(key)
        if entry is None or self._forgotten(entry, now):
            entry = _Failures(0, now, now)
        entry.count += 1
        entry.last = now
        if entry.count >= self.after:
            doublings = min(entry.count - self.after, 32)  # 2**32 * first is past any cap
            entry.locked_until = now + min(self.first * 2**doublings, self.longest)
        self.table.put(key, entry, now)
        return max(0.0, entry.locked_until - now)

    def succeeded(self, key: object) -> None:
        self.table.pop(key)


class HashSlots:
    """At most ``slots`` password hashes at once (each takes 64 MiB and a core for a
    moment); a login waits ``wait`` seconds at most for one, and only so many wait."""

    def __init__(self, slots: int, wait: float, max_waiting: int | None = None) -> None:
        self.slots = slots
        self.wait = wait
        self.max_waiting = slots * MAX_WAITING_PER_SLOT if max_waiting is None else max_waiting
        self.waiting = 0
        self.busy = 0
        self._semaphore: anyio.Semaphore | None = None

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a slot for the body of the ``async with``; LoginBusy when none comes soon."""
        if self._semaphore is None:  # made on first use, inside the server's event loop
            self._semaphore = anyio.Semaphore(self.slots)
        if self.waiting >= self.max_waiting:
            raise LoginBusy(
                "the login is busy; try again in a moment", retry_after=BUSY_RETRY_AFTER
            )
        acquired = False
        self.waiting += 1
        try:
            with anyio.move_on_after(self.wait):
                await self._semaphore.acquire()
                acquired = True
        finally:
            self.waiting -= 1
        if not acquired:
            raise LoginBusy(
                "the login is busy; try again in a moment", retry_after=BUSY_RETRY_AFTER
            )
        self.busy += 1
        try:
            yield
        finally:
            self.busy -= 1
            self._semaphore.release()


class LoginGuard:
    """Everything a password login passes before its hash is computed, and what its outcome
    teaches. Every answer depends only on the address and the name as typed, never on
    whether such a user exists: the limits tell an attacker nothing about the users."""

    def __init__(
        self,
        *,
        clients: RateLimiter,
        names: RateLimiter,
        lockout: Lockout,
        slots: HashSlots,
    ) -> None:
        self.clients = clients
        self.names = names
        self.lockout = lockout
        self.slots = slots

    @classmethod
    def from_settings(cls, settings: Settings, clock: Clock = time.monotonic) -> LoginGuard:
        return cls(
            clients=RateLimiter(settings.login_client_per_minute, clock=clock),
            names=RateLimiter(settings.login_name_per_minute, clock=clock),
            lockout=Lockout(
                after=settings.login_lockout_after,
                first=settings.login_lockout_seconds,
                longest=settings.login_lockout_max_seconds,
                clock=clock,
            ),
            slots=HashSlots(settings.login_hash_slots, settings.login_hash_wait_seconds),
        )

    def admit_client(self, address: str) -> None:
        """Spend one try of ``address``; TooManyLoginAttempts when it has none left."""
        client = client_key(address)
        wait = self.clients.take(client)
        if wait > 0:
            raise TooManyLoginAttempts(
                f"too many login attempts from {client}; try again in {_seconds(wait)}",
                retry_after=wait,
            )

    def check_lockout(self, name: str) -> None:
        """TooManyLoginAttempts while ``name`` is locked out, whatever the password."""
        locked = self.lockout.retry_after(name_key(name))
        if locked > 0:
            raise TooManyLoginAttempts(
                f"too many failed logins for this user name; try again in {_seconds(locked)}",
                retry_after=locked,
            )

    def admit_name(self, name: str) -> None:
        """Refuse a locked-out name, then spend one of its tries."""
        self.check_lockout(name)
        wait = self.names.take(name_key(name))
        if wait > 0:
            raise TooManyLoginAttempts(
                f"too many logins for this user name; try again in {_seconds(wait)}",
                retry_after=wait,
            )

    def failed(self, name: str) -> None:
        self.lockout.failed(name_key(name))

    def succeeded(self, name: str) -> None:
        self.lockout.succeeded(name_key(name))


def _seconds(value: float) -> str:
    return f"{max(1, math.ceil(value))} s"
