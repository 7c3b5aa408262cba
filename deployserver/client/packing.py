"""What a push sends: the folder's metadata and deployable files, as a streamed multipart body.

A package is a folder with ``metadata.json``. Its files are every file under the folder
minus what ``.deployignore`` (gitignore syntax) excludes or, when the metadata lists
``files`` (gitignore-style patterns too), exactly the files those patterns match. The
metadata file, ``.deployignore``, ``.git/`` and ``__pycache__/`` are never packed.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pathspec

METADATA_FILE = "metadata.json"
IGNORE_FILE = ".deployignore"
NEVER_PACKED_FILES = frozenset({METADATA_FILE, IGNORE_FILE})
NEVER_PACKED_DIRS = frozenset({".git", "__pycache__"})
CHUNK = 1024 * 1024

Progress = Callable[[int, int], None]
"""Called as ``progress(bytes_sent, bytes_total)`` while a body streams."""


class PackageError(ValueError):
    """The folder cannot be packed: no or bad metadata, no files, a name we cannot send."""


@dataclass(frozen=True)
class PackedFile:
    """One file to send: its relative posix path (the part's filename), source and size."""

    path: str
    source: Path
    size: int


@dataclass(frozen=True)
class Package:
    """A folder ready to push: the metadata to send and the files, sorted by path."""

    folder: Path
    metadata: dict[str, Any]
    files: list[PackedFile]

    @property
    def model(self) -> str:
        return str(self.metadata["model"])

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def _spec(lines: list[str]) -> pathspec.GitIgnoreSpec:
    return pathspec.GitIgnoreSpec.from_lines(lines)


def _walk(folder: Path) -> Iterator[tuple[str, Path]]:
    """(relative posix path, path) of every regular file, never entering skipped folders."""
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in NEVER_PACKED_DIRS)
        rel_root = Path(root).relative_to(folder)
        for name in sorted(names):
            source = Path(root) / name
            rel = (rel_root / name).as_posix()
            if rel in NEVER_PACKED_FILES or not source.is_file():
                continue
            yield rel, source


def read_metadata(folder: Path) -> dict[str, Any]:
    """The folder's ``metadata.json`` as an object; PackageError when missing or not JSON."""
    path = folder / METADATA_FILE
    if not folder.is_dir():
        raise PackageError(f"{folder} is not a folder")
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PackageError(f"{path} is missing: every package needs one") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PackageError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(metadata, dict):
        raise PackageError(f"{path} must hold a JSON object")
    return metadata


def _selector(folder: Path, metadata: dict[str, Any]) -> Callable[[str], bool]:
    """Which relative paths to pack: the ``files`` patterns, else not ``.deployignore``d."""
    globs = metadata.get("files")
    if globs is not None:
        if not isinstance(globs, list) or not all(isinstance(g, str) for g in globs):
            raise PackageError(f"'files' in {METADATA_FILE} must be a list of patterns")
        wanted = _spec(globs)
        return wanted.match_file
    ignore_file = folder / IGNORE_FILE
    lines = ignore_file.read_text(encoding="utf-8").splitlines() if ignore_file.exists() else []
    ignored = _spec(lines)
    return lambda rel: not ignored.match_file(rel)


def pack(folder: Path | str, model: str | None = None) -> Package:
    """The package in ``folder``; ``model`` overrides the metadata's model name."""
    folder = Path(folder)
    metadata = read_metadata(folder)
    if model is not None:
        metadata["model"] = model
    if not isinstance(metadata.get("model"), str) or not metadata["model"]:
        raise PackageError(f"{METADATA_FILE} names no 'model': add one or pass --model")
    selected = _selector(folder, metadata)
    files = []
    for rel, source in _walk(folder):
        if not selected(rel):
            continue
        if any(c in rel for c in '"\r\n'):
            raise PackageError(f"cannot send a file named {rel!r}: rename it or ignore it")
        files.append(PackedFile(rel, source, source.stat().st_size))
    if not files:
        raise PackageError(f"nothing to pack in {folder}: every file is ignored or unmatched")
    return Package(folder, metadata, sorted(files, key=lambda f: f.path))


class MultipartBody:
    """``package`` as a ``multipart/form-data`` body read from disk chunk by chunk, with its
    exact length known in advance (so the server can refuse an oversize upload at once)."""

    def __init__(self, package: Package, progress: Progress | None = None) -> None:
        self.package = package
        self.progress = progress
        self.boundary = f"deployserver-{secrets.token_hex(16)}"
        self._metadata = json.dumps(package.metadata).encode()
        self.length = sum(len(h) for h in self._heads()) + len(self._metadata)
        self.length += package.total_bytes + len(self._tail)

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    @property
    def _tail(self) -> bytes:
        return f"\r\n--{self.boundary}--\r\n".encode()

    def _head(self, name: str, filename: str, content_type: str, first: bool) -> bytes:
        lead = "" if first else "\r\n"
        return (
            f'{lead}--{self.boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{filename}"\r\nContent-Type: {content_type}\r\n\r\n'
        ).encode()

    def _heads(self) -> list[bytes]:
        heads = [self._head("metadata", METADATA_FILE, "application/json", True)]
        for f in self.package.files:
            heads.append(self._head("files", f.path, "application/octet-stream", False))
        return heads

    def __iter__(self) -> Iterator[bytes]:
        sent = 0

        def step(data: bytes) -> bytes:
            nonlocal sent
            sent += len(data)
            if self.progress is not None:
                self.progress(sent, self.length)
            return data

        heads = self._heads()
        yield step(heads[0] + self._metadata)
        for head, f in zip(heads[1:], self.package.files, strict=True):
            yield step(head)
            left = f.size
            with f.source.open("rb") as fh:
                while left > 0:
                    data = fh.read(min(CHUNK, left))
                    if not data:
                        raise PackageError(f"{f.path} shrank while it was being sent")
                    left -= len(data)
                    yield step(data)
        yield step(self._tail)
