"""Container images for serving cells, built offline and named by their content.

An image here is built from a *context*: a fresh folder holding a Dockerfile, the sources
it copies and a ``wheels/`` wheelhouse, so ``pip install --no-index`` needs no network and
the build runs with ``network_mode="none"``. Its tag is a hash of what decides its content,
so an unchanged image is never rebuilt and a changed one gets a new name.

The building blocks (:func:`content_hash`, :func:`write_context`, :func:`build_image`) are
meant for the per-deployment environment images too (``FROM`` the cell image plus the
deployment's wheels, tagged by a hash of its requirements).

Only the standard library is imported at module level: ``scripts/build-cell-image.sh``
runs ``python3 -m deployserver.runtime.images`` for the tag and the build context.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from deployserver.errors import DeployServerError

if TYPE_CHECKING:
    from docker import DockerClient

CELL_REPOSITORY = "deployserver/cell"
"""Repository of the cell images; each is tagged by content hash and the newest ``latest``."""
DEFAULT_BASE_IMAGE = "python:3.11-slim"
"""The preferred base, used when present locally."""
FALLBACK_BASE_IMAGE = "deployserver/base:bookworm"
"""The base made by ``scripts/build-base-image.sh`` where no registry is reachable."""
BASE_IMAGE_ENV = "DEPLOYSERVER_BASE_IMAGE"
"""Environment variable that names the base image explicitly."""
CELL_FILES = ("*.py", "requirements.txt")
"""Patterns (under ``serving_cell/``) of the files that go into the cell image."""
HASH_LENGTH = 16


class ImageError(DeployServerError):
    """An image cannot be found or built; the message says what to run."""

    status_code = 503
    code = "image_unavailable"


def content_hash(files: Mapping[str, bytes]) -> str:
    """A hex digest of ``files`` (name -> bytes), independent of order, dates and modes."""
    digest = hashlib.sha256()
    for name in sorted(files):
        data = files[name]
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()[:HASH_LENGTH]


def cell_root() -> Path:
    """The folder that holds the ``serving_cell`` package (a checkout's root)."""
    import serving_cell

    return Path(serving_cell.__file__).resolve().parent.parent


def cell_sources(repo_root: Path | None = None) -> dict[str, Path]:
    """The cell image's build inputs: context name -> file (Dockerfile and package files)."""
    root = Path(repo_root) if repo_root is not None else cell_root()
    package = root / "serving_cell"
    dockerfile = package / "Dockerfile"
    if not dockerfile.is_file():
        raise ImageError(f"no cell Dockerfile at {dockerfile}: need a deployserver source tree")
    sources = {"Dockerfile": dockerfile}
    for pattern in CELL_FILES:
        for path in package.rglob(pattern):
            if "__pycache__" not in path.parts and path.is_file():
                sources[path.relative_to(root).as_posix()] = path
    return sources


def cell_content_hash(repo_root: Path | None = None) -> str:
    """The hash of the cell's Dockerfile, requirements and package sources."""
    return content_hash({name: path.read_bytes() for name, path in cell_sources(repo_root).items()})


def cell_image_tag(repo_root: Path | None = None) -> str:
    """The cell image reference for these sources, e.g. ``deployserver/cell:3f2a...``."""
    return f"{CELL_REPOSITORY}:{cell_content_hash(repo_root)}"


def write_context(
    dest: Path, files: Mapping[str, Path | bytes], wheelhouse: Path | None = None
) -> Path:
    """Fill the empty folder ``dest`` with ``files`` and the wheels of ``wheelhouse``.

    The wheels land in ``dest/wheels`` (always created, so ``COPY wheels/`` works even
    with none). Raises :class:`ImageError` if ``wheelhouse`` holds no wheel.
    """
    dest = Path(dest)
    for name, source in files.items():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, bytes):
            target.write_bytes(source)
        else:
            shutil.copyfile(source, target)
    wheels_dir = dest / "wheels"
    wheels_dir.mkdir(parents=True, exist_ok=True)
    if wheelhouse is not None:
        wheels = sorted(Path(wheelhouse).glob("*.whl"))
        if not wheels:
            raise ImageError(f"no wheels in {wheelhouse}")
        for wheel in wheels:
            shutil.copyfile(wheel, wheels_dir / wheel.name)
    return dest


def image_exists(client: DockerClient, ref: str) -> bool:
    """Whether the engine has an image named ``ref`` (never pulls)."""
    from docker.errors import ImageNotFound

    try:
        client.images.get(ref)
    except ImageNotFound:
        return False
    return True


