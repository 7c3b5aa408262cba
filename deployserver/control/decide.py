"""The reconciler's pure decision: from one deployment's row and the cells found for it,
the one action that moves it towards what is wanted (or none)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from deployserver.domain import (
    ACTIVE_STATES,
    Activation,
    DeploymentStatus,
    DesiredState,
    ReplicaState,
)
from deployserver.runtime.base import CellInfo
from deployserver.upload.metadata import DeploymentMetadata


class Action(StrEnum):
    """What the reconciler does for a deployment; one at a time per deployment."""

    RISE = "rise"
    """Start (or adopt) its first replicas and wait until they are ready."""
    RESTART = "restart"
    """Someone asked: replace the replicas by fresh ones."""
    RECOVER = "recover"
    """A replica's cell is gone: restart it with backoff, or fail past its budget."""
    STOP = "stop"
    """Stop and remove its cells."""
    CLEAN = "clean"
    """Cells no replica slot records (a failed deployment's, or strays) go."""
    ACTIVATE = "activate"
    """Ready and asked to serve (a rollback to a ready one): switch the model to it."""
    DELETE = "delete"
    """Remove its cells, record and folder."""
    SCALE_UP = "scale up"
    """Fewer replicas than desired: start more, each behind its health gate."""
    SCALE_DOWN = "scale down"
    """More replicas than desired: drain the extra ones, then stop them."""
    PAUSE = "pause"
    """Idle past ``idle_seconds``: freeze its replicas (memory kept)."""
    RESUME = "resume"
    """Wanted awake again: thaw its paused replicas."""


@dataclass(frozen=True)
class Replica:
    """One replica slot as recorded: its cell (None: vacant), state and crash count."""

    slot: int
    cell_id: str | None
    state: ReplicaState
    crashes: int = 0


@dataclass(frozen=True)
class Wanted:
    """A snapshot of one deployment's row, enough to decide and to act."""

    deploy_id: str
    model: str
    version: int
    status: DeploymentStatus
    desired_state: DesiredState
    restart_requested: bool
    cell_id: str | None
    crashes: int
    entrypoint: str
    meta: DeploymentMetadata
    activation: Activation | None = None
    replicas: tuple[Replica, ...] = field(default_factory=tuple)
    desired_replicas: int = 1
    paused: bool = False
    tier: str | None = None

    @property
    def live(self) -> list[Replica]:
        """The slots with a cell."""
        return [r for r in self.replicas if r.cell_id is not None]

    @property
    def serving(self) -> list[Replica]:
        """Live replicas not on their way out (what counts towards ``desired_replicas``)."""
        return [r for r in self.live if r.state is not ReplicaState.DRAINING]

    @property
    def rise_count(self) -> int:
        """Replicas a rise starts: ``min_replicas`` (at least one, to prove it loads)."""
        scaling = self.meta.scaling
        return max(1, min(scaling.min_replicas, scaling.max_replicas))


def dead_replicas(w: Wanted, found: list[CellInfo]) -> list[Replica]:
    """Recorded replicas whose cell is no longer running."""
    running = {c.id for c in found if c.running}
    return [r for r in w.live if r.cell_id not in running]


def strays(w: Wanted, found: list[CellInfo]) -> list[CellInfo]:
    """Cells of this deployment that no replica slot records."""
    recorded = {r.cell_id for r in w.live}
    return [c for c in found if c.id not in recorded]


def decide(w: Wanted, found: list[CellInfo]) -> Action | None:
    """The one action that moves ``w`` towards its desired state, or None."""
    match w.desired_state:
        case DesiredState.DELETED:
            return Action.DELETE
        case DesiredState.STOPPED:
            return Action.STOP if found or w.status in ACTIVE_STATES else None
    if w.restart_requested:
        return Action.RESTART
    if w.status is DeploymentStatus.FAILED:
        return Action.CLEAN if found else None
    if w.status is not DeploymentStatus.READY:
        return Action.RISE  # received, stopped, or left mid-way (building/starting/stopping)
    if dead_replicas(w, found):
        return Action.RECOVER
    if strays(w, found):
        return Action.CLEAN
    return _scale(w) or (Action.ACTIVATE if w.activation else None)


def _scale(w: Wanted) -> Action | None:
    """Pause, resume or change the number of replicas of a ready deployment."""
    serving = w.serving
    if w.paused and w.desired_replicas > 0:
        if any(r.state is not ReplicaState.PAUSED for r in serving):
            return Action.PAUSE
        return None
    if any(r.state is ReplicaState.PAUSED for r in serving) and w.desired_replicas > 0:
        return Action.RESUME
    if len(serving) < w.desired_replicas:
        return Action.SCALE_UP
    if len(serving) > w.desired_replicas or len(serving) < len(w.live):
        return Action.SCALE_DOWN  # extra ones, or draining ones left by a stopped server
    return None
