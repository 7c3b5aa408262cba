"""Pick and build the cell runtime the settings ask for, saying which and why."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

from deployserver.config import Settings
from deployserver.runtime.base import CellRuntime, RuntimeUnavailable
from deployserver.runtime.hostpip import PipSandbox
from deployserver.store.files import write_private

log = logging.getLogger("deployserver.runtime")


def instance_id(data_dir: Path) -> str:
    """This server's identity on a shared engine: its cells carry it as a label, so two
    servers (or test runs) on one Docker Engine never adopt or remove each other's cells."""
    path = data_dir / "instance-id"
    if not path.exists():
        write_private(path, secrets.token_hex(8))
    return path.read_text().strip()


def build_runtime(settings: Settings, instance: str) -> CellRuntime:
    if settings.runtime == "process":
        from deployserver.runtime.process import ProcessRuntime

        sandbox = PipSandbox.from_settings(settings)
        runtime: CellRuntime = ProcessRuntime(
            settings.data_dir,
            instance,
            sandbox=sandbox,
            log_max_bytes=settings.cell_log_max_bytes,
            log_files=settings.cell_log_files,
        )
        why = "selected by --runtime/DEPLOYSERVER_RUNTIME"
    elif settings.runtime == "swarm":
        from deployserver.runtime.swarm import SwarmRuntime

        runtime = SwarmRuntime(settings, instance)
        why = "selected by --runtime/DEPLOYSERVER_RUNTIME"
    else:
        from deployserver.runtime.docker import DockerRuntime

        try:
            runtime = DockerRuntime(settings, instance)
        except RuntimeUnavailable as exc:
            raise RuntimeUnavailable(
                f"{exc}. Start the Docker Engine, or run cells as local processes with "
                "--runtime process (DEPLOYSERVER_RUNTIME=process)."
            ) from exc
        why = "the default"
    log.info("cells run on the %s (%s)", runtime.describe(), why)
    return runtime