def resolve_base_image(client: DockerClient, requested: str | None = None) -> str:
    """The base to build on: ``requested``, else ``$DEPLOYSERVER_BASE_IMAGE``, else
    python:3.11-slim when present locally, else deployserver/base:bookworm.

    Raises :class:`ImageError` naming ``scripts/build-base-image.sh`` if it is missing.
    """
    base = requested or os.environ.get(BASE_IMAGE_ENV)
    if not base:
        base = DEFAULT_BASE_IMAGE if image_exists(client, DEFAULT_BASE_IMAGE) else None
        base = base or FALLBACK_BASE_IMAGE
    if not image_exists(client, base):
        raise ImageError(
            f"base image {base!r} is not present and cannot be pulled: "
            f"run scripts/build-base-image.sh (or set {BASE_IMAGE_ENV} to a local image)"
        )
    return base


def build_image(
    client: DockerClient,
    context: Path,
    tags: Sequence[str],
    buildargs: Mapping[str, str] | None = None,
) -> str:
    """Build ``context``/Dockerfile with no network and tag it ``tags``; returns ``tags[0]``.

    Raises :class:`ImageError` with the end of the build log when the build fails.
    """
    from docker.errors import APIError, BuildError

    try:
        image, _log = client.images.build(
            path=str(context),
            dockerfile="Dockerfile",
            tag=tags[0],
            buildargs=dict(buildargs or {}),
            network_mode="none",
            pull=False,
            rm=True,
            forcerm=True,
        )
    except BuildError as exc:
        lines = [str(item.get("stream") or item.get("error") or "") for item in exc.build_log]
        tail = "".join(lines)[-2000:]
        raise ImageError(f"building {tags[0]} failed: {exc.msg}\n{tail}") from exc
    except APIError as exc:
        raise ImageError(f"building {tags[0]} failed: {exc.explanation or exc}") from exc
    for extra in tags[1:]:
        repository, _, tag = extra.rpartition(":")
        image.tag(repository, tag)
    return tags[0]


def build_cell_image(
    client: DockerClient,
    repo_root: Path | None = None,
    *,
    base_image: str | None = None,
    wheelhouse: Path | None = None,
    tags: Sequence[str] | None = None,
) -> str:
    """Build the cell image unconditionally (layers are cached by the engine).

    ``wheelhouse`` defaults to ``<repo_root>/wheelhouse/cell``; ``tags`` to the content tag
    and ``deployserver/cell:latest``. Returns the first tag.
    """
    root = Path(repo_root) if repo_root is not None else cell_root()
    sources = cell_sources(root)
    base = resolve_base_image(client, base_image)
    wheelhouse = Path(wheelhouse) if wheelhouse is not None else root / "wheelhouse" / "cell"
    if not wheelhouse.is_dir():
        raise ImageError(
            f"no wheelhouse at {wheelhouse}: run scripts/build-cell-image.sh on a machine "
            "with PyPI access (it downloads the wheels and builds the image)"
        )
    digest = content_hash({name: path.read_bytes() for name, path in sources.items()})
    tags = list(tags or (f"{CELL_REPOSITORY}:{digest}", f"{CELL_REPOSITORY}:latest"))
    with tempfile.TemporaryDirectory(prefix="deployserver-cell-") as tmp:
        context = write_context(Path(tmp), sources, wheelhouse)
        return build_image(client, context, tags, {"BASE_IMAGE": base, "CONTENT_HASH": digest})


def ensure_cell_image(
    client: DockerClient,
    repo_root: Path | None = None,
    *,
    base_image: str | None = None,
    wheelhouse: Path | None = None,
) -> str:
    """The cell image's content tag, building the image first if the engine lacks it."""
    tag = cell_image_tag(repo_root)
    if image_exists(client, tag):
        return tag
    return build_cell_image(client, repo_root, base_image=base_image, wheelhouse=wheelhouse)


def main(argv: list[str] | None = None) -> int:
    """``python -m deployserver.runtime.images cell-tag | cell-context DEST --wheelhouse DIR``."""
    parser = argparse.ArgumentParser(prog="python -m deployserver.runtime.images")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("cell-tag", help="print the cell image's content tag")
    ctx = sub.add_parser("cell-context", help="write the cell image's build context")
    ctx.add_argument("dest", type=Path, help="an empty folder")
    ctx.add_argument("--wheelhouse", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "cell-tag":
            print(cell_image_tag())
        else:
            write_context(args.dest, cell_sources(), args.wheelhouse)
    except ImageError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
