"""decide(): the one action per deployment, as a table."""

from __future__ import annotations

import pytest

from deployserver.control.decide import Action, Replica, Wanted, decide
from deployserver.domain import Activation, DeploymentStatus, DesiredState, ReplicaState
from deployserver.runtime.base import CellInfo
from deployserver.upload.metadata import DeploymentMetadata

READY, PAUSED, DRAINING = ReplicaState.READY, ReplicaState.PAUSED, ReplicaState.DRAINING


def _w(
    status: str,
    desired: str = "running",
    *,
    restart: bool = False,
    cells: tuple[tuple[str | None, ReplicaState], ...] = (("c1", READY),),
    activation: str | None = None,
    replicas: int = 1,
    paused: bool = False,
) -> Wanted:
    rows = tuple(Replica(slot, cid, state) for slot, (cid, state) in enumerate(cells))
    return Wanted(
        deploy_id="d1",
        model="m",
        version=1,
        status=DeploymentStatus(status),
        desired_state=DesiredState(desired),
        restart_requested=restart,
        cell_id=rows[0].cell_id if rows else None,
        crashes=0,
        entrypoint="score.py:Model",
        meta=DeploymentMetadata(model="m"),
        activation=None if activation is None else Activation(activation),
        replicas=rows,
        desired_replicas=replicas,
        paused=paused,
    )


def _cell(cid: str = "c1", running: bool = True, paused: bool = False) -> CellInfo:
    return CellInfo("fake", cid, "d1", "http://x", running, paused=paused)


TWO = (("c1", READY), ("c2", READY))
LEAVING = (("c1", READY), ("c2", DRAINING))


@pytest.mark.parametrize(
    ("wanted", "found", "action"),
    [
        (_w("received"), [], "rise"),
        (_w("received", "stopped"), [], None),
        (_w("starting"), [_cell()], "rise"),  # left mid-way: adopt and health-gate
        (_w("building"), [], "rise"),
        (_w("ready"), [_cell()], None),
        (_w("ready", activation="always"), [_cell()], "activate"),  # rollback to a ready one
        (_w("ready"), [_cell(running=False)], "recover"),
        (_w("ready"), [], "recover"),
        (_w("ready"), [_cell(), _cell("c9")], "clean"),  # a running cell no slot records
        (_w("ready", restart=True), [_cell()], "restart"),
        (_w("ready", "stopped"), [_cell()], "stop"),
        (_w("stopped", "stopped"), [], None),
        (_w("stopped", "stopped"), [_cell(running=False)], "stop"),
        (_w("failed"), [], None),
        (_w("failed"), [_cell(running=False)], "clean"),
        (_w("ready", "deleted"), [_cell()], "delete"),
        (_w("stopped"), [], "rise"),
        # replicas
        (_w("ready", replicas=2), [_cell()], "scale up"),
        (_w("ready", cells=TWO), [_cell(), _cell("c2")], "scale down"),
        (_w("ready", cells=TWO, replicas=2), [_cell(), _cell("c2", running=False)], "recover"),
        (_w("ready", cells=LEAVING), [_cell(), _cell("c2")], "scale down"),
        (_w("ready", cells=(), replicas=0), [], None),  # scaled to zero
        (_w("ready", cells=(), replicas=1), [], "scale up"),  # woken from zero
        (_w("ready", cells=((None, READY),), replicas=1), [], "scale up"),  # a vacant slot
        # pause and resume
        (_w("ready", paused=True), [_cell()], "pause"),
        (_w("ready", cells=(("c1", PAUSED),), paused=True), [_cell(paused=True)], None),
        (_w("ready", cells=(("c1", PAUSED),)), [_cell(paused=True)], "resume"),
        (_w("ready", cells=(("c1", PAUSED),), replicas=0), [_cell(paused=True)], "scale down"),
    ],
)
def test_decide(wanted: Wanted, found: list[CellInfo], action: str | None) -> None:
    decided = decide(wanted, found)
    assert decided == action
    assert decided is None or isinstance(decided, Action)


def test_a_rise_starts_min_replicas_and_at_least_one() -> None:
    def rising(**scaling: int) -> int:
        meta = DeploymentMetadata.model_validate({"model": "m", "scaling": scaling})
        w = _w("received")
        return Wanted(**{**w.__dict__, "meta": meta}).rise_count

    assert rising() == 1
    assert rising(min_replicas=3, max_replicas=5) == 3
    assert rising(min_replicas=0, max_replicas=4) == 1


def test_a_draining_replica_that_died_is_not_restarted() -> None:
    import asyncio
    from typing import Any

    from deployserver.config import Settings
    from deployserver.control.actions import Actions
    from deployserver.control.health_gate import HealthPolicy

    calls: list[tuple[str, Any]] = []

    class Record:
        def __getattr__(self, name: str) -> Any:
            async def call(*args: Any, **kwargs: Any) -> Any:
                calls.append((name, args))

            return call

    actions = Actions(
        settings=Settings(),
        steps=Record(),  # type: ignore[arg-type]
        cells=Record(),  # type: ignore[arg-type]
        awake=Record(),  # type: ignore[arg-type]
        http=None,  # type: ignore[arg-type]
        policy=HealthPolicy(),
        clock=lambda: 0.0,
        sleep=asyncio.sleep,
    )
    w = _w("ready", cells=LEAVING)
    asyncio.run(actions.recover(w, [_cell(), _cell("c2", running=False)]))
    assert [name for name, _ in calls] == ["remove", "vacate"]
    assert calls[1][1] == ("d1", ["c2"])
