"""The cell's health state machine (STARTING -> READY | SETUP_FAILED) and its setup logs."""

from __future__ import annotations

import contextlib
import sys
import traceback
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TextIO

SETUP_LOG_LIMIT = 64 * 1024
"""Characters of setup output kept; the start is dropped first, as the end explains failures."""


class State(StrEnum):
    STARTING = "STARTING"
    READY = "READY"
    SETUP_FAILED = "SETUP_FAILED"


def _now() -> str:
    return datetime.now(UTC).isoformat()


class SetupLog:
    """A bounded buffer of what the scoring script printed while loading."""

    def __init__(self, limit: int = SETUP_LOG_LIMIT) -> None:
        self._parts: list[str] = []
        self._size = 0
        self._limit = limit

    def write(self, text: str) -> None:
        self._parts.append(text)
        self._size += len(text)
        if self._size > 2 * self._limit:  # compact now and then, not on every write
            self._parts = [self.text()]
            self._size = len(self._parts[0])

    def text(self) -> str:
        return "".join(self._parts)[-self._limit :]


class _Tee:
    """Stands in for sys.stdout/stderr: writes through, and copies to the log while on."""

    def __init__(self, target: TextIO, log: SetupLog) -> None:
        self._target = target
        self._log = log
        self.capturing = True

    def write(self, text: str) -> int:
        if self.capturing:
            self._log.write(text)
        return self._target.write(text)

    def __getattr__(self, name: str) -> Any:  # flush, fileno, encoding, isatty, ...
        return getattr(self._target, name)


class Health:
    """What /health/ready reports; changed only by the cell's loading task."""

    def __init__(self, now: Callable[[], str] = _now) -> None:
        self._now = now
        self.state = State.STARTING
        self.reason: str | None = "loading the model"
        self.started_at = now()
        self.completed_at: str | None = None
        self.logs = SetupLog()

    @property
    def ready(self) -> bool:
        return self.state is State.READY

    def succeeded(self) -> None:
        self.state, self.reason, self.completed_at = State.READY, None, self._now()

    def failed(self, exc: BaseException) -> None:
        """Record a load failure: one summary line first, then the traceback."""
        summary = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        trace = "".join(traceback.format_exception(exc))
        self.state, self.completed_at = State.SETUP_FAILED, self._now()
        self.reason = f"{summary}\n\n{trace}"

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"state": str(self.state)}
        if self.reason is not None:
            body["reason"] = self.reason
        body["setup"] = {
            "started_at": self.started_at,
            "completed_at": self.completed_at,
            "logs": self.logs.text(),
        }
        return body

    @contextlib.contextmanager
    def capture_output(self) -> Iterator[None]:
        """Copy stdout/stderr into the setup log while loading, as cog keeps setup logs.

        Process-wide, because the script prints from a worker thread; handlers the
        script made during load keep writing through the tee after it is switched off.
        """
        out, err = _Tee(sys.stdout, self.logs), _Tee(sys.stderr, self.logs)
        sys.stdout, sys.stderr = out, err
        try:
            yield
        finally:
            out.capturing = err.capturing = False
            if sys.stdout is out:
                sys.stdout = out._target
            if sys.stderr is err:
                sys.stderr = err._target
