"""The Docker runtime: each cell is a hardened, labelled container of the cell image.

Cells run as the image's non-root user with a read-only root filesystem, a small
tmpfs, no capabilities, no-new-privileges and memory/CPU/pids limits; the model folder
is mounted read-only at /mnt/models, and the cell's port is published on 127.0.0.1
only. Nothing from metadata reaches privileged options, host mounts or host networking.
Only containers labelled with this server's instance are ever listed or touched.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from typing import Any

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.models.containers import Container

from deployserver import environments, images
from deployserver.cells import memory_bytes
from deployserver.config import Settings
from deployserver.runtime.base import (
    LABEL_DEPLOY_ID,
    LABEL_INSTANCE,
    LABEL_MANAGED,
    LABEL_MODEL,
    LABEL_VERSION,
    CellInfo,
    CellSpec,
    CellStartError,
    RuntimeUnavailable,
)

log = logging.getLogger("deployserver.runtime.docker")
_EXITED = re.compile(r"^Exited \((-?\d+)\)")
NAME = "docker"
MODEL_MOUNT = "/mnt/models"


def container_options(settings: Settings, spec: CellSpec) -> dict[str, Any]:
    """``containers.run`` options of a cell: command, environment, the read-only model
    mount, the loopback port and the hardening, whatever the metadata says (the image,
    name and labels are the caller's). The benchmarks run bare containers with these."""
    port = settings.cell_port
    env = {
        **spec.env,
        "DEPLOYSERVER_CELL_METADATA": json.dumps(spec.metadata),
        "DEPLOYSERVER_DEPLOY_ID": spec.deploy_id,
    }
    command = ["--model-dir", MODEL_MOUNT, "--port", str(port), "--host", "0.0.0.0"]
    if spec.metadata.get("entrypoint"):
        command += ["--entrypoint", str(spec.metadata["entrypoint"])]
    return {
        "command": command,
        "environment": env,
        "volumes": {str(spec.model_dir): {"bind": MODEL_MOUNT, "mode": "ro"}},
        "ports": {f"{port}/tcp": ("127.0.0.1", None)},
        "read_only": True,
        "tmpfs": {"/tmp": "rw,noexec,nosuid,nodev,size=256m"},  # noqa: S108 - in the cell
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "mem_limit": memory_bytes(spec.memory or settings.default_memory),
        "nano_cpus": int((spec.cpus or settings.default_cpus) * 1e9),
        "pids_limit": settings.pids_limit,
        "init": True,
        "restart_policy": {"Name": "no"},
        "privileged": False,
    }


class DockerRuntime:
    name = NAME

    def __init__(self, settings: Settings, instance: str) -> None:
        self.settings = settings
        self.instance = instance
        try:
            self.client = docker.from_env(timeout=120)
            self.client.ping()
        except DockerException as exc:
            raise RuntimeUnavailable(f"the Docker Engine is not reachable ({exc})") from exc
        self.cell_image = self._cell_image()
        self._build_lock = threading.Lock()

    def _cell_image(self) -> str:
        configured = self.settings.cell_image
        if configured and configured != "deployserver/cell:latest":
            if not images.image_exists(self.client, configured):
                raise RuntimeUnavailable(f"cell image {configured!r} is not present")
            return configured
        tag = images.cell_image_tag()
        if not images.image_exists(self.client, tag):
            log.info("building the cell image %s (first start only; about a minute)", tag)
            try:
                tag = images.ensure_cell_image(self.client)
            except images.ImageError as exc:
                raise RuntimeUnavailable(exc.message) from exc
        return tag

    def describe(self) -> str:
        version = self.client.version().get("Version", "?")
        return f"docker runtime: Docker Engine {version}, cell image {self.cell_image}"

    # environments -----------------------------------------------------------------
    def _image_for(self, spec: CellSpec) -> str:
        if not spec.requirements and not spec.wheels:
            return self.cell_image
        cell_id = self.client.images.get(self.cell_image).id
        return environments.env_image_tag(cell_id, spec.requirements, spec.wheels)

    def needs_build(self, spec: CellSpec) -> bool:
        image = self._image_for(spec)
        return image != self.cell_image and not images.image_exists(self.client, image)

    def prepare(self, spec: CellSpec) -> None:
        image = self._image_for(spec)
        with self._build_lock:  # two versions with the same requirements build once
            if image == self.cell_image or images.image_exists(self.client, image):
                return
            environments.build_env_image(
                self.client, self.cell_image, image, spec.requirements, spec.wheels
            )

    # cells ------------------------------------------------------------------------
    def start(self, spec: CellSpec) -> CellInfo:
        try:
            container: Container = self.client.containers.run(
                self._image_for(spec),
                detach=True,
                name=f"ds-{spec.model[:40]}-v{spec.version}-{spec.deploy_id[-8:]}-"
                f"{self.instance[:4]}",
                labels={
                    LABEL_MANAGED: "1",
                    LABEL_INSTANCE: self.instance,
                    LABEL_DEPLOY_ID: spec.deploy_id,
                    LABEL_MODEL: spec.model,
                    LABEL_VERSION: str(spec.version),
                },
                **container_options(self.settings, spec),
            )
        except ImageNotFound as exc:
            raise CellStartError(f"image missing: {exc.explanation}") from exc
        except APIError as exc:
            raise CellStartError(str(exc.explanation or exc)) from exc
        container.reload()
        return self._info(container)

    def _info(self, container: Container) -> CellInfo:
        labels = container.labels
        url = None
        bindings = (container.attrs.get("NetworkSettings") or {}).get("Ports") or {}
        for binding in bindings.get(f"{self.settings.cell_port}/tcp") or []:
            if binding.get("HostIp") in ("127.0.0.1", "0.0.0.0", ""):
                url = f"http://127.0.0.1:{binding['HostPort']}"
                break
        state = container.attrs.get("State") or {}
        running = state.get("Status") == "running"
        exit_code = None if running else state.get("ExitCode")
        return CellInfo(
            NAME, container.id, labels.get(LABEL_DEPLOY_ID, ""), url, running, exit_code
        )

    def _mine(self, container: Container) -> bool:
        return container.labels.get(LABEL_INSTANCE) == self.instance

    def inspect(self, cell_id: str) -> CellInfo | None:
        try:
            container = self.client.containers.get(cell_id)
        except NotFound:
            return None
        return self._info(container) if self._mine(container) else None

    def list_cells(self) -> list[CellInfo]:
        """One list call (no per-container fetch, so no race with a removal under way)."""
        rows = self.client.api.containers(
            all=True, filters={"label": [f"{LABEL_MANAGED}=1", f"{LABEL_INSTANCE}={self.instance}"]}
        )
        found = []
        for row in rows:
            url = None
            for port in row.get("Ports") or []:
                if port.get("PrivatePort") == self.settings.cell_port and port.get("PublicPort"):
                    url = f"http://127.0.0.1:{port['PublicPort']}"
                    break
            running = row.get("State") == "running"
            exit_code = None
            match = _EXITED.match(row.get("Status") or "")
            if not running and match:
                exit_code = int(match.group(1))
            deploy_id = (row.get("Labels") or {}).get(LABEL_DEPLOY_ID, "")
            found.append(CellInfo(NAME, row["Id"], deploy_id, url, running, exit_code))
        return found

    def stop(self, cell_id: str, timeout: float = 10.0) -> None:
        try:
            container = self.client.containers.get(cell_id)
        except NotFound:
            return
        if not self._mine(container):
            raise PermissionError(f"container {cell_id[:12]} is not a cell of this server")
        try:
            container.stop(timeout=int(timeout))
            container.remove(force=True)
        except NotFound:
            pass
        except APIError as exc:
            if exc.status_code != 409:  # 409: its removal is already under way
                raise

    def logs(self, cell_id: str, tail: int = 100) -> str:
        try:
            container = self.client.containers.get(cell_id)
        except NotFound as exc:
            raise LookupError(f"no cell {cell_id}") from exc
        if not self._mine(container):
            raise LookupError(f"no cell {cell_id}")
        return container.logs(tail=tail).decode("utf-8", "replace")  # type: ignore[no-any-return]
