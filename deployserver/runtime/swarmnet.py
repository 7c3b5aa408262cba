"""The Swarm runtime's overlay networks, and how the server sits on them.

Cells live on one overlay network of this server's (``DEPLOYSERVER_SWARM_NETWORK``, by
default ``ds-<instance>-cells``): ``attachable``, so the server's own container can join
it, and ``internal``, so it leads nowhere else (no gateway, no internet, no cloud
metadata address). A deployment allowed egress also joins ``<network>-egress``, an
ordinary overlay with a way out. The server must be on the cells' network: it reaches
each task by its address there (not Swarm's virtual IP, which does not answer on every
host and would hide the replicas from the server's balancing), and the cells fetch
their files from it there. Overlay addresses are not routable from the host itself.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

import docker
from docker.errors import APIError, NotFound

from deployserver.config import Settings
from deployserver.runtime.base import LABEL_INSTANCE, LABEL_MANAGED, CellStartError
from deployserver.runtime.cellnet import own_container_id

log = logging.getLogger("deployserver.runtime.swarm")


class SwarmNetwork:
    def __init__(self, client: docker.DockerClient, settings: Settings, instance: str) -> None:
        self.client = client
        self.settings = settings
        self.instance = instance
        self.name = settings.swarm_network or f"ds-{instance[:8]}-cells"
        self.id = self._ensure(self.name, internal=True)
        self._egress_id: str | None = None
        self._lock = threading.Lock()
        self.server = self._join(settings.server_container or own_container_id())

    def _ensure(self, name: str, *, internal: bool) -> str:
        """The overlay ``name``, made when missing; refused if it is not one."""
        for row in self.client.api.networks(names=[name]):
            if row.get("Name") == name:
                if row.get("Driver") != "overlay" or not row.get("Attachable"):
                    raise CellStartError(f"network {name!r} is not an attachable overlay")
                return str(row["Id"])
        log.info("creating the overlay network %s (internal: %s)", name, internal)
        made = self.client.api.create_network(
            name,
            driver="overlay",
            attachable=True,
            internal=internal,
            labels={LABEL_MANAGED: "1", LABEL_INSTANCE: self.instance},
            check_duplicate=True,
        )
        return str(made["Id"])

    def _join(self, container: str | None) -> str | None:
        """Attach the server's container (when it runs in one here) to the cells' network."""
        if container is None:
            return None
        try:
            found = self.client.containers.get(container)
        except NotFound:
            return None  # a container of another engine: the operator attaches the server
        joined = found.attrs["NetworkSettings"]["Networks"] or {}
        if self.name not in joined:
            try:
                self.client.api.connect_container_to_network(str(found.id), self.id)
            except APIError as exc:
                log.warning("the server's container cannot join %s: %s", self.name, exc)
        return str(found.id)

    def for_cell(self, *, egress: bool) -> tuple[str, ...]:
        if not egress:
            return (self.id,)
        with self._lock:
            if self._egress_id is None:
                self._egress_id = self._ensure(f"{self.name}-egress", internal=False)
        return (self.id, self._egress_id)

    def server_url(self) -> str:
        """How cells reach the server: the configured URL, or the server's container's
        address on the cells' network."""
        if self.settings.swarm_server_url:
            return self.settings.swarm_server_url.rstrip("/")
        address = None
        if self.server is not None:
            with contextlib.suppress(NotFound):
                networks = self.client.containers.get(self.server).attrs["NetworkSettings"]
                address = ((networks.get("Networks") or {}).get(self.name) or {}).get("IPAddress")
        if not address:
            raise CellStartError(
                f"cells cannot reach the server: run it in a container on the network "
                f"{self.name}, or set DEPLOYSERVER_SWARM_SERVER_URL"
            )
        return f"http://{address}:{self.settings.port}"

    def address_of(self, task: dict[str, Any]) -> str | None:
        """The task's address on the cells' network, once Swarm allocated one."""
        for attachment in task.get("NetworksAttachments") or []:
            if (attachment.get("Network") or {}).get("ID") == self.id:
                for cidr in attachment.get("Addresses") or []:
                    return str(cidr).split("/")[0]
        return None

    def describe(self) -> str:
        where = (
            f"the server's container {self.server[:12]} on it"
            if self.server
            else "the server attached by its operator"
        )
        return f"cells on the overlay {self.name} (internal; {where}; tasks by address)"
