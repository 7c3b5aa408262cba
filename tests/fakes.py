"""A fake cell runtime for fast lifecycle tests. Its "cells" answer /health/ready over
real loopback HTTP from one small shared app, behaving as metadata ``parameters.fake``
says:

- ``"fail"``: SETUP_FAILED with a traceback-like reason
- ``"exit"``: the cell exits at once with code 3
- ``"slow"``: STARTING for ever
- absent: ready
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from deployserver.runtime.base import CellInfo, CellSpec


def behaviour_of(spec: CellSpec) -> str | None:
    value = (spec.metadata.get("parameters") or {}).get("fake")
    return None if value is None else str(value)


@dataclass
class FakeCell:
    spec: CellSpec
    id: str
    running: bool = True
    exit_code: int | None = None
    logs: list[str] = field(default_factory=list)


class FakeRuntime:
    name = "fake"

    def __init__(self, base_url: str = "") -> None:
        self.base_url = base_url
        self.cells: dict[str, FakeCell] = {}
        self.started: list[str] = []
        self.stopped: list[str] = []
        self.built: list[str] = []
        self.built_envs: set[tuple[str, ...]] = set()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    # what the fake health app asks
    def health(self, cell_id: str) -> JSONResponse:
        cell = self.cells.get(cell_id)
        if cell is None or not cell.running:
            return JSONResponse({"error": "gone"}, status_code=502)
        behaviour = behaviour_of(cell.spec)
        if behaviour == "fail":
            reason = "Traceback (most recent call last):\nValueError: weights are corrupt"
            return JSONResponse({"state": "SETUP_FAILED", "reason": reason}, status_code=503)
        if behaviour == "slow":
            return JSONResponse({"state": "STARTING", "reason": None}, status_code=503)
        return JSONResponse({"state": "READY"})

    def app(self) -> Starlette:
        async def ready(request: Request) -> JSONResponse:
            return self.health(request.path_params["cell_id"])

        return Starlette(routes=[Route("/cells/{cell_id}/health/ready", ready)])

    # CellRuntime
    def describe(self) -> str:
        return "fake runtime"

    @staticmethod
    def _env(spec: CellSpec) -> tuple[str, ...]:
        return spec.requirements + tuple(w.name for w in spec.wheels)

    def needs_build(self, spec: CellSpec) -> bool:
        return bool(self._env(spec)) and self._env(spec) not in self.built_envs

    def prepare(self, spec: CellSpec) -> None:
        if any("does-not-exist" in r for r in spec.requirements):
            raise RuntimeError(f"no matching distribution for {spec.requirements[0]}")
        self.built.append(spec.deploy_id)
        self.built_envs.add(self._env(spec))

    def start(self, spec: CellSpec) -> CellInfo:
        with self._lock:
            cell_id = f"fake{next(self._ids)}"
            cell = FakeCell(spec, cell_id)
            if behaviour_of(spec) == "exit":
                cell.running, cell.exit_code = False, 3
                cell.logs.append("ImportError: no module named torch")
            self.cells[cell_id] = cell
            self.started.append(spec.deploy_id)
        return self._info(cell)

    def _info(self, cell: FakeCell) -> CellInfo:
        return CellInfo(
            self.name,
            cell.id,
            cell.spec.deploy_id,
            f"{self.base_url}/cells/{cell.id}",
            cell.running,
            cell.exit_code,
        )

    def inspect(self, cell_id: str) -> CellInfo | None:
        cell = self.cells.get(cell_id)
        return None if cell is None else self._info(cell)

    def list_cells(self) -> list[CellInfo]:
        return [self._info(c) for c in list(self.cells.values())]

    def stop(self, cell_id: str, timeout: float = 10.0) -> None:
        with self._lock:
            if self.cells.pop(cell_id, None) is not None:
                self.stopped.append(cell_id)

    def logs(self, cell_id: str, tail: int = 100) -> str:
        cell = self.cells.get(cell_id)
        if cell is None:
            raise LookupError(cell_id)
        return "".join(line + "\n" for line in cell.logs[-tail:])

    # test controls
    def kill(self, deploy_id: str, code: int = 137) -> None:
        for cell in self.cells.values():
            if cell.spec.deploy_id == deploy_id and cell.running:
                cell.running, cell.exit_code = False, code
                cell.logs.append("Killed")
