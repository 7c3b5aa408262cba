"""Query functions over the tables: take a session, never commit (routers do)."""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from deployserver import orm
from deployserver.errors import BadRequest, DeploymentNotFound, ModelNotFound
from deployserver.schemas import CellRead, DeploymentRead, EventRead, FileRead

T = TypeVar("T")


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
    session.add(orm.Event(deployment_seq=deployment.seq, kind=kind, message=message, actor=actor))


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
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        return int(base64.urlsafe_b64decode(padded.encode()).decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("cursor is not one this server handed out") from exc


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


def get_model(session: Session, name: str) -> orm.Model:
    found = session.scalar(select(orm.Model).where(orm.Model.name == name))
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


def count_rows(session: Session) -> dict[str, int]:
    """Rows per table; tests use it to prove a refused upload left nothing behind."""
    return {
        table.name: session.scalar(select(func.count()).select_from(table)) or 0
        for table in orm.Base.metadata.sorted_tables
    }


def to_read(d: orm.Deployment) -> DeploymentRead:
    cell = d.cell
    return DeploymentRead(
        deploy_id=d.deploy_id,
        model=d.model.name,
        version=d.version,
        status=d.status,  # type: ignore[arg-type]
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
            started_at=cell.started_at,
            restarts=cell.restarts,
            last_health_at=cell.last_health_at,
        ),
        active=d.model.active_deploy_id == d.deploy_id,
        desired_state=d.desired_state,
        entrypoint=d.entrypoint,
        metadata=d.meta,
    )


def model_is_public(session: Session, name: str) -> bool:
    """Whether ``name``'s active deployment was uploaded with ``"public": true``."""
    meta = session.scalar(
        select(orm.Deployment.meta)
        .join(orm.Model, orm.Model.id == orm.Deployment.model_id)
        .where(orm.Model.name == name, orm.Deployment.deploy_id == orm.Model.active_deploy_id)
    )
    return bool(meta and meta.get("public") is True)
