"""Routes for deployments: upload, read, list, events, delete."""

from __future__ import annotations

import logging
from typing import Annotated

import anyio
from fastapi import APIRouter, Query, Request, Response, status

from deployserver import records, storage
from deployserver.api.deps import DeployAccess, SessionDep, StateDep, require_scope
from deployserver.errors import UploadTooLarge
from deployserver.schemas import DeploymentList, DeploymentRead, EventRead, Status
from deployserver.uploads import receive_upload

log = logging.getLogger("deployserver.deployments")
router = APIRouter(prefix="/api/v1/deployments", tags=["deployments"])


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=DeploymentRead,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["metadata", "files"],
                        "properties": {
                            "metadata": {"type": "string", "description": "JSON metadata"},
                            "files": {
                                "type": "array",
                                "items": {"type": "string", "format": "binary"},
                            },
                        },
                    }
                }
            },
        }
    },
)
async def upload_deployment(
    request: Request,
    response: Response,
    state: StateDep,
    caller: DeployAccess,
    start: bool = True,
) -> DeploymentRead:
    """Receive a model's files plus metadata in one multipart request (streamed to disk)."""
    settings = state.settings
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > settings.max_upload_bytes:
        raise UploadTooLarge(f"upload is larger than the {settings.max_upload_bytes}-byte limit")
    read = await receive_upload(
        settings=settings,
        sessions=state.sessions,
        content_type=request.headers.get("content-type"),
        body=request.stream(),
        start=start,
        actor=caller.name,
    )
    response.headers["Location"] = f"/api/v1/deployments/{read.deploy_id}"
    return read


@router.get("", response_model=DeploymentList, dependencies=[require_scope("read")])
def list_deployments(
    session: SessionDep,
    model: str | None = None,
    status: Status | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> DeploymentList:
    """Deployments, newest first; pass ``next_cursor`` back as ``cursor`` for the next page."""
    before = records.decode_cursor(cursor) if cursor else None
    rows = records.list_deployments(
        session, model=model, status=status, limit=limit + 1, before_seq=before
    )
    page = rows[:limit]
    next_cursor = records.encode_cursor(page[-1].seq) if len(rows) > limit else None
    return DeploymentList(items=[records.to_read(d) for d in page], next_cursor=next_cursor)


@router.get("/{deploy_id}", response_model=DeploymentRead, dependencies=[require_scope("read")])
def get_deployment(deploy_id: str, session: SessionDep) -> DeploymentRead:
    return records.to_read(records.get_deployment(session, deploy_id))


@router.get(
    "/{deploy_id}/events", response_model=list[EventRead], dependencies=[require_scope("read")]
)
def deployment_events(deploy_id: str, session: SessionDep) -> list[EventRead]:
    return records.list_events(session, records.get_deployment(session, deploy_id))


@router.delete("/{deploy_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_deployment(deploy_id: str, state: StateDep, caller: DeployAccess) -> Response:
    """Remove a deployment: its record, its events and its folder (the log keeps who)."""
    settings = state.settings

    def _delete() -> None:
        with state.sessions.begin() as session:
            deployment = records.get_deployment(session, deploy_id)
            if deployment.model.active_deploy_id == deploy_id:
                deployment.model.active_deploy_id = None
            log.info(
                "deployment %s (version %d of %s) deleted by %s",
                deploy_id,
                deployment.version,
                deployment.model.name,
                caller.name,
            )
            session.delete(deployment)
            session.flush()
            trash = storage.retire(settings.deployments_dir, settings.staging_dir, deploy_id)
        if trash is not None:
            storage.discard(trash)

    await anyio.to_thread.run_sync(_delete)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
