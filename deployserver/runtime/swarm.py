"""The Swarm runtime: each deployment a Swarm service, each of its tasks a cell.

The server runs on a manager (the local engine) attached to an overlay network of its own
(attachable, ``internal``: no way out), and reaches every task directly by its address
there; Swarm places the replicas (as many as the control plane asks) and reschedules
them when a node is drained or lost. A task's cell fetches its deployment's files from
the server at start (:mod:`serving_cell.fetch`) with a credential handed to that
deployment's tasks only, as a Swarm secret. Images come from ``DEPLOYSERVER_REGISTRY``,
pinned by digest. Only services labelled with this server's instance are touched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections import defaultdict
from typing import Any

import docker
from docker.errors import APIError, DockerException, NotFound

from deployserver.access.cellkeys import archive_credential, cell_key
from deployserver.config import Settings
from deployserver.runtime import environments, images, swarmsecrets, swarmspec
from deployserver.runtime.base import (
    LABEL_DEPLOY_ID,
    LABEL_GRPC_PORT,
    LABEL_INSTANCE,
    LABEL_MANAGED,
    CellInfo,
    CellSpec,
    CellStartError,
    RuntimeUnavailable,
)
from deployserver.runtime.registry import Registry
from deployserver.runtime.swarmnet import SwarmNetwork
from deployserver.upload import bundle

log = logging.getLogger("deployserver.runtime.swarm")
NAME = "swarm"
ALIVE = {"new", "allocated", "pending", "assigned", "accepted", "preparing", "ready", "starting"}
ALIVE |= {"running"}
SWEEP_EVERY = 60.0


class SwarmRuntime:
    name = NAME

    def __init__(self, settings: Settings, instance: str) -> None:
        self.settings = settings
        self.instance = instance
        try:
            self.client = docker.from_env(timeout=120)
            info = self.client.info()
        except DockerException as exc:
            raise RuntimeUnavailable(f"the Docker Engine is not reachable ({exc})") from exc
        swarm = info.get("Swarm") or {}
        if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
            raise RuntimeUnavailable(
                "the local Docker Engine is no Swarm manager (start one with `docker swarm "
                "init`, or run the server on a manager node)"
            )
        self.api: Any = self.client.api
        """The low-level client (its typing stubs lack the task and service calls)."""
        self.cell_image = self._cell_image()
        self.registry = Registry(self.client, settings.registry)
        self.network = SwarmNetwork(self.client, settings, instance)
        self.envs = environments.EnvironmentImages(self.client, self.cell_image, settings)
        self._locks: defaultdict[str, threading.RLock] = defaultdict(threading.RLock)
        """Per deployment: its replicas' services and their shared secret change under it."""
        self._paused: set[str] = set()
        """Tasks paused here (``list_cells`` reports them without asking each engine)."""
        self._last_sweep = float("-inf")

    def _cell_image(self) -> str:
        configured = self.settings.cell_image
        if configured and configured != "deployserver/cell:latest":
            if not images.image_exists(self.client, configured):
                raise RuntimeUnavailable(f"cell image {configured!r} is not present")
            return configured
        try:
            return images.ensure_cell_image(self.client)
        except images.ImageError as exc:
            raise RuntimeUnavailable(exc.message) from exc

    def describe(self) -> str:
        version = self.client.version().get("Version", "?")
        return (
            f"swarm runtime: Docker Engine {version} (manager), cell image {self.cell_image}, "
            f"{self.registry.describe()}, {self.network.describe()}"
        )

    # environments (built here, then pushed) -----------------------------------------
    def needs_build(self, spec: CellSpec) -> bool:
        return self.envs.needs_build(spec)

    def prepare(self, spec: CellSpec) -> None:
        self.registry.pinned(self.envs.build(spec))  # pushed now rather than at the first start

    # cells ------------------------------------------------------------------------
    def start(self, spec: CellSpec) -> CellInfo:
        """A new replica: a service of one task, which Swarm places (and moves when its
        node is drained or lost). One service per replica, not one per deployment with a
        replica count: the control plane must choose which replica stops (a drained one,
        a paused one), and Swarm's scale-down picks for itself."""
        with self._locks[spec.deploy_id]:
            return self._create(spec)

    def _create(self, spec: CellSpec) -> CellInfo:
        s = self.settings
        try:
            found = bundle.ensure(s.deployments_dir, s.data_dir, spec.deploy_id)
        except FileNotFoundError as exc:
            raise CellStartError(str(exc)) from exc
        secret_name = swarmspec.resource_name(self.instance, spec.deploy_id)
        credential = archive_credential(cell_key(s), spec.deploy_id)
        where = swarmspec.Placement(
            image=self.registry.pinned(self.envs.image_for(spec)),
            networks=self.network.for_cell(egress=spec.egress),
            secret_id=swarmsecrets.ensure(self.api, self.instance, secret_name, spec, credential),
            secret_name=secret_name,
            archive_url=f"{self.network.server_url()}/api/v1/cells/{spec.deploy_id}/archive",
            archive_sha256=found.sha256,
            replicas=1,
        )
        body = swarmspec.service_spec(s, spec, self.instance, where)
        try:
            api = self.api
            created = api._result(api._post_json(api._url("/services/create"), data=body), True)
        except APIError as exc:
            if not self._services_of(spec.deploy_id):
                swarmsecrets.remove(self.api, self.instance, secret_name)
            raise CellStartError(f"the service could not be created: {exc.explanation}") from exc
        return self._new_task(str(created["ID"]), set())

    def _new_task(self, service_id: str, before: set[str], wait: float = 60.0) -> CellInfo:
        """The service's first task not in ``before`` once it has an overlay address, and
        its node once Swarm placed it (a task no node can take yet is answered without)."""
        deadline = time.monotonic() + wait
        addressed: CellInfo | None = None
        placed_by = deadline
        while time.monotonic() < min(deadline, placed_by):
            services = self._services_by_id([service_id])
            for task in self._tasks([service_id]):
                info = self._info(task, services)
                if task["ID"] in before or info is None or not info.url:
                    continue
                if info.node:
                    return info
                if addressed is None:
                    addressed, placed_by = info, time.monotonic() + 10.0
            time.sleep(0.2)
        if addressed is not None:
            return addressed
        raise CellStartError("Swarm made no task of the service in time")

    # what runs ----------------------------------------------------------------------
    def _mine(self, labels: dict[str, str] | None) -> bool:
        return (labels or {}).get(LABEL_INSTANCE) == self.instance

    def _services(self) -> list[dict[str, Any]]:
        wanted = [f"{LABEL_MANAGED}=1", f"{LABEL_INSTANCE}={self.instance}"]
        rows = self.api.services(filters={"label": wanted})
        return [r for r in rows if self._mine(r["Spec"].get("Labels"))]

    def _services_by_id(self, ids: list[str] | None = None) -> dict[str, dict[str, Any]]:
        rows = self._services()
        return {r["ID"]: r for r in rows if ids is None or r["ID"] in ids}

    def _services_of(self, deploy_id: str) -> list[dict[str, Any]]:
        return [
            r for r in self._services() if r["Spec"]["Labels"].get(LABEL_DEPLOY_ID) == deploy_id
        ]

    def _tasks(self, service_ids: list[str]) -> list[dict[str, Any]]:
        """The current task of each replica slot (a replaced one is history)."""
        if not service_ids:
            return []
        try:
            rows = self.api.tasks(filters={"service": service_ids})
        except NotFound:  # one of them was removed meanwhile (a replica stopped)
            rows = []
            for service_id in service_ids:
                with contextlib.suppress(NotFound):
                    rows += self.api.tasks(filters={"service": [service_id]})
        latest: dict[tuple[str, Any], dict[str, Any]] = {}
        for row in rows:
            key = (row["ServiceID"], row.get("Slot") or row.get("NodeID"))
            alive = row.get("DesiredState") in ("running", "ready")
            old = latest.get(key)
            old_alive = old is not None and old.get("DesiredState") in ("running", "ready")
            if old is None or (alive, row["CreatedAt"]) > (old_alive, old["CreatedAt"]):
                latest[key] = row
        return list(latest.values())

    def _info(self, task: dict[str, Any], services: dict[str, dict[str, Any]]) -> CellInfo | None:
        service = services.get(task["ServiceID"])
        if service is None:
            return None
        labels = service["Spec"].get("Labels") or {}
        status = task.get("Status") or {}
        state = status.get("State")
        running = task.get("DesiredState") in ("running", "ready") and state in ALIVE
        address = self.network.address_of(task)
        port = self.settings.cell_port
        url = f"http://{address}:{port}" if address else None
        grpc_port = labels.get(LABEL_GRPC_PORT)
        grpc = f"{address}:{grpc_port}" if address and grpc_port else None
        exit_code = None
        if not running:
            exit_code = (status.get("ContainerStatus") or {}).get("ExitCode")
        deploy_id = labels.get(LABEL_DEPLOY_ID, "")
        return CellInfo(
            NAME,
            task["ID"],
            deploy_id,
            url,
            running,
            exit_code,
            grpc,
            paused=running and task["ID"] in self._paused,
            node=task.get("NodeID"),
        )

    def inspect(self, cell_id: str) -> CellInfo | None:
        try:
            task = self.api.inspect_task(cell_id)
        except NotFound:
            return None
        info = self._info(task, self._services_by_id([task["ServiceID"]]))
        if info is None or not info.running:
            return info
        try:  # Swarm says "running" of a paused container: ask its engine, when local
            container = self._local_container(cell_id)
        except LookupError:
            return info
        paused = container is not None and container.status == "paused"
        return dataclasses.replace(info, paused=paused)

    def successor(self, cell_id: str) -> CellInfo | None:
        """The task Swarm started in the gone task's service (its restart policy after a
        crash, or a drained or lost node): the same replica, meant to run."""
        try:
            task = self.api.inspect_task(cell_id)
        except NotFound:
            return None
        services = self._services_by_id([task["ServiceID"]])
        for row in self._tasks(list(services)):
            if row["ID"] != cell_id and row.get("DesiredState") in ("running", "ready"):
                return self._info(row, services)
        return None

    def list_cells(self) -> list[CellInfo]:
        services = self._services_by_id()
        self._maybe_sweep(services)
        found = []
        for task in self._tasks(list(services)):
            info = self._info(task, services)
            if info is not None:
                found.append(info)
        return found

    def node(self) -> str:
        """The manager's node id (each cell's own node comes with its CellInfo)."""
        return str(self.client.info()["Swarm"]["NodeID"])

    def _local_container(self, cell_id: str) -> Any | None:
        """The task's container when it runs on this (the manager's) node, else None;
        LookupError when the task is gone."""
        try:
            task = self.api.inspect_task(cell_id)
        except NotFound as exc:
            raise LookupError(f"no cell {cell_id}") from exc
        if task.get("DesiredState") not in ("running", "ready"):
            raise LookupError(f"no cell {cell_id}")
        container = ((task.get("Status") or {}).get("ContainerStatus") or {}).get("ContainerID")
        if not container or task.get("NodeID") != self.node():
            return None
        try:
            return self.client.containers.get(container)
        except NotFound:
            return None

    def pause(self, cell_id: str) -> None:
        """``docker pause`` of the task's container on this node. Swarm cannot freeze a
        task on another node: there the replica stays running, its memory and a little
        CPU kept, and wakes at once."""
        container = self._local_container(cell_id)
        if container is not None and container.status == "running":
            container.pause()
        self._paused.add(cell_id)

    def resume(self, cell_id: str) -> None:
        container = self._local_container(cell_id)
        self._paused.discard(cell_id)
        if container is not None and container.status == "paused":
            container.unpause()

    def stop(self, cell_id: str, timeout: float = 10.0) -> None:
        """Remove the replica's service (and the deployment's secret with its last one);
        a missing task is fine."""
        try:
            task = self.api.inspect_task(cell_id)
        except NotFound:
            return
        services = self._services_by_id([task["ServiceID"]])
        if not services:
            if self._mine(((task.get("Spec") or {}).get("ContainerSpec") or {}).get("Labels")):
                return  # its service is gone already
            raise PermissionError(f"task {cell_id[:12]} is no cell of this server")
        self._remove_service(services[task["ServiceID"]])

    def _remove_service(self, service: dict[str, Any]) -> None:
        deploy_id = service["Spec"]["Labels"].get(LABEL_DEPLOY_ID, "")
        with self._locks[deploy_id]:
            with contextlib.suppress(NotFound):
                self.api.remove_service(service["ID"])
            if not self._services_of(deploy_id):
                swarmsecrets.remove(
                    self.api, self.instance, swarmspec.resource_name(self.instance, deploy_id)
                )

    def close(self) -> None:
        """Nothing is made ahead of a cell here (the overlay network is shared)."""

    def logs(self, cell_id: str, tail: int = 100) -> str:
        """The task's output (from whichever node runs it), and Swarm's word on it."""
        try:
            task = self.api.inspect_task(cell_id)
        except NotFound as exc:
            raise LookupError(f"no cell {cell_id}") from exc
        if not self._services_by_id([task["ServiceID"]]):
            raise LookupError(f"no cell {cell_id}")
        api = self.api
        params = {"stdout": 1, "stderr": 1, "tail": str(tail)}
        text = ""
        with contextlib.suppress(APIError):
            res = api._get(api._url("/tasks/{0}/logs", cell_id), params=params, stream=False)
            api._raise_for_status(res)
            text = bytes(api._get_result_tty(False, res, False)).decode("utf-8", "replace")
        err = (task.get("Status") or {}).get("Err")
        return text + (f"swarm: {err}\n" if err else "")

    # leftovers --------------------------------------------------------------------
    def _maybe_sweep(self, services: dict[str, dict[str, Any]]) -> None:
        if time.monotonic() - self._last_sweep >= SWEEP_EVERY:
            self._last_sweep = time.monotonic()
            self.sweep(services)

    def sweep(self, services: dict[str, dict[str, Any]] | None = None) -> int:
        """Remove the secrets, and this node's cache volumes, of deployments with no
        service left; answers how many such volumes are still in use (their tasks'
        containers go a moment after their service). Other nodes' volumes stay: only
        that node's engine can remove them (``docker volume prune --filter
        label=deployserver.instance=<id>``)."""
        if services is None:
            services = self._services_by_id()
        live = {s["Spec"]["Labels"].get(LABEL_DEPLOY_ID) for s in services.values()}
        label = [f"{LABEL_INSTANCE}={self.instance}"]
        for row in self.api.secrets(filters={"label": label}):
            if (row["Spec"].get("Labels") or {}).get(LABEL_DEPLOY_ID) not in live:
                with contextlib.suppress(NotFound, APIError):
                    self.api.remove_secret(row["ID"])
        volumes = self.api.volumes(filters={"label": label}).get("Volumes") or []
        busy = 0
        for row in volumes:
            if (row.get("Labels") or {}).get(LABEL_DEPLOY_ID) not in live:
                try:
                    self.api.remove_volume(row["Name"])
                except NotFound:
                    pass
                except APIError:  # in use: the next sweep
                    busy += 1
        return busy
