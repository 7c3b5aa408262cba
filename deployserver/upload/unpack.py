"""Safe unpacking of an uploaded .zip, .tar, .tar.gz or .tgz archive.

Only regular files and folders come out. Absolute paths, '..', backslashes, drive
letters, NUL, links and devices are refused, as are archives over the entry count,
the unpacked size (counted as bytes are really written, never from header claims) or
the compression ratio. Archives inside the archive are stored as files, never unpacked.
"""

from __future__ import annotations

import lzma
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from deployserver.errors import DeployServerError, UnsafeArchive, disk_full
from deployserver.upload.storage import HashingWriter, StoredFile, safe_relpath

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
CHUNK = 1024 * 1024
# Below this many unpacked bytes the ratio is not checked: tiny archives of
# repetitive text legitimately compress far better than any bomb threshold.
RATIO_FLOOR_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class UnpackLimits:
    max_entries: int
    max_bytes: int
    max_ratio: float


def is_archive(filename: str) -> bool:
    return filename.lower().endswith(ARCHIVE_SUFFIXES)


class _Budget:
    def __init__(self, archive_size: int, limits: UnpackLimits) -> None:
        self.limits = limits
        self.allowed = min(
            limits.max_bytes, max(int(archive_size * limits.max_ratio), RATIO_FLOOR_BYTES)
        )
        self.written = 0
        self.entries = 0

    def entry(self) -> None:
        self.entries += 1
        if self.entries > self.limits.max_entries:
            raise UnsafeArchive(f"archive has more than {self.limits.max_entries} entries")

    def copy(self, src: IO[bytes], dest: HashingWriter) -> None:
        while chunk := src.read(CHUNK):
            self.written += len(chunk)
            if self.written > self.allowed:
                if self.written > self.limits.max_bytes:
                    raise UnsafeArchive(
                        f"archive unpacks to more than {self.limits.max_bytes} bytes"
                    )
                raise UnsafeArchive(
                    "archive expands more than "
                    f"{self.limits.max_ratio:g} times its size (a compression bomb?)"
                )
            dest.write(chunk)


def _write(root: Path, name: str, src: IO[bytes], budget: _Budget) -> StoredFile:
    rel = safe_relpath(name, what="archive entry")
    with HashingWriter(root, rel) as out:
        budget.copy(src, out)
        return out.close(sync=False)


def _mkdir(root: Path, name: str) -> None:
    rel = safe_relpath(name, what="archive entry")
    try:
        root.joinpath(*rel.parts).mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise UnsafeArchive(f"archive entry {name!r} clashes with a file of the archive") from exc


def _unpack_zip(archive: Path, root: Path, budget: _Budget) -> Iterator[StoredFile]:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            budget.entry()
            kind = stat.S_IFMT(info.external_attr >> 16)
            if info.is_dir():
                _mkdir(root, info.filename)
                continue
            if kind not in (0, stat.S_IFREG):
                raise UnsafeArchive(
                    f"archive entry {info.filename!r} is a link or special file; "
                    "only regular files and folders are accepted"
                )
            if info.flag_bits & 0x1:
                raise UnsafeArchive(f"archive entry {info.filename!r} is encrypted")
            with zf.open(info) as src:
                yield _write(root, info.filename, src, budget)


def _unpack_tar(archive: Path, root: Path, budget: _Budget) -> Iterator[StoredFile]:
    with tarfile.open(archive, mode="r:*") as tf:
        for member in tf:
            budget.entry()
            if member.isdir():
                _mkdir(root, member.name)
                continue
            if not member.isreg():
                what = "link" if member.issym() or member.islnk() else "special file"
                raise UnsafeArchive(
                    f"archive entry {member.name!r} is a {what}; "
                    "only regular files and folders are accepted"
                )
            src = tf.extractfile(member)
            if src is None:  # pragma: no cover - isreg() members always have data
                raise UnsafeArchive(f"archive entry {member.name!r} has no data")
            with src:
                yield _write(root, member.name, src, budget)


def unpack(archive: Path, root: Path, limits: UnpackLimits) -> list[StoredFile]:
    """Unpack ``archive`` into the empty folder ``root``; the files written, hashed."""
    budget = _Budget(archive.stat().st_size, limits)
    name = archive.name.lower()
    try:
        if name.endswith(".zip"):
            files = list(_unpack_zip(archive, root, budget))
        else:
            files = list(_unpack_tar(archive, root, budget))
    except UnsafeArchive:
        raise
    except DeployServerError as exc:
        raise UnsafeArchive(f"refused archive: {exc.message}") from exc
    except (
        zipfile.BadZipFile,
        tarfile.TarError,
        zlib.error,
        lzma.LZMAError,  # tarfile's "r:*" reads xz as well, and lets its errors through
        NotImplementedError,  # zipfile: a compression method or flag it cannot read
        EOFError,
        OSError,
        ValueError,
    ) as exc:
        if disk_full(exc) is not None:
            raise  # our disk, not the archive: a 507, as any full disk is
        raise UnsafeArchive(f"could not read the archive {archive.name}: {exc}") from exc
    if not files:
        raise UnsafeArchive("the archive holds no files")
    return files
