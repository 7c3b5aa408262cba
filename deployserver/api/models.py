"""Routes for models: the names that group deployments, their versions and active one."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy.orm import Session

from deployserver import orm, records
from deployserver.api.deps import SessionDep, require_scope
from deployserver.schemas import ModelList, ModelRead, VersionRead

router = APIRouter(prefix="/api/v1/models", tags=["models"])
# Each route names its scope: rollback (deploy) and predictions (predict) will live here.


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
