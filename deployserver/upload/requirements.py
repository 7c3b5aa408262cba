"""What a deployment asks pip for: its requirements (checked: named packages only) and
the wheels it ships under ``libraries/`` (checked by :mod:`deployserver.upload.libraries`)."""

from __future__ import annotations

from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

from deployserver.upload.metadata import DeploymentMetadata


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


def requirements_of(model_dir: Path, meta: DeploymentMetadata) -> tuple[str, ...]:
    """metadata ``requirements`` plus ``requirements.txt``, checked and normalised."""
    lines = list(meta.requirements) + read_requirements_file(model_dir / "requirements.txt")
    return tuple(sorted({check_requirement(line) for line in lines}))


def wheels_of(model_dir: Path) -> tuple[Path, ...]:
    libs = model_dir / "libraries"
    if not libs.is_dir() or libs.is_symlink():
        return ()
    return tuple(sorted(p for p in libs.glob("*.whl") if p.is_file() and not p.is_symlink()))
