"""The words the wings share: statuses, desired states and activation as StrEnums.

Only the standard library is imported here, so every wing (and the SDK) can use them.
StrEnum members compare equal to their strings, as the API and the database spell them.
"""

from __future__ import annotations

from enum import StrEnum


class DeploymentStatus(StrEnum):
    """What a deployment was last seen doing (the API's ``status``)."""

    RECEIVED = "received"
    BUILDING = "building"
    STARTING = "starting"
    READY = "ready"
    FAILED = "failed"
    STOPPING = "stopping"
    STOPPED = "stopped"


ACTIVE_STATES = frozenset(
    {
        DeploymentStatus.BUILDING,
        DeploymentStatus.STARTING,
        DeploymentStatus.READY,
        DeploymentStatus.STOPPING,
    }
)
"""Statuses in which a cell may exist or be on its way."""
SETTLED_STATES = frozenset(
    {DeploymentStatus.READY, DeploymentStatus.FAILED, DeploymentStatus.STOPPED}
)
"""Statuses a deployment rests in until someone asks for a change."""


class DesiredState(StrEnum):
    """What was asked of a deployment: the reconciler converges to it."""

    RUNNING = "running"
    STOPPED = "stopped"
    DELETED = "deleted"


class Activation(StrEnum):
    """Whether a deployment takes over its model once ready."""

    NEWER = "newer"
    """An upload: only if no newer version serves by then."""
    ALWAYS = "always"
    """A rollback: whatever serves by then."""


class ReplicaState(StrEnum):
    """Where one replica (a cell of a deployment) is."""

    STARTING = "starting"
    """Started, its health gate not passed yet: it gets no requests."""
    READY = "ready"
    """Serving: /serve balances requests over the ready replicas."""
    PAUSED = "paused"
    """Frozen (no CPU, memory kept): the first request wakes it in milliseconds."""
    DRAINING = "draining"
    """Taken out of service: it finishes the requests it has, then stops."""


class Tier(StrEnum):
    """How awake a ready deployment is, in words (the record's ``replicas.tier``)."""

    SERVING = "serving"
    IDLE = "idle"
    """Its replicas run, but no request came for a while."""
    PAUSED = "paused"
    SCALED_TO_ZERO = "scaled to zero"
    STOPPED = "stopped"
    """Not ready: no replica serves, and none wakes for a request."""


class PredictionStatus(StrEnum):
    """Where an asynchronous prediction is."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


FINISHED_PREDICTIONS = frozenset({PredictionStatus.SUCCEEDED, PredictionStatus.FAILED})

ADMIN_TOKEN_FILE = "admin-token"  # noqa: S105 - a file name, not a secret
"""The file in the data folder where the server keeps the admin token it minted (0600);
local tools (the CLI, the SDK) read it to talk to a server on the same machine."""
