"""Query functions over the tables: take a session, never commit (routers do)."""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from deployserver.domain import ACTIVE_STATES, DeploymentStatus, DesiredState, ReplicaState, Tier
from deployserver.errors import BadRequest, DeploymentNotFound, ModelNotFound
from deployserver.schemas import (
    CellRead,
    DeploymentRead,
    EventRead,
    FileRead,
    ReplicaRead,
    ReplicasRead,
)
from deployserver.store import eventhub, orm
from deployserver.upload.metadata import DeploymentMetadata

T = TypeVar("T")
ENV_HIDDEN = "<hidden>"
"""What each metadata ``env`` value reads as for callers without the ``deploy`` scope."""


def new_deploy_id() -> str:
    """A 24-character id that sorts by creation time (ms) and cannot be guessed."""
    return f"{int(time.time() * 1000):012x}{secrets.token_hex(6)}"


def next_version(session: Session, model_name: str) -> orm.Model:
    """Count one more version of ``model_name`` (creating the model), atomically."""
    stmt = (
        update(orm.Model)
        .where(orm.Model.name == model_name)
        .values(last_version=orm.Model.last_version + 1, updated_at=orm.utcnow())
        .returning(orm.Model.id)
    )
    model_id = session.execute(stmt).scalar_one_or_none()
    if model_id is None:
        try:
            with session.begin_nested():
                model = orm.Model(name=model_name, last_version=1)
                session.add(model)
                session.flush()
            return model
        except IntegrityError:  # another upload created it first: count on it instead
            model_id = session.execute(stmt).scalar_one()
    return session.get_one(orm.Model, model_id, populate_existing=True)


def add_event(
    session: Session, deployment: orm.Deployment, kind: str, message: str, actor: str | None = None
) -> None:
    """Record one step of ``deployment``'s history; subscribers hear of it on commit."""
    row = orm.Event(
        deployment_seq=deployment.seq, kind=kind, message=message, actor=actor, at=orm.utcnow()
    )
    session.add(row)
    eventhub.note(session, row, deployment)


def find_deployment(session: Session, deploy_id: str) -> orm.Deployment | None:
    """The deployment ``deploy_id`` (with its model and cell), or None."""
    return session.scalar(select(orm.Deployment).where(orm.Deployment.deploy_id == deploy_id))


def deployments_to_reconcile(session: Session) -> Sequence[orm.Deployment]:
    """Every deployment the reconciler has to look at: wanted running or deleted, in a
    state where a cell may exist, or with a cell recorded."""
    with_cells = select(orm.Cell.deployment_seq).where(orm.Cell.runtime_id.is_not(None))
    return (
        session.scalars(
            select(orm.Deployment).where(
                (orm.Deployment.desired_state != DesiredState.STOPPED)
                | orm.Deployment.status.in_(ACTIVE_STATES)
                | orm.Deployment.seq.in_(with_cells)
            )
        )
        .unique()
        .all()
    )


def existing_deploy_ids(session: Session, deploy_ids: set[str]) -> set[str]:
    """Which of ``deploy_ids`` have a record."""
    if not deploy_ids:
        return set()
    stmt = select(orm.Deployment.deploy_id).where(orm.Deployment.deploy_id.in_(deploy_ids))
    return set(session.scalars(stmt))


def touch_cells(
    session: Session, cell_ids: list[str], *, now: datetime, stable_since: datetime
) -> None:
    """Record that the cells ``cell_ids`` answered at ``now``; the crash count of one
    running since before ``stable_since`` is forgiven."""
    cells = update(orm.Cell).where(orm.Cell.runtime_id.in_(cell_ids))
    session.execute(cells.values(last_health_at=now))
    session.execute(
        cells.where(orm.Cell.crashes > 0, orm.Cell.started_at < stable_since).values(crashes=0)
    )


def deployment_of(
    session: Session, model: orm.Model, *, deploy_id: str | None, version: int | None
) -> orm.Deployment | None:
    """``model``'s deployment with that id, or else with that version number."""
    stmt = select(orm.Deployment).where(orm.Deployment.model_id == model.id)
    if deploy_id is not None:
        stmt = stmt.where(orm.Deployment.deploy_id == deploy_id)
    else:
        stmt = stmt.where(orm.Deployment.version == version)
    return session.scalar(stmt)


