"""Per-deployment environment images: the cell image plus a deployment's requirements.

Tagged by a hash of the cell image and the checked, normalised requirements (and any
uploaded wheels), so a new version with the same requirements starts with no build at
all. Wheels are downloaded on the host (binary only: no package's setup code ever runs
on the host) and installed with ``--no-index`` in a build that has no network.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from deployserver.images import ImageError, build_image, write_context

if TYPE_CHECKING:
    from docker import DockerClient

ENV_REPOSITORY = "deployserver/env"
CELL_USER = "10001:10001"
PLATFORM_ARGS = (
    "--only-binary=:all:",
    "--implementation",
    "cp",
    "--python-version",
    "3.11",
    "--platform",
    "manylinux2014_x86_64",
    "--platform",
    "manylinux_2_17_x86_64",
    "--platform",
    "manylinux_2_28_x86_64",
    "--platform",
    "linux_x86_64",
)

DOCKERFILE = """\
ARG CELL_IMAGE
FROM ${CELL_IMAGE}
USER root
COPY wheels/ /tmp/env-wheels/
COPY requirements.txt /tmp/env-requirements.txt
RUN /opt/cell/bin/pip install --no-index --no-cache-dir --disable-pip-version-check \\
        --find-links /tmp/env-wheels -r /tmp/env-requirements.txt \\
 && rm -rf /tmp/env-wheels /tmp/env-requirements.txt
USER @CELL_USER@
""".replace("@CELL_USER@", CELL_USER)


def env_image_tag(cell_image_id: str, requirements: Sequence[str], wheels: Sequence[Path]) -> str:
    digest = hashlib.sha256(cell_image_id.encode() + b"\0")
    for req in sorted(requirements):
        digest.update(req.encode() + b"\n")
    for wheel in wheels:
        digest.update(wheel.name.encode() + b"\0" + hashlib.sha256(wheel.read_bytes()).digest())
    return f"{ENV_REPOSITORY}:{digest.hexdigest()[:16]}"


def download_wheels(requirements: Sequence[str], dest: Path, find_links: Sequence[Path]) -> None:
    """Resolve and download binary wheels for the cell's Python on the host."""
    args = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--disable-pip-version-check",
        *PLATFORM_ARGS,
        "--dest",
        str(dest),
    ]
    for folder in find_links:
        args += ["--find-links", str(folder)]
    done = subprocess.run([*args, *requirements], capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise ImageError(f"could not get the requirements' wheels: {done.stderr.strip()[-1500:]}")


def build_env_image(
    client: DockerClient,
    cell_image: str,
    tag: str,
    requirements: Sequence[str],
    wheels: Sequence[Path],
) -> str:
    with tempfile.TemporaryDirectory(prefix="deployserver-env-") as tmp:
        root = Path(tmp)
        wheelhouse = root / "download"
        wheelhouse.mkdir()
        local = root / "local"
        local.mkdir()
        for wheel in wheels:
            (local / wheel.name).write_bytes(wheel.read_bytes())
        in_image = "/tmp/env-wheels"  # noqa: S108 - a path inside the image being built
        download_wheels(
            [*requirements, *(str(local / w.name) for w in wheels)], wheelhouse, [local]
        )
        lines = [*requirements, *(f"{in_image}/{w.name}" for w in wheels)]
        context = write_context(
            root / "context",
            {"Dockerfile": DOCKERFILE.encode(), "requirements.txt": "\n".join(lines).encode()},
            wheelhouse,
        )
        return build_image(client, context, [tag], {"CELL_IMAGE": cell_image})
