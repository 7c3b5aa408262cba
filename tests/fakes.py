"""A fake cell runtime for fast lifecycle tests. Its "cells" answer /health/ready over
real loopback HTTP from one small shared app, behaving as metadata ``parameters.fake``
says:

- ``"fail"``: SETUP_FAILED with a traceback-like reason
- ``"exit"``: the cell exits at once with code 3
- ``"slow"``: STARTING for ever
- ``"drip"``: its /health/ready answer comes a byte at a time (see ``FakeRuntime.drip``)
- ``"flood"``: its /health/ready answer is READY followed by ``flood_bytes`` of padding
- absent: ready

``POST /predict`` on any fake cell reads the whole body and answers its size and the
cell's id (after ``?delay=`` seconds, when given).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
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
    paused: bool = False
    exit_code: int | None = None
    logs: list[str] = field(default_factory=list)


@dataclass
class DripCounts:
    """What the dripping health answers saw (updated on the fake cells' server thread)."""

    started: int = 0
    open: int = 0
    max_open: int = 0
    sent: list[int] = field(default_factory=list)
    """Bytes each finished drip had sent when it ended (its client gone, or all sent)."""


class FakeRuntime:
    name = "fake"

    def __init__(self, base_url: str = "") -> None:
        self.base_url = base_url
        self.cells: dict[str, FakeCell] = {}
        self.started: list[str] = []
        self.stopped: list[str] = []
        self.built: list[str] = []
        self.built_envs: set[tuple[str, ...]] = set()
        self.resumed: list[str] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.dripping: set[str] = set()
        """Deploy ids whose cells drip their health answers (and "drip" behaviours)."""
        self.drip_every = 1.0
        self.drip_bytes = 60
        self.drips = DripCounts()
        self.flood_bytes = 128 * 1024**2
        self.flooded: list[int] = []
        """Bytes each flooding answer had sent when it ended (its client gone, or all sent)."""
        self.grpc_address: str | None = None
        """Where every fake cell says its gRPC service is (a test's own server); None: the
        fake cells serve no gRPC."""

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

    def _drips(self, cell_id: str) -> bool:
        cell = self.cells.get(cell_id)
        if cell is None or not cell.running:
            return False
        return cell.spec.deploy_id in self.dripping or behaviour_of(cell.spec) == "drip"

    async def _drip(self) -> AsyncIterator[bytes]:
        """A READY answer padded to ``drip_bytes``, one byte each ``drip_every`` s. It
        never stalls longer than that, so only a total deadline cuts it short."""
        counts = self.drips
        body = b'{"state": "READY"}'.ljust(self.drip_bytes)
        counts.started += 1
        counts.open += 1
        counts.max_open = max(counts.max_open, counts.open)
        sent = 0
        try:
            for i in range(len(body)):
                yield body[i : i + 1]
                sent += 1
                await asyncio.sleep(self.drip_every)
        finally:  # also when the client goes away: Starlette cancels the stream
            counts.open -= 1
            counts.sent.append(sent)

    async def _flood(self) -> AsyncIterator[bytes]:
        """A READY answer followed by ``flood_bytes`` of blanks, as fast as it is read."""
        sent = 0
        block = b" " * 1024**2
        try:
            yield b'{"state": "READY"}'
            while sent < self.flood_bytes:
                yield block
                sent += len(block)
                # uvicorn drops writes to a closed connection without a pause: give the
                # loop a turn, so Starlette sees the client gone and ends this
                await asyncio.sleep(0)
        finally:
            self.flooded.append(sent)

    def app(self) -> Starlette:
        async def ready(request: Request) -> Response:
            if self._drips(request.path_params["cell_id"]):
                return StreamingResponse(self._drip(), media_type="application/json")
            cell = self.cells.get(request.path_params["cell_id"])
            if cell is not None and cell.running and behaviour_of(cell.spec) == "flood":
                return StreamingResponse(self._flood(), media_type="application/json")
            return self.health(request.path_params["cell_id"])

        async def predict(request: Request) -> JSONResponse:
            """Reads the whole body, as a cell would, and answers its size and which cell
            answered; a paused or gone cell answers 502 (it cannot answer at all)."""
            cell = self.cells.get(request.path_params["cell_id"])
            if cell is None or not cell.running or cell.paused:
                return JSONResponse({"error": "not running"}, status_code=502)
            size = 0
            async for chunk in request.stream():
                size += len(chunk)
            delay = float(request.query_params.get("delay", 0))
            if delay:
                await asyncio.sleep(delay)
            return JSONResponse({"predictions": {"size": size, "cell": cell.id}})

        return Starlette(
            routes=[
                Route("/cells/{cell_id}/health/ready", ready),
                Route("/cells/{cell_id}/predict", predict, methods=["POST"]),
            ]
        )

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
            self.grpc_address,
            cell.paused,
        )

    def inspect(self, cell_id: str) -> CellInfo | None:
        cell = self.cells.get(cell_id)
        return None if cell is None else self._info(cell)

    def list_cells(self) -> list[CellInfo]:
        return [self._info(c) for c in list(self.cells.values())]

    def node(self) -> str:
        return "fakehost"

    def pause(self, cell_id: str) -> None:
        self.cells[cell_id].paused = True

    def resume(self, cell_id: str) -> None:
        cell = self.cells.get(cell_id)
        if cell is None or not cell.running:
            raise LookupError(cell_id)
        cell.paused = False
        self.resumed.append(cell_id)

    def stop(self, cell_id: str, timeout: float = 10.0) -> None:
        with self._lock:
            if self.cells.pop(cell_id, None) is not None:
                self.stopped.append(cell_id)

    def successor(self, cell_id: str) -> CellInfo | None:
        """The control plane restarts this runtime's cells: never one of its own."""
        return None

    def close(self) -> None:
        """Nothing is made ahead of a cell here."""

    def logs(self, cell_id: str, tail: int = 100) -> str:
        cell = self.cells.get(cell_id)
        if cell is None:
            raise LookupError(cell_id)
        return "".join(line + "\n" for line in cell.logs[-tail:])

    # test controls
    def drip(self, deploy_id: str, every: float = 1.0) -> None:
        """From now on, the cells of ``deploy_id`` drip their health answers."""
        self.drip_every = every
        self.dripping.add(deploy_id)

    def kill_cell(self, cell_id: str, code: int = 137) -> None:
        cell = self.cells[cell_id]
        cell.running, cell.exit_code = False, code
        cell.logs.append("Killed")

    def kill(self, deploy_id: str, code: int = 137) -> None:
        for cell in self.cells.values():
            if cell.spec.deploy_id == deploy_id and cell.running:
                cell.running, cell.exit_code = False, code
                cell.logs.append("Killed")