def active_deployment(session: Session, model: orm.Model) -> orm.Deployment | None:
    """The deployment ``model`` serves from, if any."""
    if model.active_deploy_id is None:
        return None
    return find_deployment(session, model.active_deploy_id)


def get_deployment(session: Session, deploy_id: str) -> orm.Deployment:
    found = session.scalar(
        select(orm.Deployment)
        .where(orm.Deployment.deploy_id == deploy_id)
        .options(selectinload(orm.Deployment.files))
    )
    if found is None:
        raise DeploymentNotFound(f"no deployment {deploy_id!r}")
    return found


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(str(seq).encode()).decode().rstrip("=")


def paginate(
    rows: Sequence[T], limit: int, key: Callable[[T], int]
) -> tuple[Sequence[T], str | None]:
    """A page of ``rows`` (fetched with ``limit + 1``) and the cursor of the next one."""
    page = rows[:limit]
    return page, encode_cursor(key(page[-1])) if len(rows) > limit else None


def decode_cursor(cursor: str) -> int:
    """The row key a cursor from :func:`encode_cursor` holds; 400 for anything else."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        text = base64.urlsafe_b64decode(padded.encode()).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("cursor is not one this server handed out") from exc
    if not (text.isascii() and text.isdigit() and len(text) <= 18 and int(text) > 0):
        raise BadRequest("cursor is not one this server handed out")
    return int(text)


def list_deployments(
    session: Session,
    *,
    model: str | None,
    status: str | None,
    limit: int,
    before_seq: int | None,
) -> Sequence[orm.Deployment]:
    stmt = select(orm.Deployment).options(selectinload(orm.Deployment.files))
    if model is not None:
        stmt = stmt.join(orm.Model).where(orm.Model.name == model)
    if status is not None:
        stmt = stmt.where(orm.Deployment.status == status)
    if before_seq is not None:
        stmt = stmt.where(orm.Deployment.seq < before_seq)
    return session.scalars(stmt.order_by(orm.Deployment.seq.desc()).limit(limit)).unique().all()


def find_model(session: Session, name: str) -> orm.Model | None:
    """The model called ``name``, or None."""
    return session.scalar(select(orm.Model).where(orm.Model.name == name))


def get_model(session: Session, name: str) -> orm.Model:
    """The model called ``name``; ModelNotFound (404) when there is none."""
    found = find_model(session, name)
    if found is None:
        raise ModelNotFound(f"no model {name!r}")
    return found


def list_models(session: Session) -> Sequence[orm.Model]:
    return session.scalars(select(orm.Model).order_by(orm.Model.name)).all()


def model_versions(session: Session, model: orm.Model) -> Sequence[orm.Deployment]:
    return session.scalars(
        select(orm.Deployment)
        .where(orm.Deployment.model_id == model.id)
        .order_by(orm.Deployment.version.desc())
    ).all()


def list_events(session: Session, deployment: orm.Deployment) -> list[EventRead]:
    rows = session.scalars(
        select(orm.Event).where(orm.Event.deployment_seq == deployment.seq).order_by(orm.Event.id)
    ).all()
    return [EventRead(at=e.at, kind=e.kind, message=e.message, actor=e.actor) for e in rows]


def events_after(
    session: Session,
    after_id: int | None,
    *,
    model: str | None,
    deploy_id: str | None,
    limit: int,
) -> list[eventhub.FeedEvent]:
    """Recorded events as subscribers see them (``status`` is their deployment's status
    now), oldest first: the first ``limit`` with an id above ``after_id``, or with
    ``after_id`` None the last ``limit`` ones."""
    stmt = select(orm.Event, orm.Deployment).join(
        orm.Deployment, orm.Deployment.seq == orm.Event.deployment_seq
    )
    if after_id is not None:
        stmt = stmt.where(orm.Event.id > after_id)
    if model is not None:
        stmt = stmt.join(orm.Model, orm.Model.id == orm.Deployment.model_id).where(
            orm.Model.name == model
        )
    if deploy_id is not None:
        stmt = stmt.where(orm.Deployment.deploy_id == deploy_id)
    order = orm.Event.id if after_id is not None else orm.Event.id.desc()
    rows = list(session.execute(stmt.order_by(order).limit(limit)).all())
    if after_id is None:
        rows.reverse()
    return [eventhub.FeedEvent.of(e, d, e.id) for e, d in rows]


def count_rows(session: Session) -> dict[str, int]:
    """Rows per table; tests use it to prove a refused upload left nothing behind."""
    return {
        table.name: session.scalar(select(func.count()).select_from(table)) or 0
        for table in orm.Base.metadata.sorted_tables
    }


def hide_env(meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` with every ``env`` value replaced by ENV_HIDDEN: the keys still say what
    is set, the values (API keys, passwords) stay with those who may deploy."""
    env = meta.get("env")
    if not isinstance(env, dict) or not env:
        return meta
    return {**meta, "env": dict.fromkeys(env, ENV_HIDDEN)}


