"""The health gate: ping a new cell's /health/ready with backoff until it is ready,
it reports SETUP_FAILED, it exits, or the deadline passes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_result, wait_exponential

from deployserver.runtime.base import CellInfo


@dataclass(frozen=True)
class HealthPolicy:
    first_delay: float = 0.05
    """Wait before the second ping; the first one goes at once."""
    max_delay: float = 2.0
    """Longest wait between two pings."""
    deadline: float = 120.0
    """Give up after this many seconds without a ready answer."""
    ping_timeout: float = 2.0


@dataclass(frozen=True)
class Verdict:
    ready: bool
    reason: str = ""


Observe = Callable[[], Awaitable[CellInfo | None]]


async def ping_ready(client: httpx.AsyncClient, url: str, timeout: float) -> Verdict | None:
    """One ping: a Verdict when the cell has decided (ready or setup failed), else None."""
    try:
        resp = await client.get(f"{url}/health/ready", timeout=timeout)
    except httpx.HTTPError:
        return None
    if resp.status_code == 200:
        return Verdict(True)
    try:
        body = resp.json()
    except ValueError:
        return None
    if isinstance(body, dict) and body.get("state") == "SETUP_FAILED":
        return Verdict(False, f"the scoring script failed to load: {body.get('reason') or '?'}")
    return None


async def await_ready(
    client: httpx.AsyncClient,
    url: str,
    observe: Observe,
    policy: HealthPolicy,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    exited_reason: Callable[[CellInfo | None], Awaitable[str]] | None = None,
) -> Verdict:
    """Ping until the cell decides; ``observe`` tells whether it is still running."""
    started = clock()

    def out_of_time(_state: RetryCallState) -> bool:
        return clock() - started >= policy.deadline

    async def attempt() -> Verdict | None:
        verdict = await ping_ready(client, url, policy.ping_timeout)
        if verdict is not None:
            return verdict
        info = await observe()
        if info is None or not info.running:
            reason = await exited_reason(info) if exited_reason else "the cell exited"
            return Verdict(False, reason)
        return None

    retrying = AsyncRetrying(
        stop=out_of_time,
        wait=wait_exponential(
            multiplier=policy.first_delay, min=policy.first_delay, max=policy.max_delay
        ),
        retry=retry_if_result(lambda v: v is None),
        sleep=sleep,
        retry_error_callback=lambda _state: None,
    )
    verdict = await retrying(attempt)
    if verdict is None:
        return Verdict(False, f"no ready answer from the cell in {policy.deadline:g} s")
    return verdict
