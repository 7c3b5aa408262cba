"""Routes for models: the names that group deployments, their versions and active one."""

from __future__ import annotations

from fastapi import APIRouter, status
from sqlalchemy.orm import Session

from deployserver.api.deps import DeployAccess, SessionDep, StateDep, require_scope
from deployserver.control import lifecycle
from deployserver.domain import DesiredState
from deployserver.errors import DeploymentNotFound
from deployserver.schemas import DeploymentRead, ModelList, ModelRead, Rollback, VersionRead
from deployserver.store import orm, queries

router = APIRouter(prefix="/api/v1/models", tags=["models"])


def _read(session: Session, model: orm.Model) -> ModelRead:
    versions = queries.model_versions(session, model)
    return ModelRead(
        name=model.name,
        active_deploy_id=model.active_deploy_id,
        latest_version=model.last_version,
        created_at=model.created_at,
        versions=[
            VersionRead(
                version=d.version,
                deploy_id=d.deploy_id,
                status=d.status,
                created_at=d.created_at,
            )
            for d in versions
        ],
    )


@router.get("", response_model=ModelList, dependencies=[require_scope("read")])
def list_models(session: SessionDep) -> ModelList:
    return ModelList(items=[_read(session, m) for m in queries.list_models(session)])


@router.get("/{model}", response_model=ModelRead, dependencies=[require_scope("read")])
def get_model(model: str, session: SessionDep) -> ModelRead:
    return _read(session, queries.get_model(session, model))


@router.post("/{model}/rollback", status_code=status.HTTP_202_ACCEPTED)
def rollback(model: str, body: Rollback, state: StateDep, caller: DeployAccess) -> DeploymentRead:
    """Make an earlier deployment active again: it rises, then takes over, as an upload."""
    with state.sessions.begin() as session:
        found = queries.get_model(session, model)
        target = queries.deployment_of(
            session, found, deploy_id=body.deploy_id, version=body.version
        )
        if target is None or target.desired_state is DesiredState.DELETED:
            which = body.deploy_id or f"version {body.version}"
            raise DeploymentNotFound(f"model {model!r} has no deployment {which}")
        lifecycle.request_rollback(session, target, caller.name)
        session.flush()
        read = queries.to_read(target, reveal_env=True)  # the caller holds 'deploy'
    state.reconciler.wake()
    return read
