"""Per-deployment environment images: the cell image plus a deployment's requirements.

Tagged by a hash of the cell image and the checked, normalised requirements (and any
uploaded wheels), so a new version with the same requirements starts with no build at
all. Wheels are downloaded on the host by a confined pip (wheels only, an unprivileged
user, a time limit: :mod:`deployserver.runtime.hostpip`) and installed with
``--no-index`` in a build that has no network.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from deployserver.runtime.hostpip import PipFailed, PipSandbox
from deployserver.runtime.images import ImageError, build_image, image_exists, write_context

if TYPE_CHECKING:
    from docker import DockerClient

    from deployserver.config import Settings
    from deployserver.runtime.base import CellSpec

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
        digest.update(wheel.name.encode() + b"\0" + file_digest(wheel))
    return f"{ENV_REPOSITORY}:{digest.hexdigest()[:16]}"


def file_digest(path: Path) -> bytes:
    """The sha256 of a file, read in chunks (wheels can be hundreds of MB)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").digest()


def download_wheels(
    sandbox: PipSandbox, requirements: Sequence[str], wheels: Sequence[Path], dest: Path
) -> None:
    """Resolve and download binary wheels for the cell's Python into ``dest``, with pip
    confined (:mod:`deployserver.runtime.hostpip`); ``wheels`` are the upload's own."""
    with sandbox.workdir() as work:
        local, out = work / "local", work / "download"
        local.mkdir()
        out.mkdir()
        for wheel in wheels:
            shutil.copyfile(wheel, local / wheel.name)
        sandbox.give(work)
        args = ["download", "--quiet", *PLATFORM_ARGS, "--dest", str(out)]
        args += ["--find-links", str(local), *requirements, *(str(local / w.name) for w in wheels)]
        try:
            sandbox.run_pip(args, work)
        except PipFailed as exc:
            raise ImageError(f"could not get the requirements' wheels: {exc}") from exc
        for wheel in out.glob("*.whl"):
            shutil.copyfile(wheel, dest / wheel.name)


def build_env_image(
    client: DockerClient,
    sandbox: PipSandbox,
    cell_image: str,
    tag: str,
    requirements: Sequence[str],
    wheels: Sequence[Path],
) -> str:
    with tempfile.TemporaryDirectory(prefix="deployserver-env-") as tmp:
        root = Path(tmp)
        wheelhouse = root / "download"
        wheelhouse.mkdir()
        in_image = "/tmp/env-wheels"  # noqa: S108 - a path inside the image being built
        download_wheels(sandbox, requirements, wheels, wheelhouse)
        lines = [*requirements, *(f"{in_image}/{w.name}" for w in wheels)]
        context = write_context(
            root / "context",
            {"Dockerfile": DOCKERFILE.encode(), "requirements.txt": "\n".join(lines).encode()},
            wheelhouse,
        )
        return build_image(client, context, [tag], {"CELL_IMAGE": cell_image})


class EnvironmentImages:
    """One engine's environment images: the cell image itself for a deployment with no
    requirements, else the image for its requirements, built once (two versions with
    the same requirements wait for one build)."""

    def __init__(self, client: DockerClient, cell_image: str, settings: Settings) -> None:
        self.client, self.cell_image, self.settings = client, cell_image, settings
        self._lock = threading.Lock()

    def image_for(self, spec: CellSpec) -> str:
        if not spec.requirements and not spec.wheels:
            return self.cell_image
        cell_id = str(self.client.images.get(self.cell_image).id)
        return env_image_tag(cell_id, spec.requirements, spec.wheels)

    def needs_build(self, spec: CellSpec) -> bool:
        image = self.image_for(spec)
        return image != self.cell_image and not image_exists(self.client, image)

    def build(self, spec: CellSpec) -> str:
        """The spec's image, built first when it is missing."""
        image = self.image_for(spec)
        with self._lock:
            if image != self.cell_image and not image_exists(self.client, image):
                sandbox = PipSandbox.from_settings(self.settings)
                build_env_image(
                    self.client, sandbox, self.cell_image, image, spec.requirements, spec.wheels
                )
        return image