def to_read(d: orm.Deployment, *, reveal_env: bool = False) -> DeploymentRead:
    """The API's record of ``d``; its metadata ``env`` values are hidden unless
    ``reveal_env`` (the caller holds the ``deploy`` scope)."""
    cell = d.cell
    if cell is not None and cell.state is not ReplicaState.READY:
        cell = None if d.status is DeploymentStatus.READY else cell
    return DeploymentRead(
        deploy_id=d.deploy_id,
        model=d.model.name,
        version=d.version,
        status=d.status,
        status_reason=d.status_reason,
        created_at=d.created_at,
        updated_at=d.updated_at,
        files=[FileRead(path=f.path, size=f.size, sha256=f.sha256) for f in d.files],
        cell=None
        if cell is None or cell.runtime_id is None
        else CellRead(
            runtime=cell.runtime,
            id=cell.runtime_id,
            url=cell.url,
            grpc_address=cell.grpc_address,
            node=cell.node,
            started_at=cell.started_at,
            restarts=cell.restarts,
            last_health_at=cell.last_health_at,
        ),
        replicas=replicas_of(d),
        active=d.model.active_deploy_id == d.deploy_id,
        desired_state=d.desired_state,
        entrypoint=d.entrypoint,
        metadata=d.meta if reveal_env else hide_env(d.meta),
    )


def replicas_of(d: orm.Deployment) -> ReplicasRead:
    """The record's ``replicas``: how many are wanted and ready, its tier in words, and
    each live replica."""
    live = d.live_cells
    ready = sum(1 for c in live if c.state is ReplicaState.READY)
    if d.status is not DeploymentStatus.READY:
        tier = Tier.STOPPED
        desired = 0 if d.desired_state is not DesiredState.RUNNING else d.desired_replicas
    else:
        # the tier as it is, not as the autoscaler last asked: paused once every replica
        # is, scaled to zero once none is left
        desired = 0 if d.paused else d.desired_replicas
        tier = Tier.SERVING if d.tier in (None, Tier.SERVING) else Tier.IDLE
        if not live:
            tier = Tier.SCALED_TO_ZERO
        elif all(c.state is ReplicaState.PAUSED for c in live):
            tier = Tier.PAUSED
    cells = [
        ReplicaRead(
            id=c.runtime_id or "",
            state=c.state,
            started_at=c.started_at,
            restarts=c.restarts,
            node=c.node,
        )
        for c in live
    ]
    return ReplicasRead(desired=desired, ready=ready, tier=tier, cells=cells)


def deployments_by_status(session: Session) -> dict[DeploymentStatus, int]:
    """How many deployments are in each status (statuses with none are absent)."""
    stmt = select(orm.Deployment.status, func.count()).group_by(orm.Deployment.status)
    return {DeploymentStatus(status): count for status, count in session.execute(stmt).all()}


def prediction_model(session: Session, request_id: str) -> str | None:
    """The model an asynchronous prediction is for, or None when there is no such one."""
    stmt = select(orm.Prediction.model).where(orm.Prediction.request_id == request_id)
    return session.scalar(stmt)


def model_is_public(session: Session, name: str) -> bool:
    """Whether ``name``'s active deployment was uploaded with ``"public": true``."""
    meta = session.scalar(
        select(orm.Deployment.meta)
        .join(orm.Model, orm.Model.id == orm.Deployment.model_id)
        .where(orm.Model.name == name, orm.Deployment.deploy_id == orm.Model.active_deploy_id)
    )
    return meta is not None and DeploymentMetadata.of(meta).public
