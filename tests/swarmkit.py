"""What the Swarm tests stand on: a one-node swarm of the local engine, a real registry
(Debian's ``docker-registry``) on loopback, and a place for the server on the overlay.

How the server reaches tasks here (found out on this machine, Docker 20.10): overlay
addresses are not routable from the host (a request to one leaves by the default route,
and something out there may even answer), and Swarm's virtual IPs do not answer at all.
What works is being on the overlay: a container attached to it reaches every task, on
every node. The test server is no container, so it borrows one's network: an idle
"anchor" container joins the overlay, and the test thread enters its network namespace
(``setns``, which moves only the calling thread; threads it starts after inherit it).
The server and the test's clients then run there, on loopback, and the cells reach the
server at the anchor's overlay address. The Docker socket is a file, so the engine is
still reached; a PostgreSQL on the host's loopback is not (these tests are ``once``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from deployserver.runtime import images
from deployserver.runtime.base import LABEL_INSTANCE

CLONE_NEWNET = 0x40000000
REQUIRED = os.environ.get("DEPLOYSERVER_REQUIRE_DOCKER") == "1"


def unavailable(message: str) -> None:
    """Skip, or fail where Docker is required (CI)."""
    if REQUIRED:
        pytest.fail(f"{message} (DEPLOYSERVER_REQUIRE_DOCKER=1)")
    pytest.skip(message)


class SwarmSession:
    """The local engine as a swarm manager, for as long as the tests need one. A swarm
    the engine was already in is used as it is and left alone."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client
        self.owned = False
        self.advertise: str | None = None

    def state(self) -> str:
        return str((self.client.info().get("Swarm") or {}).get("LocalNodeState"))

    def ensure(self, advertise: str | None = None) -> None:
        """A swarm to run on: any (``advertise`` None; one on 127.0.0.1 if there is
        none), or one advertised on ``advertise``, made anew if need be."""
        if self.state() == "active":
            if advertise is None or self.advertise == advertise:
                return  # somebody's swarm: one node is all the lifecycle tests need
            if not self.owned:
                unavailable("the engine is in a swarm of its own; this test makes another")
            self.leave()
        address = advertise or "127.0.0.1"
        self.client.swarm.init(advertise_addr=address, listen_addr=f"{address}:2377")
        self.owned, self.advertise = True, address

    def leave(self) -> None:
        if self.owned:
            with contextlib.suppress(docker.errors.APIError):
                self.client.swarm.leave(force=True)
            self.owned, self.advertise = False, None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def local_registry(
    folder: Path, addr: str | None = None, netns: str | None = None
) -> Iterator[str]:
    """Debian's docker-registry with a config of its own on a free loopback port (not the
    system service); yields ``127.0.0.1:<port>``; stopped after. In ``netns`` (a network
    namespace's path) it serves on that namespace's loopback."""
    binary = shutil.which("docker-registry")
    if binary is None:
        unavailable("docker-registry is not installed (apt-get install docker-registry)")
        raise AssertionError  # unreachable: unavailable() raises
    folder.mkdir(parents=True, exist_ok=True)
    address = addr or f"127.0.0.1:{free_port()}"
    config = folder / f"config-{address.replace(':', '-')}-{bool(netns)}.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {folder / 'data'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: {address}\n"
    )
    log = (folder / f"{config.stem}.log").open("wb")
    enter = ["nsenter", f"--net={netns}"] if netns else []
    proc = subprocess.Popen([*enter, binary, "serve", str(config)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while True:
            if _answers(f"http://{address}/v2/", netns):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the registry did not start: {log.name}")
            time.sleep(0.1)
        yield address
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def _answers(url: str, netns: str | None) -> bool:
    with contextlib.ExitStack() as stack:
        if netns:
            stack.enter_context(thread_in_netns(netns))
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(url, timeout=1).status_code == 200
    return False


def set_netns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns failed")


@contextlib.contextmanager
def thread_in_netns(path: str) -> Iterator[None]:
    """Run this thread (and the threads it starts meanwhile) in the network namespace at
    ``path``; back in its own afterwards."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(path, os.O_RDONLY)
    try:
        set_netns(target)
        try:
            yield
        finally:
            set_netns(own)
    finally:
        os.close(target)
        os.close(own)


@contextlib.contextmanager
def anchor(client: docker.DockerClient, network: str) -> Iterator[Any]:
    """An idle container on ``network``: the test server's place on the overlay. Not
    labelled as the tests' containers are: any test session on this engine removes those
    when it ends, and this one must live as long as its server (it removes it itself)."""
    image = images.resolve_base_image(client)
    labels = {"deployserver.test-anchor": "1"}
    container = client.containers.run(
        image, ["sleep", "infinity"], detach=True, network=network, labels=labels, init=True
    )
    try:
        container.reload()
        yield container
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)


def overlay_address(container: Any, network: str) -> str:
    return str(container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"])


def remove_network(client: docker.DockerClient, name: str) -> None:
    """Remove ``name`` once the tasks on it are gone (their removal lags the services')."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows = [r for r in client.api.networks(names=[name]) if r.get("Name") == name]
        if not rows:
            return
        try:
            client.api.remove_network(rows[0]["Id"])
            return
        except docker.errors.NotFound:
            return
        except docker.errors.APIError:
            time.sleep(0.5)


def remove_services(client: docker.DockerClient, label: str) -> None:
    for row in client.api.services(filters={"label": label}):
        with contextlib.suppress(docker.errors.NotFound):
            client.api.remove_service(row["ID"])
    for row in client.api.secrets(filters={"label": label}):
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            client.api.remove_secret(row["ID"])


def sweep_after(runtime: Any) -> None:
    """A stopped server's leftovers on this node (secrets, cache volumes), once the
    containers of its removed services are gone: removed here rather than waited for
    (Swarm's agent takes about 5 s to, which adds up over the Swarm tests)."""
    label = f"{LABEL_INSTANCE}={runtime.instance}"
    for container in runtime.client.containers.list(all=True, filters={"label": label}):
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            container.remove(force=True)
    deadline = time.monotonic() + 60
    while runtime.sweep() and time.monotonic() < deadline:
        time.sleep(0.5)


def untag_registry_images(client: docker.DockerClient, registry: str) -> None:
    """The local names the pushes gave images (``<registry>/repo:tag``); the images stay."""
    for image in client.images.list():
        for tag in image.tags:
            if tag.startswith(f"{registry}/"):
                with contextlib.suppress(docker.errors.APIError):
                    client.images.remove(tag, noprune=True)
