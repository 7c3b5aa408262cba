"""Routes for models: the names that group deployments, their versions and active one."""

from __future__ import annotations

from fastapi import APIRouter, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from deployserver import lifecycle, orm, records
from deployserver.api.deps import DeployAccess, SessionDep, StateDep, require_scope
from deployserver.errors import DeploymentNotFound
from deployserver.schemas import DeploymentRead, ModelList, ModelRead, Rollback, VersionRead

router = APIRouter(prefix="/api/v1/models", tags=["models"])


def _read(session: Session, model: orm.Model) -> ModelRead:
    versions = records.model_versions(session, model)
    return ModelRead(
        name=model.name,
        active_deploy_id=model.active_deploy_id,
        latest_version=model.last_version,
        created_at=model.created_at,
        versions=[
            VersionRead(
                version=d.version,
                deploy_id=d.deploy_id,
                status=d.status,  # type: ignore[arg-type]
                created_at=d.created_at,
            )
            for d in versions
        ],
    )


@router.get("", response_model=ModelList, dependencies=[require_scope("read")])
def list_models(session: SessionDep) -> ModelList:
    return ModelList(items=[_read(session, m) for m in records.list_models(session)])


@router.get("/{model}", response_model=ModelRead, dependencies=[require_scope("read")])
def get_model(model: str, session: SessionDep) -> ModelRead:
    return _read(session, records.get_model(session, model))


@router.post("/{model}/rollback", status_code=status.HTTP_202_ACCEPTED)
def rollback(model: str, body: Rollback, state: StateDep, caller: DeployAccess) -> DeploymentRead:
    """Make an earlier deployment active again: it rises, then takes over, as an upload."""
    with state.sessions.begin() as session:
        found = records.get_model(session, model)
        query = select(orm.Deployment).where(orm.Deployment.model_id == found.id)
        if body.deploy_id is not None:
            query = query.where(orm.Deployment.deploy_id == body.deploy_id)
        else:
            query = query.where(orm.Deployment.version == body.version)
        target = session.scalar(query)
        if target is None or target.desired_state == "deleted":
            which = body.deploy_id or f"version {body.version}"
            raise DeploymentNotFound(f"model {model!r} has no deployment {which}")
        lifecycle.request_rollback(session, target, caller.name)
        session.flush()
        read = records.to_read(target)
    state.reconciler.wake()
    return read
