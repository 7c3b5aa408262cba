"""Each Docker cell's own network: a /29 bridge holding the cell and, when the server runs
in a container, the server too; no way out unless the deployment has egress.

Why one network per cell (measured on Docker 20.10, see README "Cell networks"): cells on
different bridges cannot reach each other (Docker's isolation rules), an ``internal``
bridge forwards nothing beyond its subnet (no internet, no cloud metadata address), and a
server in a container reaches its cells by joining their networks, which a shared bridge
with ``enable_icc=false`` would forbid. What Docker does not stop is a cell connecting to
the host itself through the bridge's gateway address (the INPUT chain is left open):

- server in a container: the bridges get no host address at all (``inhibit_ipv4``), so the
  cell's default route leads nowhere;
- server on the host: it needs that address to reach the cells, so it installs one
  iptables rule dropping new connections from the cells' bridges (``dsc*``) to the host;
  replies to the server's own connections still pass.

Egress bridges (``dse*``) are ordinary NATed bridges, host included, as their operator allowed.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import re
import secrets
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, DockerException, NotFound

from deployserver.runtime.base import (
    LABEL_DEPLOY_ID,
    LABEL_INSTANCE,
    LABEL_MANAGED,
    CellStartError,
    RuntimeUnavailable,
)

log = logging.getLogger("deployserver.runtime.docker")

LABEL_EGRESS = "deployserver.egress"
ISOLATED_BRIDGE = "dsc"
"""Interface name prefix of the bridges of cells without egress (the host guard's match)."""
EGRESS_BRIDGE = "dse"
CELL_PREFIX = 29
SPARE_DELAY = 2.0
"""Seconds after a cell took the spare network before the next one is made."""
"""A /29: network, gateway, cell, server container, and room to spare."""
GUARD_COMMENT = "deployserver: cells without egress do not reach the host"
HOST_GUARD = [
    "INPUT",
    "-i",
    f"{ISOLATED_BRIDGE}+",
    "-m",
    "conntrack",
    "--ctstate",
    "NEW,INVALID",
    "-m",
    "comment",
    "--comment",
    GUARD_COMMENT,
    "-j",
    "DROP",
]
_CONTAINER_MOUNT = re.compile(r"/containers/([0-9a-f]{64})/(?:hostname|hosts|resolv\.conf) ")


def own_container_id(mountinfo: Path = Path("/proc/self/mountinfo")) -> str | None:
    """The id of the Docker container this process runs in, from the files Docker mounts
    into every container (``/etc/hostname`` and friends), or None outside one."""
    try:
        match = _CONTAINER_MOUNT.search(mountinfo.read_text())
    except OSError:
        return None
    return match.group(1) if match else None


def install_host_guard(runner: Any = subprocess.run) -> str | None:
    """Make sure the iptables rule that keeps cells off the host is in place; None when it
    is, else why it could not be put there."""
    iptables = shutil.which("iptables")
    if iptables is None:
        return "iptables is not installed"
    if os.geteuid() != 0:
        return "the server does not run as root"
    if runner([iptables, "-w", "5", "-C", *HOST_GUARD], capture_output=True).returncode == 0:
        return None
    added = runner([iptables, "-w", "5", "-I", *HOST_GUARD], capture_output=True, text=True)
    if added.returncode != 0:
        return f"iptables failed: {added.stderr.strip()}"
    log.info("installed the host guard: iptables -I %s", " ".join(HOST_GUARD))
    return None


def free_subnet(
    pool: ipaddress.IPv4Network, taken: list[ipaddress.IPv4Network]
) -> ipaddress.IPv4Network | None:
    """The lowest /29 of ``pool`` that overlaps none of ``taken``."""
    step = 2 ** (32 - CELL_PREFIX)
    spans = sorted(
        (int(t.network_address), int(t.broadcast_address)) for t in taken if t.overlaps(pool)
    )
    candidate = int(pool.network_address)
    end = int(pool.broadcast_address)
    for low, high in spans:
        if candidate + step - 1 < low:
            break
        if high >= candidate:
            candidate = (high // step + 1) * step
    if candidate + step - 1 > end:
        return None
    return ipaddress.IPv4Network((candidate, CELL_PREFIX))


def cell_address(networks: dict[str, Any] | None, name: str) -> str | None:
    """The cell's address on its own network, from inspect or list: the network named
    like the cell, or the one it is on (a spare network, made before the cell)."""
    networks = networks or {}
    entry = networks.get(name) or (next(iter(networks.values())) if len(networks) == 1 else {})
    return entry.get("IPAddress") or None


class CellNetworks:
    """Creates, joins and removes the cells' networks of one server instance."""

    def __init__(
        self,
        client: docker.DockerClient,
        instance: str,
        subnets: str,
        server_container: str | None = None,
    ) -> None:
        self.client = client
        self.instance = instance
        try:
            self.pool = ipaddress.IPv4Network(subnets)
        except ValueError as exc:
            raise RuntimeUnavailable(f"DEPLOYSERVER_CELL_SUBNETS {subnets!r}: {exc}") from exc
        if self.pool.prefixlen > CELL_PREFIX:
            raise RuntimeUnavailable(
                f"DEPLOYSERVER_CELL_SUBNETS {subnets!r} holds no /{CELL_PREFIX} (one per cell)"
            )
        self.lock = threading.RLock()
        """Held from a network's creation until its cell exists, and by the sweep."""
        self.spare: str | None = None
        """An isolated network made ahead for the next cell without egress."""
        self._refill: threading.Timer | None = None
        self._closed = False
        self.server = self._find_server(server_container)
        self.guard_problem: str | None = None
        if self.server is None:
            self._guard()
        else:
            self.rejoin()
        self.sweep()

    def _guard(self) -> None:
        """Check the host guard (again before each network: a firewall reload may have
        dropped it); warn when it cannot be there."""
        problem = install_host_guard()
        if problem and problem != self.guard_problem:
            log.warning(
                "cells can connect to services of this host (%s): run the server as root "
                "or add the rule yourself: iptables -I %s",
                problem,
                " ".join(HOST_GUARD),
            )
        self.guard_problem = problem

    def _find_server(self, configured: str | None) -> str | None:
        """The server's container when it runs in one of this engine with a network of
        its own (then it must join each cell's network); None: it reaches them as the host."""
        ref = configured or own_container_id()
        if ref is None:
            return None
        try:
            container = self.client.containers.get(ref)
        except NotFound as exc:
            if configured:
                raise RuntimeUnavailable(
                    f"DEPLOYSERVER_SERVER_CONTAINER {configured!r} is no container of this "
                    "Docker Engine"
                ) from exc
            return None  # a container of some other engine: this one sees us as a host
        if container.attrs["HostConfig"].get("NetworkMode") == "host":
            return None
        return str(container.id)

    def describe(self) -> str:
        where = (
            f"the server's container {self.server[:12]} joins each one"
            if self.server
            else "the server reaches them from the host"
            + (f"; NO host guard: {self.guard_problem}" if self.guard_problem else "")
        )
        return f"cells on networks of their own in {self.pool} ({where})"

    # one cell's network -----------------------------------------------------------
    @contextlib.contextmanager
    def creating(self, name: str, deploy_id: str, *, egress: bool) -> Iterator[str]:
        """The network for a cell about to be created in the block: the spare one when the
        cell has no egress and there is one, else ``name`` made now; under the lock (the
        sweep would take it for an orphan), and removed again if the block fails. Taking
        the spare makes the next one a moment later: a cell start, a wake from zero
        above all, does not wait for a network (about 80 ms, the host guard's check
        included)."""
        with self.lock:
            network, self.spare = (None, self.spare) if egress else (self.spare, None)
            try:
                if network is None:
                    network = name
                    # a crash's leftover, between a cell's removal and its network's
                    self._remove(name)
                    self._create(name, deploy_id, egress)
                yield network
            except BaseException:
                self._remove(network or name)
                raise
        if not egress:
            self._refill_later()

    def _refill_later(self) -> None:
        """Make the next spare network in SPARE_DELAY seconds, in a thread of its own: not
        while the engine is busy starting the cell that took the last one."""
        with self.lock:
            if self._closed:  # a start that ended after the server's stop: no more spares
                return
            if self._refill is None or not self._refill.is_alive():
                self._refill = threading.Timer(SPARE_DELAY, self._make_spare)
                self._refill.daemon = True
                self._refill.start()

    def _make_spare(self) -> None:
        with self.lock:
            if self.spare is not None or self._refill is None:
                return
            name = f"ds-net-{self.instance[:8]}-{secrets.token_hex(4)}"
            try:
                self._create(name, "", egress=False)
            except Exception as exc:  # a thread of its own: logged, or nobody would know
                log.warning("no spare cell network (the next cell makes its own): %s", exc)
                with contextlib.suppress(Exception):
                    self._remove(name)
                return
            self.spare = name

    def close(self) -> None:
        """Make no more spare networks, now or after a start still under way, and remove
        the one there is (the next start's sweep would too). Cells still start."""
        with self.lock:
            self._closed = True
            if self._refill is not None:
                self._refill.cancel()
                self._refill = None
            spare, self.spare = self.spare, None
            if spare is not None:
                with contextlib.suppress(DockerException):
                    self._remove(spare)

    def _create(self, name: str, deploy_id: str, egress: bool) -> None:
        prefix = EGRESS_BRIDGE if egress else ISOLATED_BRIDGE
        options = {"com.docker.network.bridge.name": prefix + secrets.token_hex(6)}
        if self.server is not None and not egress:
            options["com.docker.network.bridge.inhibit_ipv4"] = "true"
        elif not egress:
            self._guard()
        labels = {LABEL_MANAGED: "1", LABEL_INSTANCE: self.instance}
        if deploy_id:  # (a spare network is made before its deployment is known)
            labels[LABEL_DEPLOY_ID] = deploy_id
        labels[LABEL_EGRESS] = "1" if egress else "0"
        for _attempt in range(5):
            subnet = free_subnet(self.pool, self._taken())
            if subnet is None:
                raise CellStartError(
                    f"no free /{CELL_PREFIX} left in {self.pool} for the cell's network "
                    "(DEPLOYSERVER_CELL_SUBNETS)"
                )
            ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=str(subnet))])
            try:
                network = self.client.networks.create(
                    name,
                    driver="bridge",
                    internal=not egress,
                    ipam=ipam,
                    labels=labels,
                    options=options,
                    check_duplicate=True,
                )
                break
            except APIError as exc:
                if "overlap" not in str(exc).lower():  # else another server took it: again
                    raise CellStartError(f"network: {exc.explanation or exc}") from exc
        else:
            raise CellStartError("could not find a free subnet for the cell's network")
        if self.server is not None:
            try:
                network.connect(self.server)
            except APIError as exc:
                raise CellStartError(
                    f"the server's container cannot join the cell's network: "
                    f"{exc.explanation or exc}"
                ) from exc

    def _taken(self) -> list[ipaddress.IPv4Network]:
        taken = []
        for row in self.client.api.networks():
            for config in (row.get("IPAM") or {}).get("Config") or []:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    subnet = ipaddress.ip_network(config["Subnet"], strict=False)
                    if isinstance(subnet, ipaddress.IPv4Network):
                        taken.append(subnet)
        return taken

    def remove(self, names: list[str]) -> None:
        """Remove a cell's networks (its cell is gone); not ours or missing: nothing."""
        with self.lock:
            for name in names:
                if name != self.spare:
                    self._remove(name)

    def _remove(self, name: str) -> None:
        rows = self.client.api.networks(
            names=[name], filters={"label": [f"{LABEL_INSTANCE}={self.instance}"]}
        )
        for row in rows:
            if row.get("Name") != name:  # the names filter matches substrings
                continue
            with contextlib.suppress(NotFound, APIError):
                if self.server is not None:
                    self.client.api.disconnect_container_from_network(
                        self.server, row["Id"], force=True
                    )
            try:
                self.client.api.remove_network(row["Id"])
            except NotFound:
                pass
            except APIError as exc:  # still has a cell on it: the next sweep tries again
                log.warning("could not remove network %s: %s", name, exc.explanation or exc)

    # every network of this server -------------------------------------------------
    def sweep(self) -> None:
        """Remove this server's networks whose cell no longer exists (a crash, a cell
        removed from outside); the spare one stays."""
        with self.lock:
            cells = self.client.api.containers(
                all=True, filters={"label": f"{LABEL_INSTANCE}={self.instance}"}
            )
            names = {name.lstrip("/") for row in cells for name in row.get("Names") or []}
            names |= {
                n for row in cells for n in (row.get("NetworkSettings") or {}).get("Networks") or {}
            }
            names.add(self.spare or "")
            for row in self._mine():
                if row["Name"] not in names:
                    log.info("removing network %s: its cell is gone", row["Name"])
                    self._remove(row["Name"])

    def rejoin(self) -> None:
        """A server container made anew (an upgrade) joins its cells' networks again."""
        assert self.server is not None
        joined = self.client.containers.get(self.server).attrs["NetworkSettings"]["Networks"]
        for row in self._mine():
            if row["Name"] not in joined:
                with contextlib.suppress(APIError):  # raced with a removal: nothing to join
                    self.client.api.connect_container_to_network(self.server, row["Id"])

    def _mine(self) -> list[dict[str, Any]]:
        return list(
            self.client.api.networks(
                filters={"label": [f"{LABEL_MANAGED}=1", f"{LABEL_INSTANCE}={self.instance}"]}
            )
        )
