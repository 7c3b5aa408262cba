"""decide(): the one action per deployment, as a table."""

from __future__ import annotations

import pytest

from deployserver.reconciler import Wanted, decide
from deployserver.runtime.base import CellInfo


def _w(
    status: str,
    desired: str = "running",
    *,
    restart: bool = False,
    cell: str | None = "c1",
    activation: str | None = None,
) -> Wanted:
    return Wanted("d1", "m", 1, status, desired, restart, cell, 0, "score.py:Model", {}, activation)


def _cell(cid: str = "c1", running: bool = True) -> CellInfo:
    return CellInfo("fake", cid, "d1", "http://x", running)


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
        (_w("ready", cell="other"), [_cell()], "rise"),  # a running cell not yet recorded
        (_w("ready", restart=True), [_cell()], "restart"),
        (_w("ready", "stopped"), [_cell()], "stop"),
        (_w("stopped", "stopped"), [], None),
        (_w("stopped", "stopped"), [_cell(running=False)], "stop"),
        (_w("failed"), [], None),
        (_w("failed"), [_cell(running=False)], "clean"),
        (_w("ready", "deleted"), [_cell()], "delete"),
        (_w("stopped"), [], "rise"),
    ],
)
def test_decide(wanted: Wanted, found: list[CellInfo], action: str | None) -> None:
    assert decide(wanted, found) == action
