"""Quotas of asynchronous predictions: how many one model and one caller may have waiting,
and how many bytes of requests and results they may keep. A caller is a token's name;
anonymous callers of public models share one quota."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Literal

from sqlalchemy.orm import Session

from deployserver.config import Settings
from deployserver.errors import PredictionStorageExceeded, TooManyPredictions
from deployserver.store import predictions

RETRY_AFTER = 5
"""Seconds a caller over the pending quota is told to wait: predictions finish in their
own time, so this is a polite pace, not a promise."""
Kind = Literal["model", "caller"]


def _who(kind: Kind, key: str | None) -> str:
    if kind == "model":
        return f"model {key!r}"
    return "anonymous callers" if key is None else f"caller {key!r}"


class StoredBytes:
    """Bytes of requests and results kept per model and per caller. Summing them reads
    every row of the model or caller (from an index), so a sum is reused for ``ttl``
    seconds and counted up in between by what this server adds; a deletion forgets it."""

    def __init__(self, ttl: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._known: dict[tuple[Kind, str | None], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def get(self, session: Session, kind: Kind, key: str | None) -> int:
        now = self.clock()
        with self._lock:
            hit = self._known.get((kind, key))
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        if kind == "model":
            total = predictions.stored_bytes(session, model=key)
        else:
            total = predictions.stored_bytes(session, actor=key, by_actor=True)
        with self._lock:
            self._known[(kind, key)] = (now, total)
        return total

    def add(self, model: str, actor: str | None, size: int) -> None:
        """``size`` more bytes kept for ``model`` and ``actor``."""
        keys: tuple[tuple[Kind, str | None], ...] = (("model", model), ("caller", actor))
        with self._lock:
            for key in keys:
                if key in self._known:
                    at, total = self._known[key]
                    self._known[key] = (at, total + size)

    def forget(self) -> None:
        """After deletions: the next look-ups sum again."""
        with self._lock:
            self._known.clear()


def check_submission(
    session: Session,
    settings: Settings,
    stored: StoredBytes,
    *,
    model: str,
    actor: str | None,
    incoming: int,
) -> int:
    """Refuse a new prediction of ``incoming`` bytes that would pass a quota: 429 for the
    pending counts, 507 for stored bytes. Answers how many of ``model``'s are queued."""
    limits: tuple[tuple[Kind, str | None, int, int], ...] = (
        (
            "model",
            model,
            settings.async_max_pending_per_model,
            settings.async_max_stored_bytes_per_model,
        ),
        (
            "caller",
            actor,
            settings.async_max_pending_per_caller,
            settings.async_max_stored_bytes_per_caller,
        ),
    )
    *counts, queued = predictions.pending_counts(session, model=model, actor=actor)
    for (kind, key, max_pending, max_stored), waiting in zip(limits, counts, strict=True):
        if waiting >= max_pending:
            raise TooManyPredictions(
                f"{_who(kind, key)} already has {waiting} asynchronous predictions waiting, "
                "the most allowed; try again once some have finished",
                retry_after=RETRY_AFTER,
            )
        kept = stored.get(session, kind, key)
        if kept + incoming > max_stored:
            raise PredictionStorageExceeded(
                f"{_who(kind, key)} keeps {kept} bytes of asynchronous predictions and may "
                f"keep {max_stored}; delete some (DELETE /api/v1/predictions/{{request_id}})"
            )
    return queued


def room_for_result(
    session: Session, settings: Settings, *, model: str, actor: str | None
) -> tuple[int, str]:
    """How many bytes a result of ``model`` for ``actor`` may take before a storage quota
    would be passed, and the reason to give when it does. Summed afresh: it is asked only
    for an answer too large to keep inline."""
    fresh = StoredBytes(ttl=0)
    model_left = settings.async_max_stored_bytes_per_model - fresh.get(session, "model", model)
    caller_left = settings.async_max_stored_bytes_per_caller - fresh.get(session, "caller", actor)
    if model_left <= caller_left:
        return max(model_left, 0), (
            f"the answer would pass the storage quota of model {model!r} "
            f"({settings.async_max_stored_bytes_per_model} bytes)"
        )
    return max(caller_left, 0), (
        f"the answer would pass the storage quota of {_who('caller', actor)} "
        f"({settings.async_max_stored_bytes_per_caller} bytes)"
    )
