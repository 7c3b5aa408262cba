"""The cell archive: a deployment's files for cells on other nodes, to its own cells only."""

from __future__ import annotations

import hashlib
import io
import tarfile

import httpx

from deployserver.access.cellkeys import archive_credential, cell_key
from deployserver.config import Settings
from tests.helpers import ADMIN_TOKEN, bearer, multipart, package_files, wait_for_status


def _upload(api: httpx.Client, model: str) -> str:
    resp = api.post("/api/v1/deployments", files=multipart({"model": model}, package_files()))
    assert resp.status_code == 202, resp.text
    deploy_id: str = resp.json()["deploy_id"]
    wait_for_status(api, deploy_id, "ready")
    return deploy_id


def _url(deploy_id: str) -> str:
    return f"/api/v1/cells/{deploy_id}/archive"


def _error(resp: httpx.Response, status: int, code: str) -> str:
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error["code"] == code, error
    return str(error["message"])


def test_a_cell_fetches_its_own_deployment_s_files(
    api: httpx.Client, anon: httpx.Client, settings: Settings
) -> None:
    deploy_id = _upload(api, "fetched")
    credential = archive_credential(cell_key(settings), deploy_id)
    resp = anon.get(_url(deploy_id), headers=bearer(credential))
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/x-tar"
    assert resp.headers["x-archive-sha256"] == hashlib.sha256(resp.content).hexdigest()
    with tarfile.open(fileobj=io.BytesIO(resp.content)) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]
        owners = {(m.uid, m.gid, m.mtime) for m in tar}
    assert files == package_files()
    assert owners == {(0, 0, 0)}
    again = anon.get(_url(deploy_id), headers=bearer(credential))
    assert again.content == resp.content  # the same bytes, so the same sha256


def test_the_archive_refuses_tokens_forgeries_and_other_deployments(
    api: httpx.Client, anon: httpx.Client, settings: Settings
) -> None:
    mine, other = _upload(api, "mine"), _upload(api, "other")
    key = cell_key(settings)
    assert "cell credential" in _error(anon.get(_url(mine)), 401, "not_authenticated")
    # an API token, even the admin's, opens no archive
    _error(anon.get(_url(mine), headers=bearer(ADMIN_TOKEN)), 401, "not_authenticated")
    forged = archive_credential(b"another server's key", mine)
    _error(anon.get(_url(mine), headers=bearer(forged)), 401, "not_authenticated")
    theirs = archive_credential(key, other)
    message = _error(anon.get(_url(mine), headers=bearer(theirs)), 403, "permission_denied")
    assert "another deployment" in message
    # a credential of the path's own (made-up) id, of a deployment with no files: 404
    ghost = "a" * 12
    resp = anon.get(_url(ghost), headers=bearer(archive_credential(key, ghost)))
    _error(resp, 404, "deployment_not_found")
    # names that are no deployment id never reach the disk
    for bad in ("..%2F..%2Fadmin-token", "UPPER12345", "a" * 41):
        resp = anon.get(_url(bad), headers=bearer(archive_credential(key, other)))
        assert resp.status_code in (401, 403, 404), resp.text
        codes = {"not_authenticated", "permission_denied", "not_found"}
        assert resp.json()["error"]["code"] in codes


def test_a_deleted_deployment_s_archive_is_gone(
    api: httpx.Client, anon: httpx.Client, settings: Settings
) -> None:
    deploy_id = _upload(api, "gone")
    credential = archive_credential(cell_key(settings), deploy_id)
    assert anon.get(_url(deploy_id), headers=bearer(credential)).status_code == 200
    assert (settings.data_dir / "archives" / f"{deploy_id}.tar").exists()
    assert api.delete(f"/api/v1/deployments/{deploy_id}").status_code == 204

    def gone() -> bool:
        return not (settings.data_dir / "archives" / f"{deploy_id}.tar").exists()

    from tests.helpers import eventually

    eventually(gone, what="the archive removed with its deployment")
    _error(anon.get(_url(deploy_id), headers=bearer(credential)), 404, "deployment_not_found")
