"""Images every Swarm node can pull: pushed to the operator's registry, pinned by digest.

A node that has never seen an image (a worker, a node added later) pulls it by the
reference of its service, so the cell image and each environment image are pushed to
``DEPLOYSERVER_REGISTRY`` under the same repository and tag as here, and services name
them ``<registry>/<repo>@sha256:<digest>``: every replica, on every node, runs the same
bytes, whatever the tag points to later. Without a registry, images stay on this engine
(one-node swarms only).
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from docker.errors import APIError, DockerException, ImageNotFound

from deployserver.runtime.base import CellStartError

if TYPE_CHECKING:
    from docker import DockerClient

log = logging.getLogger("deployserver.runtime.swarm")


def split_ref(ref: str) -> tuple[str, str]:
    """``repo:tag`` -> (repo, tag); a registry's port is no tag."""
    repo, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        return ref, "latest"
    return repo, tag


class Registry:
    """Pushes local images to one registry, once each, and answers their pinned names."""

    def __init__(self, client: DockerClient, address: str | None) -> None:
        self.client = client
        self.address = address.rstrip("/") if address else None
        self._pinned: dict[str, str] = {}
        self._lock = threading.Lock()

    def describe(self) -> str:
        if self.address is None:
            return "no registry (DEPLOYSERVER_REGISTRY): images stay on this node"
        return f"images from {self.address}, pinned by digest"

    def pinned(self, local_ref: str) -> str:
        """What a service names to run ``local_ref`` on any node: its digest in the
        registry (pushed first if need be), or the local image id with no registry."""
        try:
            image = self.client.images.get(local_ref)
        except ImageNotFound as exc:
            raise CellStartError(f"image missing: {local_ref}") from exc
        if self.address is None:
            return local_ref
        image_id = str(image.id)
        with self._lock:  # two deployments on one new image push it once
            known = self._pinned.get(image_id)
            if known is None:
                known = self._push(image, local_ref)
                self._pinned[image_id] = known
            return known

    def _push(self, image: Any, local_ref: str) -> str:
        assert self.address is not None
        repo, tag = split_ref(local_ref)
        remote = f"{self.address}/{repo}"
        log.info("pushing %s to %s", local_ref, remote)
        try:
            image.tag(remote, tag)
            for line in self.client.api.push(remote, tag, stream=True, decode=True):
                if line.get("error"):
                    raise CellStartError(f"pushing {local_ref} to {remote} failed: {line['error']}")
            image.reload()
        except (APIError, DockerException) as exc:
            raise CellStartError(f"pushing {local_ref} to {remote} failed: {exc}") from exc
        for digest in image.attrs.get("RepoDigests") or []:
            if str(digest).startswith(f"{remote}@sha256:"):
                return str(digest)
        raise CellStartError(f"{remote} has no digest for {local_ref} after its push")
