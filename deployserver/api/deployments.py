"""Routes for deployments: upload, read, list, events, delete."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated

import anyio
from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy.orm import Session

from deployserver import cells, lifecycle, orm, records
from deployserver.api.deps import DeployAccess, SessionDep, StateDep, require_scope
from deployserver.errors import DeploymentNotFound, UploadTooLarge
from deployserver.schemas import DeploymentList, DeploymentRead, EventRead, Status
from deployserver.state import AppState
from deployserver.uploads import receive_upload

router = APIRouter(prefix="/api/v1/deployments", tags=["deployments"])
log = logging.getLogger("deployserver.deployments")
DELETE_WAIT_SECONDS = 60.0


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
    state.reconciler.wake()
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
    page, next_cursor = records.paginate(rows, limit, lambda d: d.seq)
    return DeploymentList(items=[records.to_read(d) for d in page], next_cursor=next_cursor)


@router.get(
    "/{deploy_id}",
    response_model=DeploymentRead,
    dependencies=[require_scope("read")],
    response_class=Response,
)
async def get_deployment(deploy_id: str, state: StateDep) -> Response:
    """The record, as polled by clients: served from memory until a write changes it."""
    body = state.record_cache.get(deploy_id)
    if body is None:
        generation = state.record_cache.generation

        def read() -> bytes:
            with state.sessions() as session:
                record = records.to_read(records.get_deployment(session, deploy_id))
            return record.model_dump_json().encode()

        body = await anyio.to_thread.run_sync(read)
        state.record_cache.put(deploy_id, body, generation)
    return Response(body, media_type="application/json")


@router.get(
    "/{deploy_id}/events", response_model=list[EventRead], dependencies=[require_scope("read")]
)
def deployment_events(deploy_id: str, session: SessionDep) -> list[EventRead]:
    return records.list_events(session, records.get_deployment(session, deploy_id))


def _request(
    state: AppState,
    deploy_id: str,
    change: Callable[[Session, orm.Deployment, str | None], None],
    actor: str,
) -> DeploymentRead:
    """Record what is wanted (and who wants it), wake the reconciler, answer at once."""
    with state.sessions.begin() as session:
        deployment = records.get_deployment(session, deploy_id)
        change(session, deployment, actor)
        session.flush()
        read = records.to_read(deployment)
    state.reconciler.wake()
    return read


@router.post("/{deploy_id}/start", status_code=status.HTTP_202_ACCEPTED)
def start_deployment(deploy_id: str, state: StateDep, caller: DeployAccess) -> DeploymentRead:
    """Ask for the deployment's cell to run (again); a failed one gets a fresh try."""
    return _request(state, deploy_id, lifecycle.request_start, caller.name)


@router.post("/{deploy_id}/stop", status_code=status.HTTP_202_ACCEPTED)
def stop_deployment(deploy_id: str, state: StateDep, caller: DeployAccess) -> DeploymentRead:
    return _request(state, deploy_id, lifecycle.request_stop, caller.name)


@router.post("/{deploy_id}/restart", status_code=status.HTTP_202_ACCEPTED)
def restart_deployment(deploy_id: str, state: StateDep, caller: DeployAccess) -> DeploymentRead:
    return _request(state, deploy_id, lifecycle.request_restart, caller.name)


@router.get(
    "/{deploy_id}/logs", response_class=PlainTextResponse, dependencies=[require_scope("read")]
)
def deployment_logs(
    deploy_id: str, state: StateDep, tail: Annotated[int, Query(ge=1, le=100_000)] = 200
) -> PlainTextResponse:
    """The cell's output: live from the runtime, or what was kept when it stopped."""
    with state.sessions() as session:
        deployment = records.get_deployment(session, deploy_id)
        cell_id = deployment.cell.runtime_id if deployment.cell else None
    if cell_id:
        try:
            return PlainTextResponse(state.runtime.logs(cell_id, tail))
        except Exception:  # the cell went away between the read and now
            log.debug("live logs of %s unavailable", cell_id, exc_info=True)
    kept = cells.saved_log_path(state.settings, deploy_id)
    if kept.exists():
        lines = kept.read_text(errors="replace").splitlines()[-tail:]
        return PlainTextResponse("\n".join(lines) + ("\n" if lines else ""))
    return PlainTextResponse("")


@router.delete(
    "/{deploy_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={202: {"description": "still stopping; the record says how far it got"}},
)
async def delete_deployment(deploy_id: str, state: StateDep, caller: DeployAccess) -> Response:
    """Stop the cell and remove the folder and record (events too: the log keeps who)."""
    read = await anyio.to_thread.run_sync(
        lambda: _request(state, deploy_id, lifecycle.request_delete, caller.name)
    )
    log.info(
        "deployment %s (version %d of %s) deleted by %s",
        deploy_id,
        read.version,
        read.model,
        caller.name,
    )

    def gone() -> bool:
        with state.sessions() as session:
            try:
                records.get_deployment(session, deploy_id)
            except DeploymentNotFound:
                return True
            return False

    if await state.reconciler.wait_for(gone, timeout=DELETE_WAIT_SECONDS):
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    read = await anyio.to_thread.run_sync(
        lambda: records.to_read(records.get_deployment(state.sessions(), deploy_id))
    )
    return JSONResponse(read.model_dump(mode="json"), status_code=status.HTTP_202_ACCEPTED)
