"""What one deployment may ask of its cell on this server: resource ceilings and egress."""

from __future__ import annotations

from deployserver.config import Settings
from deployserver.errors import EgressNotAllowed, ResourcesAboveCeiling
from deployserver.runtime.base import memory_bytes
from deployserver.schemas import Scaling
from deployserver.upload.metadata import DeploymentMetadata


def check_cell_request(meta: DeploymentMetadata, settings: Settings) -> None:
    """Refuse (422) an upload asking for more than the server allows, naming the limit."""
    memory = meta.resources.memory
    if memory is not None and memory_bytes(memory) > memory_bytes(settings.max_cell_memory):
        raise ResourcesAboveCeiling(
            f"resources.memory {memory!r} is above this server's ceiling of "
            f"{settings.max_cell_memory!r} (DEPLOYSERVER_MAX_CELL_MEMORY)"
        )
    cpus = meta.resources.cpus
    if cpus is not None and cpus > settings.max_cell_cpus:
        raise ResourcesAboveCeiling(
            f"resources.cpus {cpus:g} is above this server's ceiling of "
            f"{settings.max_cell_cpus:g} (DEPLOYSERVER_MAX_CELL_CPUS)"
        )
    check_scaling(meta.scaling, settings)
    if meta.network.egress and not settings.allow_egress:
        raise EgressNotAllowed(
            "network.egress: this server gives cells no network egress; its operator "
            "can allow it with DEPLOYSERVER_ALLOW_EGRESS=true"
        )


def check_scaling(scaling: Scaling, settings: Settings) -> None:
    """Refuse (422) more replicas than the server runs for one deployment."""
    if scaling.max_replicas > settings.max_replicas:
        raise ResourcesAboveCeiling(
            f"scaling.max_replicas {scaling.max_replicas} is above this server's ceiling of "
            f"{settings.max_replicas} (DEPLOYSERVER_MAX_REPLICAS)"
        )
    if scaling.idle_seconds < settings.min_idle_seconds:
        raise ResourcesAboveCeiling(
            f"scaling.idle_seconds {scaling.idle_seconds:g} is below this server's floor of "
            f"{settings.min_idle_seconds:g} (DEPLOYSERVER_MIN_IDLE_SECONDS)"
        )
