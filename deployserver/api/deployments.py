"""Routes for deployments: upload, read, list, events, delete."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated

import anyio
from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy.orm import Session

from deployserver.api.deps import (
    DeployAccess,
    ReadAccess,
    SessionDep,
    StateDep,
    require_scope,
)
from deployserver.api.openapi import errors
from deployserver.control import cellspec, lifecycle
from deployserver.errors import DeploymentNotFound, UploadTooLarge
from deployserver.schemas import (
    DeploymentList,
    DeploymentRead,
    EventRead,
    ScalingChange,
    Status,
)
from deployserver.state import AppState
from deployserver.store import orm, queries
from deployserver.upload.receive import receive_upload

router = APIRouter(prefix="/api/v1/deployments", tags=["deployments"])
log = logging.getLogger("deployserver.deployments")
DELETE_WAIT_SECONDS = 60.0


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=DeploymentRead,
    responses=errors(400, 408, 413, 415, 507),
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


@router.get("", response_model=DeploymentList)
def list_deployments(
    session: SessionDep,
    caller: ReadAccess,
    model: str | None = None,
    status: Status | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> DeploymentList:
    """Deployments, newest first; pass ``next_cursor`` back as ``cursor`` for the next page."""
    before = queries.decode_cursor(cursor) if cursor else None
    rows = queries.list_deployments(
        session, model=model, status=status, limit=limit + 1, before_seq=before
    )
    page, next_cursor = queries.paginate(rows, limit, lambda d: d.seq)
    reveal = caller.allows("deploy")
    items = [queries.to_read(d, reveal_env=reveal) for d in page]
    return DeploymentList(items=items, next_cursor=next_cursor)


@router.get("/{deploy_id}", response_model=DeploymentRead, response_class=Response)
async def get_deployment(deploy_id: str, state: StateDep, caller: ReadAccess) -> Response:
    """The record, as polled by clients: served from memory until a write changes it.
    Env values only for callers who may deploy (each view cached under its own key)."""
    reveal = caller.allows("deploy")
    key = f"{deploy_id}+env" if reveal else deploy_id  # ids are [a-z0-9]: no clash
    body = state.record_cache.get(key)
    if body is None:
        generation = state.record_cache.generation

        def read() -> bytes:
            with state.sessions() as session:
                found = queries.get_deployment(session, deploy_id)
                record = queries.to_read(found, reveal_env=reveal)
            return record.model_dump_json().encode()

        body = await anyio.to_thread.run_sync(read)
        state.record_cache.put(key, body, generation)
    return Response(body, media_type="application/json")


@router.get(
    "/{deploy_id}/events", response_model=list[EventRead], dependencies=[require_scope("read")]
)
def deployment_events(deploy_id: str, session: SessionDep) -> list[EventRead]:
    return queries.list_events(session, queries.get_deployment(session, deploy_id))


def _request(
    state: AppState,
    deploy_id: str,
    change: Callable[[Session, orm.Deployment, str | None], None],
    actor: str,
) -> DeploymentRead:
    """Record what is wanted (and who wants it), wake the reconciler, answer at once."""
    with state.sessions.begin() as session:
        deployment = queries.get_deployment(session, deploy_id)
        change(session, deployment, actor)
        session.flush()
        read = queries.to_read(deployment, reveal_env=True)  # callers hold 'deploy'
    state.reconciler.wake()
    return read


@router.post(
    "/{deploy_id}/start",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=DeploymentRead,
    responses=errors(s409="the deployment is being deleted"),
)
def start_deployment(deploy_id: str, state: StateDep, caller: DeployAccess) -> DeploymentRead:
    """Ask for the deployment's cell to run (again); a failed one gets a fresh try."""
    return _request(state, deploy_id, lifecycle.request_start, caller.name)


@router.post(
    "/{deploy_id}/stop",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=DeploymentRead,
    responses=errors(s409="the deployment is being deleted"),
)
def stop_deployment(deploy_id: str, state: StateDep, caller: DeployAccess) -> DeploymentRead:
    return _request(state, deploy_id, lifecycle.request_stop, caller.name)


@router.post(
    "/{deploy_id}/restart",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=DeploymentRead,
    responses=errors(s409="the deployment is being deleted"),
)
def restart_deployment(deploy_id: str, state: StateDep, caller: DeployAccess) -> DeploymentRead:
    return _request(state, deploy_id, lifecycle.request_restart, caller.name)


@router.put(
    "/{deploy_id}/scaling",
    response_model=DeploymentRead,
    responses=errors(s409="the deployment is being deleted"),
)
def change_scaling(
    deploy_id: str, body: ScalingChange, state: StateDep, caller: DeployAccess
) -> DeploymentRead:
    """Change how many replicas the deployment runs, live (the fields given change)."""

    def change(session: Session, d: orm.Deployment, actor: str | None) -> None:
        lifecycle.request_scaling(session, d, body, state.settings, actor)

    return _request(state, deploy_id, change, caller.name)


@router.get(
    "/{deploy_id}/logs", response_class=PlainTextResponse, dependencies=[require_scope("read")]
)
def deployment_logs(
    deploy_id: str, state: StateDep, tail: Annotated[int, Query(ge=1, le=100_000)] = 200
) -> PlainTextResponse:
    """The cell's output: live from the runtime, or what was kept when it stopped."""
    with state.sessions() as session:
        deployment = queries.get_deployment(session, deploy_id)
        cell_id = deployment.cell.runtime_id if deployment.cell else None
    if cell_id:
        try:
            return PlainTextResponse(state.runtime.logs(cell_id, tail))
        except Exception:  # the cell went away between the read and now
            log.debug("live logs of %s unavailable", cell_id, exc_info=True)
    kept = cellspec.saved_log_path(state.settings, deploy_id)
    if kept.exists():
        lines = kept.read_text(errors="replace").splitlines()[-tail:]
        return PlainTextResponse("\n".join(lines) + ("\n" if lines else ""))
    return PlainTextResponse("")


@router.delete(
    "/{deploy_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={
        202: {"description": "still stopping; the record says how far it got"},
        **errors(s409="the deployment is being deleted"),
    },
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
                queries.get_deployment(session, deploy_id)
            except DeploymentNotFound:
                return True
            return False

    if await state.reconciler.wait_for(gone, timeout=DELETE_WAIT_SECONDS):
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    read = await anyio.to_thread.run_sync(
        lambda: queries.to_read(
            queries.get_deployment(state.sessions(), deploy_id), reveal_env=True
        )
    )
    return JSONResponse(read.model_dump(mode="json"), status_code=status.HTTP_202_ACCEPTED)
