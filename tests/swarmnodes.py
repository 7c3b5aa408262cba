"""A second Swarm node on this machine, after ../shared/recipes/two-node-swarm.md: a Docker
Engine in a network namespace of the test's own joins the local engine's swarm as a
worker. It pulls from a registry served on its own loopback from the same storage as
the test's (so one image reference, ``127.0.0.1:<port>/...@sha256:...``, works on both
nodes). Everything is taken down afterwards, in the recipe's order, even on failure."""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker

from tests.swarmkit import SwarmSession, local_registry, unavailable, untag_registry_images


@dataclass(frozen=True)
class SecondNode:
    client: docker.DockerClient
    node_id: str
    netns: str
    """Path of its network namespace."""


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


@contextlib.contextmanager
def _namespace(name: str, host_if: str, node_if: str, octet: int) -> Iterator[tuple[str, str]]:
    """A network namespace joined to the host by a veth pair; (host address, its own)."""
    host, node = f"10.200.{octet}.1", f"10.200.{octet}.2"
    try:
        _run("ip", "netns", "add", name)
        _run("ip", "link", "add", host_if, "type", "veth", "peer", "name", node_if)
        _run("ip", "link", "set", node_if, "netns", name)
        _run("ip", "addr", "add", f"{host}/24", "dev", host_if)
        _run("ip", "link", "set", host_if, "up")
        _run("ip", "netns", "exec", name, "ip", "addr", "add", f"{node}/24", "dev", node_if)
        _run("ip", "netns", "exec", name, "ip", "link", "set", node_if, "up")
        _run("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up")
        yield host, node
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)


@contextlib.contextmanager
def _engine(folder: Path, netns: str) -> Iterator[docker.DockerClient]:
    """A second dockerd in ``netns`` (entered with nsenter: ``ip netns exec`` remounts
    /sys and the engine then finds no devices cgroup), with an empty config of its own."""
    (folder / "data").mkdir(parents=True)
    (folder / "exec").mkdir()
    (folder / "daemon.json").write_text(json.dumps({}))
    sock, pidfile = folder / "docker.sock", folder / "docker.pid"
    log = (folder / "dockerd.log").open("wb")
    argv = ["nsenter", f"--net={netns}", "dockerd", "--config-file", str(folder / "daemon.json")]
    argv += ["--data-root", str(folder / "data"), "--exec-root", str(folder / "exec")]
    argv += ["--pidfile", str(pidfile), "-H", f"unix://{sock}"]
    argv += ["--storage-driver", "fuse-overlayfs", "--bridge", "none"]
    argv += ["--iptables=false", "--ip-masq=false"]
    proc = subprocess.Popen(argv, stdout=log, stderr=log)
    client: docker.DockerClient | None = None
    try:
        deadline = time.monotonic() + 60
        while client is None:
            with contextlib.suppress(docker.errors.DockerException):
                candidate = docker.DockerClient(base_url=f"unix://{sock}", timeout=120)
                candidate.ping()
                client = candidate
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the second engine did not start: see {log.name}")
            time.sleep(0.3)
        yield client
    finally:
        if client is not None:
            with contextlib.suppress(docker.errors.APIError):
                client.swarm.leave(force=True)
            client.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@contextlib.contextmanager
def second_node(
    swarm: SwarmSession, registry_dir: Path, folder: Path
) -> Iterator[tuple[SecondNode, str]]:
    """A two-node swarm (the local engine its manager) and a registry both nodes reach
    at one address; yields the worker and that address."""
    for tool in ("ip", "nsenter", "dockerd"):
        if shutil.which(tool) is None:
            unavailable(f"{tool} is not installed")
    if os.geteuid() != 0:
        unavailable("a second engine in a network namespace needs root")
    tag = secrets.token_hex(3)
    name = f"ds{tag}"
    with contextlib.ExitStack() as stack:
        host, _node = stack.enter_context(
            _namespace(name, f"dsh{tag}", f"dsn{tag}", random.randint(1, 254))
        )
        netns = f"/var/run/netns/{name}"
        swarm.ensure(advertise=host)
        stack.callback(swarm.leave)
        worker = stack.enter_context(_engine(folder / "node2", netns))
        token = swarm.client.swarm.attrs["JoinTokens"]["Worker"]
        worker.swarm.join(remote_addrs=[f"{host}:2377"], join_token=token)
        node_id = str(worker.info()["Swarm"]["NodeID"])
        address = stack.enter_context(local_registry(registry_dir))
        stack.callback(untag_registry_images, swarm.client, address)
        stack.enter_context(local_registry(registry_dir, address, netns))
        yield SecondNode(worker, node_id, netns), address
