"""Routes for cells themselves: a cell on another node fetches its deployment's files.

``GET /api/v1/cells/{deploy_id}/archive`` answers the deployment's archive (a tar,
``X-Archive-SHA256`` its digest) to the holder of that deployment's cell credential and
to no one else: API tokens, whatever their scopes, are refused here.
"""

from __future__ import annotations

import re

import anyio
from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse

from deployserver.access.cellkeys import cell_key, check_archive_credential
from deployserver.api.deps import BearerDep, Guard, StateDep
from deployserver.errors import DeploymentNotFound
from deployserver.upload import bundle

router = APIRouter(prefix="/api/v1/cells", tags=["cells"])
_DEPLOY_ID = re.compile(r"^[a-z0-9]{8,40}$")


class CellArchiveGuard(Guard):
    """The archive of ``{deploy_id}``: its cells' credential only (no scope opens it)."""

    scope = "cell credential"

    async def __call__(self, deploy_id: str, state: StateDep, token: BearerDep) -> None:
        key = await anyio.to_thread.run_sync(cell_key, state.settings)
        check_archive_credential(key, deploy_id, token)


@router.get(
    "/{deploy_id}/archive",
    response_class=FileResponse,
    dependencies=[Depends(CellArchiveGuard())],
    responses={200: {"content": {"application/x-tar": {}}}},
)
async def get_archive(deploy_id: str, state: StateDep) -> FileResponse:
    """The deployment's files as one tar; its sha256 in ``X-Archive-SHA256``."""
    if not _DEPLOY_ID.match(deploy_id):  # the guard already refused it; say so again
        raise DeploymentNotFound(f"no deployment {deploy_id!r}")
    s = state.settings
    try:
        found = await anyio.to_thread.run_sync(
            bundle.ensure, s.deployments_dir, s.data_dir, deploy_id
        )
    except FileNotFoundError as exc:
        raise DeploymentNotFound(f"deployment {deploy_id} has no files") from exc
    return FileResponse(
        found.path,
        media_type="application/x-tar",
        headers={"X-Archive-SHA256": found.sha256, "Cache-Control": "no-store"},
    )
