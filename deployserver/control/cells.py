"""The reconciler's hands on the runtime: each CellRuntime call made off the event loop
(engines are synchronous), a cell's output kept when it goes, and a deployment's files
removed when it is deleted."""

from __future__ import annotations

import logging

import anyio

from deployserver.config import Settings
from deployserver.control.cellspec import saved_log_path
from deployserver.runtime.base import CellInfo, CellRuntime, CellSpec
from deployserver.store.files import private_dir, write_private
from deployserver.upload import bundle, storage

log = logging.getLogger(__name__)
KEPT_LOG_LINES = 2000
EXIT_LOG_LINES = 15


class Cells:
    """One server's cells, as the reconciler sees them."""

    def __init__(self, runtime: CellRuntime, settings: Settings) -> None:
        self.runtime = runtime
        self.settings = settings
        self._node: str | None = None

    @property
    def kind(self) -> str:
        return self.runtime.name

    async def all(self) -> list[CellInfo]:
        """Every cell this server owns, running or not."""
        return await anyio.to_thread.run_sync(self.runtime.list_cells)

    async def inspect(self, cell_id: str) -> CellInfo | None:
        return await anyio.to_thread.run_sync(self.runtime.inspect, cell_id)

    async def needs_build(self, spec: CellSpec) -> bool:
        return await anyio.to_thread.run_sync(self.runtime.needs_build, spec)

    async def prepare(self, spec: CellSpec) -> None:
        await anyio.to_thread.run_sync(self.runtime.prepare, spec)

    async def start(self, spec: CellSpec) -> CellInfo:
        return await anyio.to_thread.run_sync(self.runtime.start, spec)

    async def successor(self, cell_id: str) -> CellInfo | None:
        return await anyio.to_thread.run_sync(self.runtime.successor, cell_id)

    async def pause(self, cell_id: str) -> None:
        await anyio.to_thread.run_sync(self.runtime.pause, cell_id)

    async def resume(self, cell_id: str) -> None:
        await anyio.to_thread.run_sync(self.runtime.resume, cell_id)

    async def node(self) -> str:
        if self._node is None:
            self._node = await anyio.to_thread.run_sync(self.runtime.node)
        return self._node

    async def remove(self, deploy_id: str, found: list[CellInfo]) -> None:
        """Stop and remove ``found``, keeping each one's last output for ``logs``."""
        for info in found:
            await anyio.to_thread.run_sync(self._keep_logs, deploy_id, info.id)
            await anyio.to_thread.run_sync(self.runtime.stop, info.id)

    async def gone(self, cell_id: str) -> None:
        """A recorded cell the runtime no longer lists (removed behind the server's back):
        the runtime still clears what it left (its network)."""
        await anyio.to_thread.run_sync(self.runtime.stop, cell_id)

    async def remove_orphans(self, deploy_id: str, found: list[CellInfo]) -> None:
        """Cells of a deployment this server has no record of: removed, output and all."""
        for info in found:
            log.warning("removing cell %s of unknown deployment %s", info.id[:12], deploy_id)
            await anyio.to_thread.run_sync(self.runtime.stop, info.id)

    async def exit_reason(self, cell_id: str | None, seen: CellInfo | None) -> str:
        """Why a cell is gone, in words: its exit code and its last lines of output."""
        code = f" with code {seen.exit_code}" if seen and seen.exit_code is not None else ""
        tail = await anyio.to_thread.run_sync(self._tail, cell_id) if cell_id else ""
        return f"the cell exited{code}" + (f"; last output:\n{tail}" if tail else "")

    async def remove_files(self, deploy_id: str) -> None:
        """A deleted deployment's folder and kept output."""
        await anyio.to_thread.run_sync(self._remove_files, deploy_id)

    def _tail(self, cell_id: str) -> str:
        try:
            return self.runtime.logs(cell_id, EXIT_LOG_LINES).strip()
        except Exception:  # a cell that vanished has no output to show
            return ""

    def _keep_logs(self, deploy_id: str, cell_id: str) -> None:
        try:
            text = self.runtime.logs(cell_id, tail=KEPT_LOG_LINES)
        except Exception:  # a cell that vanished has no logs to keep
            return
        path = saved_log_path(self.settings, deploy_id)
        private_dir(path.parent)  # a cell's output may hold what its env held
        write_private(path, text)

    def _remove_files(self, deploy_id: str) -> None:
        s = self.settings
        trash = storage.retire(s.deployments_dir, s.staging_dir, deploy_id)
        if trash is not None:
            storage.discard(trash)
        saved_log_path(s, deploy_id).unlink(missing_ok=True)
        bundle.remove(s.data_dir, deploy_id)  # what cells on other nodes fetched
