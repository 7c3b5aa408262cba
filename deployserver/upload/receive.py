"""receive_upload: stream a multipart upload to staging, check it, record it, move it in place."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
from sqlalchemy.orm import Session, sessionmaker

from deployserver.config import Settings
from deployserver.domain import Activation, DeploymentStatus, DesiredState
from deployserver.errors import InvalidMetadata, InvalidUpload, NoScoringScript, disk_full
from deployserver.schemas import DeploymentRead
from deployserver.store import orm, queries
from deployserver.upload import storage
from deployserver.upload.cellpolicy import check_cell_request
from deployserver.upload.libraries import check_libraries
from deployserver.upload.metadata import DeploymentMetadata, parse_metadata
from deployserver.upload.multipart import MultipartReceiver, boundary_of
from deployserver.upload.requirements import BadRequirement, requirements_of
from deployserver.upload.storage import StoredFile
from deployserver.upload.unpack import UnpackLimits, is_archive, unpack
from serving_cell.batching import BatchingUnsupported, check_contract
from serving_cell.detect import Entrypoint, EntrypointError, detect_entrypoint

log = logging.getLogger("deployserver.upload.receive")


def _settle_files(staging: Path, files: list[StoredFile], settings: Settings) -> list[StoredFile]:
    """The tree's final files: a single archive part is unpacked in place of itself."""
    tree = staging / "tree"
    if len(files) == 1 and is_archive(files[0].path):
        archive = staging / ("archive-" + Path(files[0].path).name)
        (tree / files[0].path).rename(archive)
        for sub in sorted(tree.rglob("*"), reverse=True):  # folders of the archive's path
            sub.rmdir()
        limits = UnpackLimits(
            settings.max_archive_entries,
            settings.max_unpacked_bytes,
            settings.max_compression_ratio,
        )
        files = unpack(archive, tree, limits)
        archive.unlink()
        for stored in files:
            # One sync per file at the end: unpacking wrote them without syncing.
            with open(tree / stored.path, "rb") as fh:
                os.fsync(fh.fileno())
    if not files:
        raise InvalidUpload("the upload has no files; send one or more 'files' parts")
    return sorted(files, key=lambda f: f.path)


def _entrypoint(tree: Path, meta: DeploymentMetadata) -> Entrypoint:
    """The scoring entrypoint; also checks the requirements and wheels now, not at build,
    and that a script asked to take batches is of a contract that can."""
    try:
        requirements_of(tree, meta)
    except BadRequirement as exc:
        raise InvalidMetadata(f"requirements: {exc}") from exc
    check_libraries(tree)
    try:
        entry = detect_entrypoint(tree, meta.entrypoint)
    except EntrypointError as exc:
        raise NoScoringScript(str(exc)) from exc
    if meta.batching is not None and entry.contract != "custom":  # custom: known at load
        try:
            check_contract(entry.contract)
        except BatchingUnsupported as exc:
            raise InvalidMetadata(f"batching: {exc}") from exc
    return entry


def _record(
    sessions: sessionmaker[Session],
    meta: DeploymentMetadata,
    entry: Entrypoint,
    files: list[StoredFile],
    *,
    start: bool,
    actor: str | None,
) -> orm.Deployment:
    with sessions.begin() as session:
        model = queries.next_version(session, meta.model)
        deployment = orm.Deployment(
            deploy_id=queries.new_deploy_id(),
            model_id=model.id,
            version=model.last_version,
            meta=meta.model_dump(mode="json", exclude_none=True),
            entrypoint=str(entry),
            contract=entry.contract,
            status=DeploymentStatus.RECEIVED,
            desired_state=DesiredState.RUNNING if start else DesiredState.STOPPED,
            activation=Activation.NEWER if start else None,
            total_bytes=sum(f.size for f in files),
        )
        session.add(deployment)
        session.flush()
        session.add_all(
            orm.DeploymentFile(
                deployment_seq=deployment.seq, path=f.path, size=f.size, sha256=f.sha256
            )
            for f in files
        )
        queries.add_event(
            session,
            deployment,
            DeploymentStatus.RECEIVED,
            f"version {deployment.version} of {meta.model}: {len(files)} files, "
            f"{deployment.total_bytes} bytes, entrypoint {entry}",
            actor,
        )
        session.flush()
        session.refresh(deployment)
        return deployment


def _forget(sessions: sessionmaker[Session], deploy_id: str) -> None:
    with sessions.begin() as session:
        session.delete(queries.get_deployment(session, deploy_id))


async def receive_upload(
    *,
    settings: Settings,
    sessions: sessionmaker[Session],
    content_type: str | None,
    body: AsyncIterator[bytes],
    start: bool,
    actor: str | None = None,
) -> DeploymentRead:
    """Receive one upload; on any refusal nothing is left on disk or in the database."""
    boundary = boundary_of(content_type)
    staging = storage.new_staging(settings.staging_dir)
    try:
        (staging / "tree").mkdir()
        receiver = MultipartReceiver(
            boundary,
            staging / "tree",
            max_parts=settings.max_upload_parts,
            max_metadata_bytes=settings.max_metadata_bytes,
        )
        received = await receiver.consume(body, max_bytes=settings.max_upload_bytes)
        meta = parse_metadata(received.metadata)
        check_cell_request(meta, settings)
        files = await anyio.to_thread.run_sync(_settle_files, staging, received.files, settings)
        entry = await anyio.to_thread.run_sync(_entrypoint, staging / "tree", meta)
        deployment = await anyio.to_thread.run_sync(
            lambda: _record(sessions, meta, entry, files, start=start, actor=actor)
        )
        try:
            storage.promote(staging / "tree", settings.deployments_dir, deployment.deploy_id)
        except OSError:
            log.exception("could not move upload into place; forgetting its record")
            await anyio.to_thread.run_sync(_forget, sessions, deployment.deploy_id)
            raise
        return await anyio.to_thread.run_sync(lambda: _read(sessions, deployment.deploy_id))
    except OSError as exc:
        full = disk_full(exc)
        if full is None:
            raise
        raise full from exc
    finally:
        storage.discard(staging)


def _read(sessions: sessionmaker[Session], deploy_id: str) -> DeploymentRead:
    with sessions() as session:
        # the uploader holds 'deploy' and has just sent these values anyway
        return queries.to_read(queries.get_deployment(session, deploy_id), reveal_env=True)
