"""The CellRuntime interface every backend implements, and what it reports about a cell."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

LABEL_PREFIX = "deployserver."
LABEL_MANAGED = "deployserver.managed"
LABEL_DEPLOY_ID = "deployserver.deploy_id"
LABEL_MODEL = "deployserver.model"
LABEL_VERSION = "deployserver.version"
LABEL_INSTANCE = "deployserver.instance"
LABEL_GRPC_PORT = "deployserver.grpc_port"


class RuntimeUnavailable(RuntimeError):
    """The engine behind a runtime cannot be reached or used."""


class CellStartError(RuntimeError):
    """A cell could not be created or started; the message says why."""


@dataclass(frozen=True)
class CellSpec:
    """Everything a runtime needs to run one deployment's cell."""

    deploy_id: str
    model: str
    version: int
    model_dir: Path
    entrypoint: str
    """The scoring entrypoint found at upload, e.g. ``score.py:Model``."""
    metadata: dict[str, Any]
    """The metadata as stored, for the cell (its contracts read parameters, specs, ...)."""
    explicit_entrypoint: str | None = None
    """The metadata's own ``entrypoint``, when it named one (the cell then uses the
    custom contract for it)."""
    env: dict[str, str] = field(default_factory=dict)
    cpus: float | None = None
    memory: str | None = None
    requirements: tuple[str, ...] = ()
    wheels: tuple[Path, ...] = ()
    egress: bool = False
    """Whether the cell may reach the network beyond the server (asked and allowed)."""


@dataclass(frozen=True)
class CellInfo:
    """What the runtime observes of one cell."""

    runtime: str
    id: str
    deploy_id: str
    url: str | None
    running: bool
    exit_code: int | None = None
    grpc_address: str | None = None
    """``host:port`` of the cell's gRPC service, as the server reaches it; None: the cell
    serves no gRPC (or was started before cells did)."""
    paused: bool = False
    """Frozen by ``pause`` (still ``running``: its memory is kept)."""
    node: str | None = None
    """The cluster node the cell runs on (Swarm's node id); None on a single host."""


class CellRuntime(Protocol):
    """Runs cells. Methods block (engines are synchronous); callers use a thread."""

    name: str

    def describe(self) -> str:
        """One line for the start-up log: what this runtime uses."""

    def node(self) -> str:
        """Where this runtime's cells run, in the record's words (a host name)."""

    def needs_build(self, spec: CellSpec) -> bool:
        """Whether ``prepare`` has slow work to do (an environment to build)."""

    def prepare(self, spec: CellSpec) -> None:
        """Build what the cell needs before it can start (cached); may take minutes."""

    def start(self, spec: CellSpec) -> CellInfo:
        """Create and start the cell; it answers on ``url`` once loaded."""

    def inspect(self, cell_id: str) -> CellInfo | None:
        """The cell's current state, or None when it no longer exists."""

    def list_cells(self) -> list[CellInfo]:
        """Every cell this server's runtime owns (by label), running or not."""

    def pause(self, cell_id: str) -> None:
        """Freeze the cell: no CPU, its memory kept (``docker pause``, SIGSTOP)."""

    def resume(self, cell_id: str) -> None:
        """Thaw a paused cell; LookupError when it no longer exists."""

    def stop(self, cell_id: str, timeout: float = 10.0) -> None:
        """Stop and remove the cell; a missing cell is fine."""

    def logs(self, cell_id: str, tail: int = 100) -> str:
        """The cell's recent output."""

    def successor(self, cell_id: str) -> CellInfo | None:
        """The cell the engine itself started in place of the gone ``cell_id`` (Swarm
        replaces a failed task, or the tasks of a drained node), to be adopted rather
        than replaced; None when the engine restarts nothing (the control plane does)."""

    def close(self) -> None:
        """The server stops: remove what the runtime made ahead for cells to come (its
        cells stay, to be adopted by the next start)."""


def memory_bytes(value: str) -> int:
    """'512m', '2g', '1Gi', '1024' -> bytes (binary units, as Docker reads them)."""
    text = value.strip().lower().removesuffix("b").removesuffix("i")
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(float(text))
