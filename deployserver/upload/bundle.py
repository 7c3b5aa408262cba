"""A deployment's files as one archive, for cells on nodes that do not share our disk.

The archive is a plain tar of the deployment's folder, made the same way every time
(names sorted, owner 0, modes 0644/0755, no dates), kept once made under
``<data_dir>/archives/<deploy_id>.tar`` beside its sha256, which the runtime hands each
cell so that it checks what it fetched. Only regular files and folders go in.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import tarfile
import threading
from dataclasses import dataclass
from pathlib import Path

from deployserver.store.files import private_dir
from deployserver.upload import storage

_lock = threading.Lock()
CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Bundle:
    path: Path
    sha256: str
    size: int


def archives_dir(data_dir: Path) -> Path:
    return data_dir / "archives"


def _paths(data_dir: Path, deploy_id: str) -> tuple[Path, Path]:
    storage.deployment_dir(data_dir, deploy_id)  # checks the id
    folder = archives_dir(data_dir)
    return folder / f"{deploy_id}.tar", folder / f"{deploy_id}.sha256"


def _entries(root: Path) -> list[Path]:
    """Every folder and regular file under ``root``, sorted; symlinks are left out."""
    found: list[Path] = []
    for current, dirs, files in os.walk(root, followlinks=False):
        here = Path(current)
        dirs[:] = sorted(d for d in dirs if not (here / d).is_symlink())
        for name in [*dirs, *files]:
            path = here / name
            if path.is_symlink() or not (path.is_dir() or path.is_file()):
                continue
            found.append(path)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _write(root: Path, target: Path) -> None:
    with tarfile.open(target, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in _entries(root):
            info = tar.gettarinfo(str(path), arcname=path.relative_to(root).as_posix())
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            info.mode = 0o755 if info.isdir() else 0o644
            info.pax_headers = {}
            if info.isdir():
                tar.addfile(info)
            else:
                with path.open("rb") as fh:
                    tar.addfile(info, fh)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def ensure(deployments_dir: Path, data_dir: Path, deploy_id: str) -> Bundle:
    """The deployment's archive, made now if it is not yet; FileNotFoundError when the
    deployment has no folder (deleted, or never uploaded)."""
    source = storage.deployment_dir(deployments_dir, deploy_id)
    tar_path, sum_path = _paths(data_dir, deploy_id)
    with _lock:
        if not source.is_dir():
            raise FileNotFoundError(f"deployment {deploy_id} has no files")
        if tar_path.exists() and sum_path.exists():
            return Bundle(tar_path, sum_path.read_text().strip(), tar_path.stat().st_size)
        private_dir(tar_path.parent)
        tmp = tar_path.with_name(f".{deploy_id}.{secrets.token_hex(4)}.tmp")
        try:
            _write(source, tmp)
            sha = file_sha256(tmp)
            sum_tmp = tmp.with_suffix(".sum")
            sum_tmp.write_text(sha + "\n")
            os.replace(tmp, tar_path)
            os.replace(sum_tmp, sum_path)
        finally:
            tmp.unlink(missing_ok=True)
            tmp.with_suffix(".sum").unlink(missing_ok=True)
        return Bundle(tar_path, sha, tar_path.stat().st_size)


def remove(data_dir: Path, deploy_id: str) -> None:
    """Forget a deleted deployment's archive."""
    with _lock:
        for path in _paths(data_dir, deploy_id):
            path.unlink(missing_ok=True)
