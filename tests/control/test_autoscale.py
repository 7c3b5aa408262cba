"""The autoscaler's arithmetic on a hand-moved clock and a made-up load: stable and panic
windows, the scale-down delay, min/max, pause and scale to zero, and its events."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from deployserver.config import Settings
from deployserver.control.autoscale import Autoscaler, Target, replicas_for
from deployserver.control.decide import Replica, Wanted
from deployserver.domain import DeploymentStatus, DesiredState, ReplicaState, Tier
from deployserver.serving.balance import Load
from deployserver.upload.metadata import DeploymentMetadata


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Rig:
    """An autoscaler, its load, and one deployment whose target it follows."""

    def __init__(self, **scaling: Any) -> None:
        self.clock = Clock()
        self.load = Load(self.clock)
        settings = Settings(scale_down_delay=30, zero_after_paused=100)
        self.scaler = Autoscaler(settings, self.load, self.clock)
        meta = DeploymentMetadata.model_validate({"model": "m", "scaling": scaling})
        self.w = Wanted(
            deploy_id="d",
            model="m",
            version=1,
            status=DeploymentStatus.READY,
            desired_state=DesiredState.RUNNING,
            restart_requested=False,
            cell_id=None,
            crashes=0,
            entrypoint="score.py:Model",
            meta=meta,
            desired_replicas=max(1, meta.scaling.min_replicas),
        )
        self._open: list[Any] = []
        self.events: list[str] = []
        self._follow(self.w.desired_replicas)

    def _follow(self, n: int) -> None:
        cells = tuple(Replica(i, f"c{i}", ReplicaState.READY) for i in range(n))
        self.w = replace(self.w, replicas=cells, desired_replicas=n)

    def inflight(self, n: int) -> None:
        """Exactly ``n`` requests in flight from now on."""
        while len(self._open) < n:
            ctx = self.load.request("d")
            ctx.__enter__()
            self._open.append(ctx)
        while len(self._open) > n:
            self._open.pop().__exit__(None, None, None)

    def tick(self, seconds: float, every: float = 1.0) -> Target:
        """Let ``seconds`` pass, the autoscaler asked each ``every``; replicas follow."""
        target = self.scaler.target(self.w)
        for _ in range(round(seconds / every)):
            self.clock.now += every
            target = self.scaler.target(self.w)
            if target.message:
                self.events.append(target.message)
            self._follow(target.desired)
            self.w = replace(self.w, paused=target.paused, tier=target.tier)
        return target


def test_replicas_for_rounds_up() -> None:
    assert [replicas_for(x, 3) for x in (0, 0.1, 3, 3.0000001, 9.2)] == [0, 1, 1, 1, 4]


def test_steady_load_gets_load_over_target_replicas() -> None:
    rig = Rig(min_replicas=1, max_replicas=5, target_concurrency=2)
    rig.inflight(6)
    assert rig.tick(90).desired == 3
    assert rig.events[0].startswith("scaled 1 → 3: ")
    assert "in flight, target 2" in rig.events[0]


def test_a_doubling_panics_at_once_and_max_bounds_it() -> None:
    rig = Rig(min_replicas=1, max_replicas=4, target_concurrency=1)
    rig.inflight(1)
    rig.tick(120)
    assert rig.w.desired_replicas == 1
    rig.inflight(10)
    target = rig.tick(3)  # the stable window alone would want far fewer yet
    assert target.desired == 4 and "(panic)" in rig.events[-1]


def test_fewer_only_after_the_scale_down_delay() -> None:
    rig = Rig(min_replicas=1, max_replicas=4, target_concurrency=1)
    rig.inflight(3)
    rig.tick(120)
    assert rig.w.desired_replicas == 3
    rig.inflight(0)
    rig.tick(25)  # the stable window soon wants fewer ...
    assert rig.w.desired_replicas == 3  # ... but not for the whole delay yet
    rig.tick(120)
    assert rig.w.desired_replicas == 1
    assert rig.events[-1].startswith("scaled 2 → 1: ")
    assert rig.events[-2].startswith("scaled 3 → 2: ")


def test_a_min_of_zero_pauses_then_scales_to_zero_and_a_request_wakes_it() -> None:
    rig = Rig(min_replicas=0, max_replicas=2, idle_seconds=20)
    rig.inflight(1)
    rig.tick(5)
    rig.inflight(0)
    target = rig.tick(19)
    assert not target.paused and target.tier is Tier.IDLE
    target = rig.tick(2)
    assert target.paused and target.tier is Tier.PAUSED and target.desired == 1
    assert rig.events[-1].startswith("paused after 2")
    target = rig.tick(100)
    assert target.desired == 0 and target.tier is Tier.SCALED_TO_ZERO
    assert rig.events[-1].startswith("scaled to zero after 1")
    rig.inflight(1)  # a request held while it wakes
    target = rig.tick(1)
    assert target.desired == 1 and not target.paused and target.tier is Tier.SERVING
    assert rig.events[-1].startswith("woken from zero: 1 in flight; scaled 0 → 1")


@pytest.mark.parametrize("low", [1, 2])
def test_a_min_above_zero_never_pauses(low: int) -> None:
    rig = Rig(min_replicas=low, max_replicas=3, idle_seconds=5)
    target = rig.tick(1000, every=10)
    assert target.desired == low and not target.paused and target.tier is Tier.IDLE
