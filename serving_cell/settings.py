"""What a cell is told at start: the model folder, the deployment metadata, the entrypoint."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

METADATA_ENV = "DEPLOYSERVER_CELL_METADATA"
"""Environment variable holding the deployment metadata as JSON (used when no --metadata)."""


class MetadataError(ValueError):
    """The metadata given to the cell is not a JSON object."""


def read_metadata(
    path: str | os.PathLike[str] | None, environ: Mapping[str, str]
) -> dict[str, Any]:
    """The deployment metadata: the ``--metadata`` file when given, else the env var.

    The file wins because it is the more explicit of the two (a flag on the command line
    beats an inherited environment), the same order as ``deployserver serve`` options.
    """
    if path is not None:
        text, source = Path(path).read_text(encoding="utf-8"), str(path)
    elif environ.get(METADATA_ENV):
        text, source = environ[METADATA_ENV], METADATA_ENV
    else:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MetadataError(f"metadata in {source} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise MetadataError(f"metadata in {source} must be a JSON object")
    return value


@dataclass(frozen=True)
class CellSettings:
    """Everything ``create_app`` needs; built by ``__main__`` or directly by tests."""

    model_dir: Path
    metadata: dict[str, Any] = field(default_factory=dict)
    entrypoint: str | None = None
    """Explicit ``file.py:Class``; falls back to ``metadata["entrypoint"]``, then detection."""
    grpc_address: str | None = None
    """``host:port`` of the Open Inference Protocol's gRPC service; None: no gRPC."""

    @property
    def model_name(self) -> str:
        return str(self.metadata.get("model") or self.model_dir.resolve().name)

    @property
    def model_version(self) -> str | None:
        version = self.metadata.get("version")
        return None if version is None else str(version)

    @property
    def explicit_entrypoint(self) -> str | None:
        return self.entrypoint or self.metadata.get("entrypoint") or None

    @property
    def parameters(self) -> dict[str, Any]:
        return dict(self.metadata.get("parameters") or {})

    @property
    def input_spec(self) -> list[dict[str, str]] | None:
        return self.metadata.get("input_spec") or None

    @property
    def output_spec(self) -> list[dict[str, str]] | None:
        return self.metadata.get("output_spec") or None
