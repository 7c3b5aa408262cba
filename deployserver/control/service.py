"""Background services: a loop that runs one pass each interval, or at once when woken.

The reconciler and the prediction worker are services; tests call ``run_once``
directly instead of running the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

log = logging.getLogger("deployserver.control.service")


class Service:
    """Subclasses set ``name`` and implement ``run_once`` (and ``interval``)."""

    name = "service"

    def __init__(self) -> None:
        self._wake = asyncio.Event()

    idle_backoff = 1.0
    """After passes that found nothing to do, the wait doubles up to this many times the
    interval (1: never); a wake or a pass with work brings it back to the interval."""

    @property
    def interval(self) -> float:
        raise NotImplementedError

    def idle(self) -> bool:
        """Whether the last pass left nothing under way (its wait may then grow)."""
        return False

    def longest_wait(self) -> float:
        return self.interval * self.idle_backoff

    def wake(self) -> None:
        """Run the next pass now rather than at the next interval (after a request)."""
        self._wake.set()

    async def start(self) -> None:
        """Called once before the first pass."""

    async def run_once(self) -> None:
        raise NotImplementedError

    async def run_forever(self) -> None:
        await self.start()
        wait = self.interval
        while True:
            try:
                await self.run_once()
            except Exception:
                log.exception("%s pass failed; trying again", self.name)
            idle = self.idle()
            wait = max(min(wait * 2, self.longest_wait()), self.interval) if idle else self.interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
                wait = self.interval  # woken: someone has work for it
            self._wake.clear()
