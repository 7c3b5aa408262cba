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
    metadata: dict[str, Any]
    env: dict[str, str] = field(default_factory=dict)
    cpus: float | None = None
    memory: str | None = None
    requirements: tuple[str, ...] = ()
    wheels: tuple[Path, ...] = ()


@dataclass(frozen=True)
class CellInfo:
    """What the runtime observes of one cell."""

    runtime: str
    id: str
    deploy_id: str
    url: str | None
    running: bool
    exit_code: int | None = None


class CellRuntime(Protocol):
    """Runs cells. Methods block (engines are synchronous); callers use a thread."""

    name: str

    def describe(self) -> str:
        """One line for the start-up log: what this runtime uses."""

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

    def stop(self, cell_id: str, timeout: float = 10.0) -> None:
        """Stop and remove the cell; a missing cell is fine."""

    def logs(self, cell_id: str, tail: int = 100) -> str:
        """The cell's recent output."""
