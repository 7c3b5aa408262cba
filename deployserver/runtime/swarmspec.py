"""The Swarm service of one deployment, as the Engine API's JSON (a pure function).

Hardened as Docker cells are: the image's non-root user, a read-only root filesystem with
a small tmpfs on /tmp, every capability dropped, an init, memory/CPU/pids limits and a
capped json-file log. ``no-new-privileges`` is not a service option before Docker 25, so
the cell sets it on itself first thing (``--no-new-privileges``: prctl, inherited by all
it runs). No host mount: the model files are fetched from the control plane into a
volume of this deployment's own on each node (the per-node cache). Replicas are reached
by their own addresses on the overlay (endpoint mode ``dnsrr``: no virtual IP).
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

from deployserver.config import Settings
from deployserver.runtime.base import (
    LABEL_DEPLOY_ID,
    LABEL_GRPC_PORT,
    LABEL_INSTANCE,
    LABEL_MANAGED,
    LABEL_MODEL,
    LABEL_VERSION,
    CellSpec,
    memory_bytes,
)

CACHE_MOUNT = "/var/cache/deployserver"
SECRET_FILE = "deployserver-cell-credential"  # noqa: S105 - a file name
CELL_UID = "10001"


@dataclass(frozen=True)
class Placement:
    """What a service of one deployment is made of, besides its spec."""

    image: str
    """Pinned reference (``registry/repo@sha256:...``) or a local tag (no registry)."""
    networks: tuple[str, ...]
    """Overlay network ids: the cells' own, and the egress one when allowed."""
    secret_id: str
    secret_name: str
    archive_url: str
    archive_sha256: str
    replicas: int = 1


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-") or "model"


def service_name(spec: CellSpec, instance: str) -> str:
    """``ds-<model>-v<version>-<id>-<instance>-<replica>``, within Swarm's 63 characters
    (each replica is a service of its own)."""
    base = f"ds-{_slug(spec.model)[:30]}-v{spec.version}-{spec.deploy_id[-8:]}-{instance[:4]}"
    return f"{base}-{secrets.token_hex(2)}"


def resource_name(instance: str, deploy_id: str) -> str:
    """Name of the deployment's secret and of its cache volume on each node."""
    return f"ds-{instance[:8]}-{deploy_id}"


def labels(spec: CellSpec, instance: str, settings: Settings) -> dict[str, str]:
    return {
        LABEL_MANAGED: "1",
        LABEL_INSTANCE: instance,
        LABEL_DEPLOY_ID: spec.deploy_id,
        LABEL_MODEL: spec.model,
        LABEL_VERSION: str(spec.version),
        LABEL_GRPC_PORT: str(settings.cell_grpc_port),
    }


def cell_args(settings: Settings, spec: CellSpec, where: Placement) -> list[str]:
    """The cell's arguments (the image's entrypoint runs ``python -m serving_cell``)."""
    args = [
        "--fetch-url",
        where.archive_url,
        "--fetch-sha256",
        where.archive_sha256,
        "--fetch-token-file",
        f"/run/secrets/{SECRET_FILE}",
        "--cache-dir",
        CACHE_MOUNT,
        # as long as the health gate waits: a new task's overlay may take a while
        "--fetch-patience",
        f"{settings.health_deadline:g}",
        "--no-new-privileges",
        "--port",
        str(settings.cell_port),
        "--host",
        "0.0.0.0",
        "--grpc-port",
        str(settings.cell_grpc_port),
    ]
    if spec.explicit_entrypoint:
        args += ["--entrypoint", spec.explicit_entrypoint]
    return args


def service_spec(
    settings: Settings, spec: CellSpec, instance: str, where: Placement
) -> dict[str, Any]:
    """The ``POST /services/create`` body of ``spec``'s service."""
    tagged = labels(spec, instance, settings)
    env = {
        **spec.env,
        "DEPLOYSERVER_CELL_METADATA": json.dumps(spec.metadata),
        "DEPLOYSERVER_DEPLOY_ID": spec.deploy_id,
    }
    volume = resource_name(instance, spec.deploy_id)
    container = {
        "Image": where.image,
        "Args": cell_args(settings, spec, where),
        "Env": [f"{k}={v}" for k, v in env.items()],
        "Labels": tagged,
        "ReadOnly": True,
        "Init": True,
        "CapabilityDrop": ["ALL"],
        "StopGracePeriod": int(10e9),
        "Mounts": [
            {
                "Type": "tmpfs",
                "Target": "/tmp",  # noqa: S108 - in the cell
                "TmpfsOptions": {"SizeBytes": 256 * 1024**2, "Mode": 0o1777},
            },
            {
                "Type": "volume",
                "Source": volume,
                "Target": CACHE_MOUNT,
                "VolumeOptions": {"Labels": {k: tagged[k] for k in tagged if k != LABEL_MODEL}},
            },
        ],
        "Secrets": [
            {
                "File": {"Name": SECRET_FILE, "UID": CELL_UID, "GID": CELL_UID, "Mode": 0o400},
                "SecretID": where.secret_id,
                "SecretName": where.secret_name,
            }
        ],
    }
    restart = {
        # Swarm replaces a replica that fails and the replicas of a drained or lost node
        # (with "none" it does neither); past the crash budget the control plane's own
        # recovery takes over
        "Condition": "on-failure",
        "Delay": int(settings.restart_backoff * 1e9),
        "MaxAttempts": settings.crash_loop_budget,
        "Window": int(settings.crash_forgive_seconds * 1e9),
    }
    return {
        "Name": service_name(spec, instance),
        "Labels": tagged,
        "TaskTemplate": {
            "ContainerSpec": container,
            "Resources": {
                "Limits": {
                    "NanoCPUs": int((spec.cpus or settings.default_cpus) * 1e9),
                    "MemoryBytes": memory_bytes(spec.memory or settings.default_memory),
                    "Pids": settings.pids_limit,
                }
            },
            "RestartPolicy": restart,
            "Networks": [{"Target": network} for network in where.networks],
            "LogDriver": {
                "Name": "json-file",
                "Options": {
                    "max-size": str(settings.cell_log_max_bytes),
                    "max-file": str(settings.cell_log_files),
                },
            },
        },
        "Mode": {"Replicated": {"Replicas": where.replicas}},
        "EndpointSpec": {"Mode": "dnsrr"},
    }
