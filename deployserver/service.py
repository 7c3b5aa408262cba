"""Background services: a loop that runs one pass each interval, or at once when woken.

The reconciler and the prediction worker are services; tests call ``run_once``
directly instead of running the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

log = logging.getLogger("deployserver.service")


class Service:
    """Subclasses set ``name`` and implement ``run_once`` (and ``interval``)."""

    name = "service"

    def __init__(self) -> None:
        self._wake = asyncio.Event()

    @property
    def interval(self) -> float:
        raise NotImplementedError

    def wake(self) -> None:
        """Run the next pass now rather than at the next interval (after a request)."""
        self._wake.set()

    async def start(self) -> None:
        """Called once before the first pass."""

    async def run_once(self) -> None:
        raise NotImplementedError

    async def run_forever(self) -> None:
        await self.start()
        while True:
            try:
                await self.run_once()
            except Exception:
                log.exception("%s pass failed; trying again", self.name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
