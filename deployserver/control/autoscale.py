"""The autoscaler: how many replicas each ready deployment wants, from the requests in
flight, and when an idle one is paused or scaled to zero.

Each reconciler pass asks :meth:`Autoscaler.target` for every ready deployment. Load is
the time integral of requests in flight (kept by the data path, see ``LoadView``), so the
average over any window is exact however irregular the passes: desired replicas =
in flight / ``target_concurrency`` averaged over the stable window (60 s), or over the
panic window (6 s) while the load is at least twice what the ready replicas are sized
for; in panic it never scales down. It scales down only once it has wanted fewer for the
whole ``scale_down_delay``. With ``min_replicas`` 0, a deployment with nothing in flight
for ``idle_seconds`` is paused, and ``zero_after_paused`` later scaled to zero; any
request in flight wakes it at once. The clock is injected: tests move it by hand.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from deployserver.config import Settings
from deployserver.control.decide import Wanted
from deployserver.domain import Tier

PANIC_FACTOR = 2.0
"""Panic when the panic window's load wants this many times the ready replicas."""


class LoadView(Protocol):
    """What the data path tells the control loop about each deployment's requests."""

    def inflight(self, deploy_id: str) -> int:
        """Requests in flight (or held, or queued) for the deployment now."""

    def area(self, deploy_id: str) -> float:
        """The integral of requests in flight over time (request-seconds) up to now."""

    def last_active(self, deploy_id: str) -> float | None:
        """When the deployment last had a request in flight (None: never seen)."""

    def outstanding(self, cell_id: str) -> int:
        """Requests a cell is answering now."""


class NoLoad:
    """A LoadView with no requests at all (tests of the control loop alone)."""

    def inflight(self, deploy_id: str) -> int:
        return 0

    def area(self, deploy_id: str) -> float:
        return 0.0

    def last_active(self, deploy_id: str) -> float | None:
        return None

    def outstanding(self, cell_id: str) -> int:
        return 0


@dataclass(frozen=True)
class Target:
    """What a deployment should be: replicas, paused or not, its tier in words, and the
    event that says why it changed (empty: no change worth an event)."""

    desired: int
    paused: bool
    tier: Tier
    message: str = ""


def replicas_for(load: float, target: float) -> int:
    """Replicas that carry ``load`` requests in flight at ``target`` each."""
    return math.ceil(round(load / target, 6)) if load > 0 else 0


class Autoscaler:
    def __init__(
        self, settings: Settings, load: LoadView, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self.load = load
        self.clock = clock
        self.started = clock()
        self._areas: dict[str, deque[tuple[float, float]]] = {}
        self._wants: dict[str, deque[tuple[float, int]]] = {}
        self._panic_until: dict[str, float] = {}

    def forget(self, keep: set[str]) -> None:
        """Drop the history of deployments no longer looked at."""
        for table in (self._areas, self._wants, self._panic_until):
            for deploy_id in [d for d in table if d not in keep]:
                del table[deploy_id]

    def average(self, deploy_id: str, window: float) -> float:
        """Requests in flight on average over the last ``window`` seconds (or as much of
        it as has been seen)."""
        samples = self._areas.get(deploy_id)
        if not samples:
            return 0.0
        now, area_now = samples[-1]
        then, area_then = samples[0]
        for t, area in samples:  # the latest sample at or before the window's start
            if t > now - window:
                break
            then, area_then = t, area
        span = now - then
        return (area_now - area_then) / span if span > 0 else float(self.load.inflight(deploy_id))

    def _observe(self, deploy_id: str, now: float) -> None:
        samples = self._areas.setdefault(deploy_id, deque())
        samples.append((now, self.load.area(deploy_id)))
        horizon = now - self.settings.autoscale_stable_window
        while len(samples) > 2 and samples[1][0] <= horizon:
            samples.popleft()

    def target(self, w: Wanted) -> Target:
        """The target of a ready deployment now."""
        s, cfg = w.meta.scaling, self.settings
        now = self.clock()
        self._observe(w.deploy_id, now)
        stable = self.average(w.deploy_id, cfg.autoscale_stable_window)
        panic = self.average(w.deploy_id, cfg.autoscale_panic_window)
        inflight = self.load.inflight(w.deploy_id)
        ready = len(w.serving)
        current = w.desired_replicas
        want_panic = replicas_for(panic, s.target_concurrency)
        if want_panic >= PANIC_FACTOR * max(ready, 1) and inflight > 0:
            self._panic_until[w.deploy_id] = now + cfg.autoscale_stable_window
        panicking = self._panic_until.get(w.deploy_id, 0.0) > now
        want = max(want_panic, current) if panicking else replicas_for(stable, s.target_concurrency)
        last = self.load.last_active(w.deploy_id)
        idle = 0.0 if inflight else now - max(last if last is not None else 0.0, self.started)
        awake = inflight > 0 or idle < s.idle_seconds
        floor = max(s.min_replicas, 1 if awake else 0)
        want = min(max(want, floor), s.max_replicas)
        desired = self._after_delay(w.deploy_id, now, want, current)
        if not awake and s.min_replicas == 0:
            return self._asleep(w, idle)
        shown = panic if panicking else stable
        message = ""
        if desired != current:
            message = (
                f"scaled {current} → {desired}: {shown:.1f} in flight, "
                f"target {s.target_concurrency:g}" + (" (panic)" if panicking else "")
            )
        if (w.paused or current == 0) and inflight:
            woke = "from paused" if w.paused else "from zero"
            message = f"woken {woke}: {inflight} in flight" + (f"; {message}" if message else "")
        tier = Tier.SERVING
        if inflight == 0 and idle >= cfg.autoscale_panic_window:
            tier = Tier.IDLE
        return Target(desired, False, tier, message)

    def _after_delay(self, deploy_id: str, now: float, want: int, current: int) -> int:
        """``want``, except that fewer than ``current`` only once every want of the last
        ``scale_down_delay`` seconds was fewer (the most of them)."""
        wants = self._wants.setdefault(deploy_id, deque())
        wants.append((now, want))
        delay = self.settings.scale_down_delay
        while len(wants) > 1 and wants[1][0] <= now - delay:
            wants.popleft()  # the first one left started at or before the delay's start
        if want >= current or current == 0:
            return want
        seen_since = wants[0][0]
        recent = max(w for _, w in wants)
        if delay > 0 and now - seen_since < delay:
            return current  # not watched long enough yet
        return min(current, recent)

    def _asleep(self, w: Wanted, idle: float) -> Target:
        """An idle deployment with ``min_replicas`` 0: paused, then scaled to zero."""
        s = w.meta.scaling
        if idle >= s.idle_seconds + self.settings.zero_after_paused:
            message = "" if w.desired_replicas == 0 else f"scaled to zero after {idle:.0f} s idle"
            return Target(0, False, Tier.SCALED_TO_ZERO, message)
        if w.desired_replicas == 0:  # already at zero: stays there until a request
            return Target(0, False, Tier.SCALED_TO_ZERO)
        keep = max(1, min(w.desired_replicas, len(w.serving) or 1))
        message = "" if w.paused else f"paused after {idle:.0f} s idle"
        return Target(keep, True, Tier.PAUSED, message)
