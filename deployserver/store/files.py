"""Files and folders only the server's user may read: folders 0700, files 0600."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import BinaryIO

FOLDER_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Make ``path`` (and missing parents) a folder only its owner may enter. An existing
    one is tightened too: a data folder from an older server may be 0755."""
    path.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
    path.chmod(FOLDER_MODE)
    return path


def write_private(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path``, mode 0600 from its first byte (never readable by others
    for a moment, as a chmod after writing would leave it)."""
    with open_private(path, append=False) as fh:
        fh.write(data.encode() if isinstance(data, str) else data)


def open_private(path: Path, *, append: bool) -> BinaryIO:
    """``path`` opened for binary writing (truncated, or for appending), mode 0600."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0), FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # an existing file keeps its mode through os.open
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "ab" if append else "wb")


def make_private(path: Path) -> None:
    """Tighten an existing file to 0600; a missing one is fine."""
    with contextlib.suppress(FileNotFoundError):
        path.chmod(FILE_MODE)
