"""What a deployment's cell is made of (its CellSpec) and where its output is kept."""

from __future__ import annotations

from pathlib import Path

from deployserver.config import Settings
from deployserver.control.decide import Wanted
from deployserver.runtime.base import CellSpec, memory_bytes
from deployserver.upload import storage
from deployserver.upload.requirements import requirements_of, wheels_of

RESERVED_ENV_PREFIX = "DEPLOYSERVER_"


def spec_for(settings: Settings, w: Wanted) -> CellSpec:
    """The cell ``w`` runs in, under today's ceilings: they are applied again at every
    start, not only at upload, so a ceiling lowered or egress turned off since applies."""
    meta = w.meta
    model_dir = storage.deployment_dir(settings.deployments_dir, w.deploy_id).resolve()
    env = {k: v for k, v in meta.env.items() if not k.upper().startswith(RESERVED_ENV_PREFIX)}
    memory = meta.resources.memory or settings.default_memory
    if memory_bytes(memory) > memory_bytes(settings.max_cell_memory):
        memory = settings.max_cell_memory
    cpus = min(meta.resources.cpus or settings.default_cpus, settings.max_cell_cpus)
    return CellSpec(
        deploy_id=w.deploy_id,
        model=w.model,
        version=w.version,
        model_dir=model_dir,
        entrypoint=w.entrypoint,
        explicit_entrypoint=meta.entrypoint,
        # the cell names its model's version (V2 metadata, answers): the server's number
        metadata={**meta.model_dump(mode="json", exclude_none=True), "version": w.version},
        env=env,
        cpus=cpus,
        memory=memory,
        egress=meta.network.egress and settings.allow_egress,
        requirements=requirements_of(model_dir, meta),
        wheels=wheels_of(model_dir),
    )


def saved_log_path(settings: Settings, deploy_id: str) -> Path:
    storage.deployment_dir(settings.deployments_dir, deploy_id)  # checks the id
    return settings.logs_dir / f"{deploy_id}.log"
