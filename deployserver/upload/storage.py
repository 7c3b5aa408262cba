"""Per-deployment folders on disk: safe relative paths, hashed writes, staging, promotion.

An upload is written into a private staging folder and only moved into
``<data>/deployments/<deploy_id>/`` (one rename, same filesystem) once its record is
committed, so a refused or failed upload never leaves a half-written folder behind.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import TracebackType

from deployserver.errors import InvalidUpload

MAX_PATH_BYTES = 1024
"""Longest relative path, in UTF-8 bytes (the data folder's own path comes on top)."""
MAX_COMPONENT_BYTES = 255
"""Longest file or folder name, in UTF-8 bytes: the filesystem's own limit (NAME_MAX)."""
_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# What tarfile makes of bytes that are not UTF-8 (surrogateescape): such a name could be
# written to disk but not stored in the database or sent back as JSON.
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class StoredFile:
    """A file as stored: posix path relative to the deployment folder, size, sha256."""

    path: str
    size: int
    sha256: str


def safe_relpath(name: str, *, what: str = "file name") -> PurePosixPath:
    """Check that ``name`` is a plain relative path that stays inside its folder."""
    if not name:
        raise InvalidUpload(f"empty {what}")
    if len(name) > MAX_PATH_BYTES or len(name.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise InvalidUpload(f"{what} {name[:80]!r}... is longer than {MAX_PATH_BYTES} bytes")
    if _CONTROL.search(name):
        raise InvalidUpload(f"{what} {name!r} contains a NUL or control character")
    if _SURROGATE.search(name):
        raise InvalidUpload(f"{what} {name!r} is not UTF-8")
    if "\\" in name:
        raise InvalidUpload(f"{what} {name!r} contains a backslash; use '/' between folders")
    if _DRIVE.match(name):
        raise InvalidUpload(f"{what} {name!r} starts with a drive letter")
    if name.startswith("/"):
        raise InvalidUpload(f"{what} {name!r} is an absolute path")
    parts = name.rstrip("/").split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise InvalidUpload(f"{what} {name!r} has an empty, '.' or '..' component")
        if len(part.encode("utf-8", "surrogatepass")) > MAX_COMPONENT_BYTES:
            raise InvalidUpload(
                f"{what} {name[:80]!r} has a name over {MAX_COMPONENT_BYTES} bytes (UTF-8)"
            )
    return PurePosixPath(*parts)


PARALLEL_BYTES = 256 * 1024
"""Pieces at least this large are hashed beside their write, not before it."""
_hashers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="upload-hash")


class HashingWriter:
    """Writes one new file (never an existing one, never through a link), hashing as it goes."""

    def __init__(self, root: Path, rel: PurePosixPath) -> None:
        self.rel = rel
        target = root.joinpath(*rel.parts)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            flags = (
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
            )
            self._fd = os.open(target, flags, 0o644)
        except FileExistsError as exc:
            raise InvalidUpload(f"{rel} appears twice, or both as a file and a folder") from exc
        except (NotADirectoryError, IsADirectoryError) as exc:
            raise InvalidUpload(f"{rel} clashes with another file of the upload") from exc
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | memoryview) -> None:
        """Hash and write ``data``; a large piece is hashed in another thread while this
        one writes it (both release the GIL): sha256 alone runs at about disk speed here,
        so one after the other would take twice as long."""
        if len(data) < PARALLEL_BYTES:
            self._hash.update(data)
            self._write_all(data)
        else:
            hashed = _hashers.submit(self._hash.update, data)
            try:
                self._write_all(data)
            finally:
                hashed.result()
        self.size += len(data)

    def _write_all(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def close(self, *, sync: bool = True) -> StoredFile:
        try:
            if sync:
                os.fsync(self._fd)
        finally:
            os.close(self._fd)
        return StoredFile(str(self.rel), self.size, self._hash.hexdigest())

    def abort(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> HashingWriter:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if et is not None:
            self.abort()


def new_staging(staging_root: Path) -> Path:
    """A fresh private folder for one upload in flight."""
    path = staging_root / f"upload-{secrets.token_hex(8)}"
    path.mkdir(mode=0o700, parents=True)
    return path


def discard(path: Path) -> None:
    """Remove a staging or trash folder; missing is fine."""
    shutil.rmtree(path, ignore_errors=True)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def deployment_dir(deployments_root: Path, deploy_id: str) -> Path:
    """The folder of ``deploy_id``; ids are generated by us, checked anyway."""
    if not re.fullmatch(r"[a-z0-9]{8,40}", deploy_id):
        raise ValueError(f"not a deploy_id: {deploy_id!r}")
    return deployments_root / deploy_id


def promote(tree: Path, deployments_root: Path, deploy_id: str) -> Path:
    """Move a staged tree into place as the deployment's folder, atomically."""
    target = deployment_dir(deployments_root, deploy_id)
    tree.chmod(0o755)
    os.rename(tree, target)
    fsync_dir(deployments_root)
    return target


def sweep(staging_root: Path) -> int:
    """Remove everything in staging: uploads and deletions a stopped server left unfinished.
    Only at start-up, before any request: nothing in there is in use then."""
    if not staging_root.is_dir():
        return 0
    entries = list(staging_root.iterdir())
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    return len(entries)


def retire(deployments_root: Path, staging_root: Path, deploy_id: str) -> Path | None:
    """Move a deployment's folder aside (atomically) so it can be deleted at leisure."""
    source = deployment_dir(deployments_root, deploy_id)
    if not source.exists():
        return None
    trash = staging_root / f"trash-{deploy_id}-{secrets.token_hex(4)}"
    os.rename(source, trash)
    return trash
