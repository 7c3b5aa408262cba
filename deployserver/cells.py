"""What a deployment's cell is made of: its CellSpec, requirements, and kept logs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement

from deployserver import storage
from deployserver.config import Settings
from deployserver.runtime.base import CellSpec

RESERVED_ENV_PREFIX = "DEPLOYSERVER_"


class BadRequirement(ValueError):
    """A requirement that is not a plain ``name[extras]specifier; marker`` line."""


def check_requirement(line: str) -> str:
    """Only named packages from the index: no options, URLs, paths or editables."""
    text = line.strip()
    if text.startswith("-") or "://" in text or text.startswith((".", "/")):
        raise BadRequirement(f"{text!r}: only package names with versions are allowed")
    try:
        req = Requirement(text)
    except InvalidRequirement as exc:
        raise BadRequirement(f"{text!r} is not a valid requirement: {exc}") from exc
    if req.url:
        raise BadRequirement(f"{text!r}: URL requirements are not allowed")
    return str(req)


def read_requirements_file(path: Path) -> list[str]:
    if not path.is_file():
        return []
    lines = []
    for raw in path.read_text(errors="replace").splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def requirements_of(model_dir: Path, meta: dict[str, Any]) -> tuple[str, ...]:
    """metadata ``requirements`` plus ``requirements.txt``, checked and normalised."""
    lines = list(meta.get("requirements", [])) + read_requirements_file(
        model_dir / "requirements.txt"
    )
    return tuple(sorted({check_requirement(line) for line in lines}))


def wheels_of(model_dir: Path) -> tuple[Path, ...]:
    libs = model_dir / "libraries"
    if not libs.is_dir() or libs.is_symlink():
        return ()
    return tuple(sorted(p for p in libs.glob("*.whl") if p.is_file() and not p.is_symlink()))


def spec_for(
    settings: Settings,
    deploy_id: str,
    model: str,
    version: int,
    entrypoint: str,
    meta: dict[str, Any],
) -> CellSpec:
    model_dir = storage.deployment_dir(settings.deployments_dir, deploy_id).resolve()
    resources = meta.get("resources") or {}
    env = {
        k: v
        for k, v in (meta.get("env") or {}).items()
        if not k.upper().startswith(RESERVED_ENV_PREFIX)
    }
    return CellSpec(
        deploy_id=deploy_id,
        model=model,
        version=version,
        model_dir=model_dir,
        entrypoint=entrypoint,
        metadata=meta,
        env=env,
        cpus=resources.get("cpus") or settings.default_cpus,
        memory=resources.get("memory") or settings.default_memory,
        requirements=requirements_of(model_dir, meta),
        wheels=wheels_of(model_dir),
    )


def saved_log_path(settings: Settings, deploy_id: str) -> Path:
    storage.deployment_dir(settings.deployments_dir, deploy_id)  # checks the id
    return settings.logs_dir / f"{deploy_id}.log"


def memory_bytes(value: str) -> int:
    """'512m', '2g', '1Gi', '1024' -> bytes (binary units, as Docker reads them)."""
    text = value.strip().lower().removesuffix("b").removesuffix("i")
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(float(text))
