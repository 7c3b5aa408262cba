"""Desired state -> recorded transitions: status changes, events, activation, requests.

Requests call the ``request_*`` functions (they only record what is wanted); the
reconciler calls the others as it observes and acts. All take a session and never commit.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from deployserver import orm, records
from deployserver.errors import Conflict

ACTIVE_STATES = ("building", "starting", "ready", "stopping")


def set_status(
    session: Session,
    d: orm.Deployment,
    status: str,
    message: str,
    *,
    reason: str | None = None,
    kind: str | None = None,
) -> None:
    d.status = status
    d.status_reason = reason
    records.add_event(session, d, kind or status, message)


def activate(session: Session, d: orm.Deployment) -> orm.Deployment | None:
    """Make ``d`` its model's active deployment; the one it replaces is asked to stop."""
    model = d.model
    previous = None
    if model.active_deploy_id and model.active_deploy_id != d.deploy_id:
        previous = session.scalar(
            select(orm.Deployment).where(orm.Deployment.deploy_id == model.active_deploy_id)
        )
    model.active_deploy_id = d.deploy_id
    d.activation = None
    records.add_event(session, d, "activated", f"version {d.version} now serves {model.name}")
    if previous is not None:
        previous.desired_state = "stopped"
        records.add_event(
            session, previous, "replaced", f"replaced by version {d.version}; stopping"
        )
    return previous


def should_activate(session: Session, d: orm.Deployment) -> bool:
    """An upload activates when ready unless a newer version already serves."""
    if d.activation is None:
        return False
    if d.activation == "always" or d.model.active_deploy_id is None:
        return True
    current = session.scalar(
        select(orm.Deployment).where(orm.Deployment.deploy_id == d.model.active_deploy_id)
    )
    return current is None or current.status != "ready" or current.version < d.version


def request_start(session: Session, d: orm.Deployment, actor: str | None) -> None:
    if d.desired_state == "deleted":
        raise Conflict(f"deployment {d.deploy_id} is being deleted")
    d.desired_state = "running"
    if d.status in ("failed", "stopped", "received"):
        d.status_reason = None
        if d.cell is not None:
            d.cell.crashes = 0
    if d.model.active_deploy_id is None:
        d.activation = d.activation or "newer"
    records.add_event(session, d, "start_requested", "start requested", actor)


def request_stop(session: Session, d: orm.Deployment, actor: str | None) -> None:
    if d.desired_state == "deleted":
        raise Conflict(f"deployment {d.deploy_id} is being deleted")
    d.desired_state = "stopped"
    d.activation = None
    records.add_event(session, d, "stop_requested", "stop requested", actor)


def request_restart(session: Session, d: orm.Deployment, actor: str | None) -> None:
    request_start(session, d, actor)
    if d.status in ACTIVE_STATES:
        d.restart_requested = True
    records.add_event(session, d, "restart_requested", "restart requested", actor)


def request_delete(session: Session, d: orm.Deployment, actor: str | None) -> None:
    d.desired_state = "deleted"
    d.activation = None
    if d.model.active_deploy_id == d.deploy_id:
        d.model.active_deploy_id = None
    records.add_event(session, d, "delete_requested", "delete requested", actor)


def request_rollback(session: Session, d: orm.Deployment, actor: str | None) -> None:
    """Make ``d`` active again through the same path as a new upload: rise, then switch."""
    if d.model.active_deploy_id == d.deploy_id and d.status == "ready":
        return
    request_start(session, d, actor)
    d.activation = "always"
    records.add_event(session, d, "rollback_requested", f"rollback to version {d.version}", actor)
