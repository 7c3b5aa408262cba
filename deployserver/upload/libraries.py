"""Checks of the wheels an upload ships under ``libraries/``, made before anything is recorded.

A wheel is opened and its ``METADATA`` read (never installed, never imported): each
``Requires-Dist`` must name a package, not point at a file or URL (pip would fetch and
*build* such a direct reference, running its code), and the wheel's tags must fit the
cell's Python. Anything under ``libraries/`` that is not such a wheel is refused.
"""

from __future__ import annotations

import platform
import zipfile
from collections.abc import Iterable
from email.parser import BytesHeaderParser
from functools import cache
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import (
    InvalidWheelFilename,
    canonicalize_name,
    parse_wheel_filename,
)

from deployserver.errors import InvalidLibrary

LIBRARIES = "libraries"
CELL_PYTHON = (3, 11)
"""The Python of every cell (the cell image's, and the process runtime's)."""
MAX_METADATA_BYTES = 4 * 1024**2
MANYLINUX_GLIBC = (2, 36)
"""The cell image's glibc (Debian bookworm): manylinux wheels up to it run there."""


@cache
def cell_tags(machine: str | None = None) -> frozenset[Tag]:
    """Every wheel tag a cell's interpreter accepts: CPython 3.11 on Linux, this machine."""
    arch = (machine or platform.machine()).lower()
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(arch, arch)
    glibc_max, legacy = MANYLINUX_GLIBC[1], {"x86_64", "i686"}
    platforms = [f"manylinux_2_{minor}_{arch}" for minor in range(glibc_max, 16, -1)]
    platforms.append(f"manylinux2014_{arch}")
    if arch in legacy:
        platforms += [f"manylinux2010_{arch}", f"manylinux1_{arch}"]
    platforms.append(f"linux_{arch}")
    interpreter = f"cp{CELL_PYTHON[0]}{CELL_PYTHON[1]}"
    tags = set(cpython_tags(CELL_PYTHON, abis=[interpreter, "abi3", "none"], platforms=platforms))
    tags.update(compatible_tags(CELL_PYTHON, interpreter=interpreter, platforms=platforms))
    return frozenset(tags)


def check_libraries(tree: Path) -> None:
    """Refuse (422) anything under ``tree/libraries`` but wheels that are safe to install."""
    libs = tree / LIBRARIES
    if not libs.exists():
        return
    if libs.is_symlink() or not libs.is_dir():
        raise InvalidLibrary(f"{LIBRARIES} must be a folder of wheels (.whl files)")
    for path in sorted(libs.rglob("*")):
        rel = path.relative_to(tree).as_posix()
        if path.is_dir() and not path.is_symlink():
            raise InvalidLibrary(
                f"{rel}: {LIBRARIES}/ holds wheels only, no folders; put each .whl directly in it"
            )
        if not path.name.endswith(".whl") or path.is_symlink() or not path.is_file():
            raise InvalidLibrary(
                f"{rel} is not a wheel: {LIBRARIES}/ holds built wheels (.whl) only, "
                "never source archives or other files"
            )
        check_wheel(path, rel)


def check_wheel(path: Path, rel: str) -> None:
    """One wheel: a valid name, tags the cell can run, and only named requirements."""
    try:
        name, _version, _build, tags = parse_wheel_filename(path.name)
    except InvalidWheelFilename as exc:
        raise InvalidLibrary(f"{rel} is not a valid wheel file name: {exc}") from exc
    if not tags & cell_tags():
        wanted = "CPython 3.11 on Linux " + platform.machine()
        found = ", ".join(sorted(str(t) for t in tags))
        raise InvalidLibrary(f"{rel} cannot run in a cell ({wanted}): its tags are {found}")
    for line in _requires_dist(path, rel, name):
        try:
            req = Requirement(line)
        except InvalidRequirement as exc:
            raise InvalidLibrary(f"{rel} has an invalid requirement {line!r}: {exc}") from exc
        if req.url:
            raise InvalidLibrary(
                f"{rel} requires {line!r}: a direct reference (a URL or a file) is not "
                "allowed; ship that package as a wheel under libraries/ or name it from "
                "the package index"
            )


def _requires_dist(path: Path, rel: str, name: str) -> Iterable[str]:
    """The ``Requires-Dist`` lines of the wheel's own ``<name>-<version>.dist-info/METADATA``."""
    try:
        with zipfile.ZipFile(path) as wheel:
            found = [
                info
                for info in wheel.infolist()
                if info.filename.count("/") == 1
                and info.filename.endswith(".dist-info/METADATA")
                and canonicalize_name(info.filename.split("-", 1)[0]) == name
            ]
            if len(found) != 1:
                raise InvalidLibrary(
                    f"{rel} is not a valid wheel: it needs exactly one "
                    f"{name}-<version>.dist-info/METADATA, found {len(found)}"
                )
            if found[0].file_size > MAX_METADATA_BYTES:
                raise InvalidLibrary(f"{rel}: its METADATA is over {MAX_METADATA_BYTES} bytes")
            with wheel.open(found[0]) as fh:
                raw = fh.read(MAX_METADATA_BYTES + 1)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as exc:
        raise InvalidLibrary(f"{rel} is not a readable wheel (zip): {exc}") from exc
    if len(raw) > MAX_METADATA_BYTES:
        raise InvalidLibrary(f"{rel}: its METADATA is over {MAX_METADATA_BYTES} bytes")
    headers = BytesHeaderParser().parsebytes(raw)
    return [str(value).strip() for value in headers.get_all("Requires-Dist") or []]
