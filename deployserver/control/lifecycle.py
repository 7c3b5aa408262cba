"""Desired state -> recorded transitions: status changes, events, activation, requests.

Requests call the ``request_*`` functions (they only record what is wanted); the
reconciler calls the others as it observes and acts. All take a session and never commit.
"""

from __future__ import annotations

from pydantic import ValidationError
from sqlalchemy.orm import Session

from deployserver import domain
from deployserver.config import Settings
from deployserver.domain import Activation, DeploymentStatus, DesiredState
from deployserver.errors import Conflict, InvalidScaling
from deployserver.schemas import Scaling, ScalingChange
from deployserver.store import orm, queries
from deployserver.upload.cellpolicy import check_scaling
from deployserver.upload.metadata import DeploymentMetadata

ACTIVE_STATES = domain.ACTIVE_STATES
RESTARTABLE = frozenset(
    {DeploymentStatus.FAILED, DeploymentStatus.STOPPED, DeploymentStatus.RECEIVED}
)
"""Statuses from which a start begins afresh (its reason and crash count forgotten)."""


def set_status(
    session: Session,
    d: orm.Deployment,
    status: DeploymentStatus,
    message: str,
    *,
    reason: str | None = None,
    kind: str | None = None,
) -> None:
    d.status = status
    d.status_reason = reason
    queries.add_event(session, d, kind or status, message)


def activate(session: Session, d: orm.Deployment) -> orm.Deployment | None:
    """Make ``d`` its model's active deployment; the one it replaces is asked to stop."""
    model = d.model
    previous = None
    if model.active_deploy_id and model.active_deploy_id != d.deploy_id:
        previous = queries.active_deployment(session, model)
    model.active_deploy_id = d.deploy_id
    d.activation = None
    queries.add_event(session, d, "activated", f"version {d.version} now serves {model.name}")
    if previous is not None:
        previous.desired_state = DesiredState.STOPPED
        queries.add_event(
            session, previous, "replaced", f"replaced by version {d.version}; stopping"
        )
    return previous


def should_activate(session: Session, d: orm.Deployment) -> bool:
    """An upload activates when ready unless a newer version already serves."""
    if d.activation is None:
        return False
    if d.activation is Activation.ALWAYS or d.model.active_deploy_id is None:
        return True
    current = queries.active_deployment(session, d.model)
    return (
        current is None
        or current.status is not DeploymentStatus.READY
        or current.version < d.version
    )


def request_start(session: Session, d: orm.Deployment, actor: str | None) -> None:
    if d.desired_state is DesiredState.DELETED:
        raise Conflict(f"deployment {d.deploy_id} is being deleted")
    d.desired_state = DesiredState.RUNNING
    if d.status in RESTARTABLE:
        d.status_reason = None
        for cell in d.cells:
            cell.crashes = 0
    # It takes over once ready when nothing else is meant to serve: no active deployment,
    # or one that was stopped (else a started older version runs beside the active one).
    active = queries.active_deployment(session, d.model)
    if active is None or active is d or active.desired_state is not DesiredState.RUNNING:
        d.activation = d.activation or Activation.NEWER
    queries.add_event(session, d, "start_requested", "start requested", actor)


def request_stop(session: Session, d: orm.Deployment, actor: str | None) -> None:
    if d.desired_state is DesiredState.DELETED:
        raise Conflict(f"deployment {d.deploy_id} is being deleted")
    d.desired_state = DesiredState.STOPPED
    d.activation = None
    queries.add_event(session, d, "stop_requested", "stop requested", actor)


def request_restart(session: Session, d: orm.Deployment, actor: str | None) -> None:
    request_start(session, d, actor)
    if d.status in ACTIVE_STATES:
        d.restart_requested = True
    queries.add_event(session, d, "restart_requested", "restart requested", actor)


def request_delete(session: Session, d: orm.Deployment, actor: str | None) -> None:
    d.desired_state = DesiredState.DELETED
    d.activation = None
    if d.model.active_deploy_id == d.deploy_id:
        d.model.active_deploy_id = None
    queries.add_event(session, d, "delete_requested", "delete requested", actor)


def request_scaling(
    session: Session,
    d: orm.Deployment,
    change: ScalingChange,
    settings: Settings,
    actor: str | None,
) -> None:
    """Change the deployment's scaling now: the fields given replace the current ones,
    checked as at upload; the autoscaler works within the new bounds from its next pass."""
    if d.desired_state is DesiredState.DELETED:
        raise Conflict(f"deployment {d.deploy_id} is being deleted")
    current = DeploymentMetadata.of(d.meta).scaling.model_dump()
    given = change.model_dump(exclude_none=True)
    if "min_replicas" in given and "max_replicas" not in given:
        current["max_replicas"] = max(current["max_replicas"], given["min_replicas"], 1)
    try:
        scaling = Scaling.model_validate({**current, **given})
    except ValidationError as exc:
        problems = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        raise InvalidScaling(f"invalid scaling: {problems}") from exc
    check_scaling(scaling, settings)
    d.meta = {**d.meta, "scaling": scaling.model_dump()}
    d.desired_replicas = min(max(d.desired_replicas, scaling.min_replicas), scaling.max_replicas)
    if scaling.min_replicas > 0:
        d.paused = False
    words = (
        f"scaling: {scaling.min_replicas} to {scaling.max_replicas} replicas, target "
        f"{scaling.target_concurrency:g} in flight, idle after {scaling.idle_seconds:g} s"
    )
    queries.add_event(session, d, "scaling_changed", words, actor)


def request_rollback(session: Session, d: orm.Deployment, actor: str | None) -> None:
    """Make ``d`` active again through the same path as a new upload: rise, then switch."""
    if d.model.active_deploy_id == d.deploy_id and d.status is DeploymentStatus.READY:
        return
    request_start(session, d, actor)
    d.activation = Activation.ALWAYS
    queries.add_event(session, d, "rollback_requested", f"rollback to version {d.version}", actor)
