"""The Docker runtime: each cell is a hardened, labelled container of the cell image.

Cells run as the image's non-root user with a read-only root filesystem, a small
tmpfs, no capabilities, no-new-privileges, memory/CPU/pids limits and a capped log; the
model folder is mounted read-only at /mnt/models. Each cell sits alone on a network of
its own (``cellnet``), where the server reaches it by its address: no port is published.
Nothing from metadata reaches privileged options, host mounts or host networking.
Only containers labelled with this server's instance are ever listed or touched.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from typing import Any

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.models.containers import Container

from deployserver.config import Settings
from deployserver.runtime import environments, images
from deployserver.runtime.base import (
    LABEL_DEPLOY_ID,
    LABEL_GRPC_PORT,
    LABEL_INSTANCE,
    LABEL_MANAGED,
    LABEL_MODEL,
    LABEL_VERSION,
    CellInfo,
    CellSpec,
    CellStartError,
    RuntimeUnavailable,
    memory_bytes,
)
from deployserver.runtime.cellnet import CellNetworks, cell_address

log = logging.getLogger("deployserver.runtime.docker")
_EXITED = re.compile(r"^Exited \((-?\d+)\)")
NAME = "docker"
MODEL_MOUNT = "/mnt/models"


def container_options(settings: Settings, spec: CellSpec) -> dict[str, Any]:
    """``containers.run`` options of a cell: command, environment, the read-only model
    mount, the log cap and the hardening, whatever the metadata says (the image, name,
    labels and network are the caller's). The benchmarks run bare containers with these."""
    port = settings.cell_port
    env = {
        **spec.env,
        "DEPLOYSERVER_CELL_METADATA": json.dumps(spec.metadata),
        "DEPLOYSERVER_DEPLOY_ID": spec.deploy_id,
    }
    command = ["--model-dir", MODEL_MOUNT, "--port", str(port), "--host", "0.0.0.0"]
    command += ["--grpc-port", str(settings.cell_grpc_port)]
    if spec.explicit_entrypoint:
        command += ["--entrypoint", spec.explicit_entrypoint]
    return {
        "command": command,
        "environment": env,
        "volumes": {str(spec.model_dir): {"bind": MODEL_MOUNT, "mode": "ro"}},
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
        # json-file rotates: a cell printing without end fills no disk
        "log_config": {
            "type": "json-file",
            "config": {
                "max-size": str(settings.cell_log_max_bytes),
                "max-file": str(settings.cell_log_files),
            },
        },
    }


def _grpc_address(address: str | None, labels: dict[str, str]) -> str | None:
    """Where the server reaches the cell's gRPC service: its address on the cell's network
    and the port its label records (the settings may have changed since it started)."""
    port = labels.get(LABEL_GRPC_PORT)
    return f"{address}:{port}" if address and port else None


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
        self.envs = environments.EnvironmentImages(self.client, self.cell_image, settings)
        self.networks = CellNetworks(
            self.client, instance, settings.cell_subnets, settings.server_container
        )

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
        return (
            f"docker runtime: Docker Engine {version}, cell image {self.cell_image}, "
            + self.networks.describe()
        )

    # environments -----------------------------------------------------------------
    def needs_build(self, spec: CellSpec) -> bool:
        return self.envs.needs_build(spec)

    def prepare(self, spec: CellSpec) -> None:
        self.envs.build(spec)

    # cells ------------------------------------------------------------------------
    def start(self, spec: CellSpec) -> CellInfo:
        # one name per replica: a few random characters tell a deployment's cells apart
        name = (
            f"ds-{spec.model[:40]}-v{spec.version}-{spec.deploy_id[-8:]}-{self.instance[:4]}"
            f"-{secrets.token_hex(3)}"
        )
        try:
            with self.networks.creating(name, spec.deploy_id, egress=spec.egress) as network:
                container: Container = self.client.containers.create(
                    self.envs.image_for(spec),
                    name=name,
                    network=network,
                    labels={
                        LABEL_MANAGED: "1",
                        LABEL_INSTANCE: self.instance,
                        LABEL_DEPLOY_ID: spec.deploy_id,
                        LABEL_MODEL: spec.model,
                        LABEL_VERSION: str(spec.version),
                        # what the cell serves gRPC on: cells made before have no label
                        LABEL_GRPC_PORT: str(self.settings.cell_grpc_port),
                    },
                    **container_options(self.settings, spec),
                )
        except ImageNotFound as exc:
            raise CellStartError(f"image missing: {exc.explanation}") from exc
        except APIError as exc:
            raise CellStartError(str(exc.explanation or exc)) from exc
        try:
            container.start()
        except APIError as exc:
            self._remove(container)
            raise CellStartError(str(exc.explanation or exc)) from exc
        container.reload()
        return self._info(container)

    def _info(self, container: Container) -> CellInfo:
        labels = container.labels
        networks = (container.attrs.get("NetworkSettings") or {}).get("Networks")
        address = cell_address(networks, str(container.name))
        state = container.attrs.get("State") or {}
        paused = state.get("Status") == "paused"
        running = state.get("Status") == "running" or paused
        exit_code = None if running else state.get("ExitCode")
        deploy_id = labels.get(LABEL_DEPLOY_ID, "")
        url, grpc = self._url(address), _grpc_address(address, labels)
        cell_id = str(container.id)
        return CellInfo(NAME, cell_id, deploy_id, url, running, exit_code, grpc, paused)

    def _url(self, address: str | None) -> str | None:
        return f"http://{address}:{self.settings.cell_port}" if address else None

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
            name = (row.get("Names") or ["/"])[0].lstrip("/")
            networks = (row.get("NetworkSettings") or {}).get("Networks")
            address = cell_address(networks, name)
            paused = row.get("State") == "paused"
            running = row.get("State") == "running" or paused
            exit_code = None
            match = _EXITED.match(row.get("Status") or "")
            if not running and match:
                exit_code = int(match.group(1))
            labels = row.get("Labels") or {}
            url, grpc = self._url(address), _grpc_address(address, labels)
            deploy_id = labels.get(LABEL_DEPLOY_ID, "")
            info = CellInfo(NAME, row["Id"], deploy_id, url, running, exit_code, grpc, paused)
            found.append(info)
        return found

    def node(self) -> str:
        return str(self.client.info().get("Name") or "docker")

    def _own(self, cell_id: str) -> Container:
        try:
            container = self.client.containers.get(cell_id)
        except NotFound as exc:
            raise LookupError(f"no cell {cell_id}") from exc
        if not self._mine(container):
            raise LookupError(f"no cell {cell_id}")
        return container

    def pause(self, cell_id: str) -> None:
        try:
            self._own(cell_id).pause()
        except APIError as exc:
            if exc.status_code != 409:  # 409: already paused
                raise

    def resume(self, cell_id: str) -> None:
        # the low-level call: no inspect first, a wake is on the data path
        try:
            self.client.api.unpause(cell_id)
        except NotFound as exc:
            raise LookupError(f"no cell {cell_id}") from exc
        except APIError as exc:
            if exc.status_code != 409:  # 409: not paused (already woken)
                raise

    def stop(self, cell_id: str, timeout: float = 10.0) -> None:
        """Stop and remove the cell, then its network (a cell already gone: whatever
        networks of ours lost their cell)."""
        try:
            container = self.client.containers.get(cell_id)
        except NotFound:
            self.networks.sweep()
            return
        if not self._mine(container):
            raise PermissionError(f"container {cell_id[:12]} is not a cell of this server")
        self._remove(container, timeout)

    def _remove(self, container: Container, timeout: float = 0) -> None:
        try:
            if timeout:
                container.stop(timeout=int(timeout))
            container.remove(force=True)
        except NotFound:
            pass
        except APIError as exc:
            if exc.status_code != 409:  # 409: its removal is already under way
                raise
        networks = (container.attrs.get("NetworkSettings") or {}).get("Networks") or {}
        self.networks.remove([str(container.name), *networks])

    def successor(self, cell_id: str) -> CellInfo | None:
        """The control plane restarts this runtime's cells: never one of its own."""
        return None

    def close(self) -> None:
        self.networks.close()

    def logs(self, cell_id: str, tail: int = 100) -> str:
        try:
            container = self.client.containers.get(cell_id)
        except NotFound as exc:
            raise LookupError(f"no cell {cell_id}") from exc
        if not self._mine(container):
            raise LookupError(f"no cell {cell_id}")
        return bytes(container.logs(tail=tail)).decode("utf-8", "replace")
