"""The upload's metadata: its model, parsed once from the ``metadata`` part and read as
attributes everywhere after (the reconciler, the runtimes, the route table)."""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    ValidationError,
    field_validator,
)

from deployserver.errors import InvalidMetadata
from deployserver.schemas import MODEL_NAME, Scaling
from serving_cell.batching import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_LATENCY_MS,
    MAX_BATCH_SIZE,
    MAX_LATENCY_MS,
)
from serving_cell.detect import EntrypointError, parse_entrypoint

BASE_TYPES = ("int", "double", "string", "bool", "dict", "file")
DATA_TYPES = BASE_TYPES + tuple(f"array_{t}" for t in BASE_TYPES)
# The rules checked by validators below are also published in the JSON schema (the web
# UI checks a form against it before uploading): each pattern is written once, here, in
# the syntax Python and JavaScript regular expressions share.
MEMORY_PATTERN = r"^[1-9][0-9]*(\.[0-9]+)?([kKmMgG][iI]?[bB]?)?$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
REQUIREMENT_PATTERN = r"^[^\n]*\S[^\n]*$"
ENTRYPOINT_PATTERN = r"^(?!/)(?!(.*/)?\.\.(/|:))[^\\]*\.py:[A-Za-z_][A-Za-z0-9_]*$"
"""The form of ``path/to/file.py:ClassName`` (the server's own check also takes class
names beyond ASCII; the UI's stays on the safe side)."""
_MEMORY = re.compile(MEMORY_PATTERN)
_ENV_NAME = re.compile(ENV_NAME_PATTERN)


class FieldSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    data_type: Literal[DATA_TYPES]  # type: ignore[valid-type]


class Resources(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cpus: float | None = Field(default=None, gt=0, le=256)
    memory: str | None = Field(default=None, json_schema_extra={"pattern": MEMORY_PATTERN})

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str | None) -> str | None:
        if value is not None and not _MEMORY.match(value):
            raise ValueError("memory must look like '512m', '2g' or '1Gi'")
        return value


class CellNetwork(BaseModel):
    """What a cell may reach on the network: nothing, unless it asks for egress and the
    server allows it (``DEPLOYSERVER_ALLOW_EGRESS``)."""

    model_config = ConfigDict(extra="forbid")

    egress: bool = False


class Batching(BaseModel):
    """Adaptive batching in the cell (``serving_cell.batching``): the script's predict
    takes a list of inputs and answers a list of outputs."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: StrictInt = Field(default=DEFAULT_MAX_BATCH_SIZE, ge=1, le=MAX_BATCH_SIZE)
    """Most requests in one call of predict."""
    max_latency_ms: StrictFloat = Field(default=DEFAULT_MAX_LATENCY_MS, gt=0, le=MAX_LATENCY_MS)
    """Longest a request waits for its batch to go while the model is busy."""


class DeploymentMetadata(BaseModel):
    """The ``metadata`` part of an upload."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(pattern=MODEL_NAME)
    description: str | None = Field(default=None, max_length=10_000)
    labels: dict[str, str] = Field(default_factory=dict)
    entrypoint: str | None = Field(default=None, json_schema_extra={"pattern": ENTRYPOINT_PATTERN})
    requirements: list[str] = Field(
        default_factory=list,
        max_length=500,
        json_schema_extra={
            "items": {"type": "string", "maxLength": 500, "pattern": REQUIREMENT_PATTERN}
        },
    )
    parameters: dict[str, Any] = Field(default_factory=dict)
    env: dict[str, str] = Field(
        default_factory=dict, json_schema_extra={"propertyNames": {"pattern": ENV_NAME_PATTERN}}
    )
    resources: Resources = Field(default_factory=Resources)
    network: CellNetwork = Field(default_factory=CellNetwork)
    input_spec: list[FieldSpec] | None = None
    output_spec: list[FieldSpec] | None = None
    public: bool = False
    """Serve predictions without a token (``/serve/{model}/...`` and async predictions)."""
    batching: Batching | None = None
    """Requests arriving together reach predict as one list (off when absent)."""
    scaling: Scaling = Field(default_factory=Scaling)
    """Replicas: how many at least and at most, the autoscaler's target, scale to zero."""

    @field_validator("entrypoint")
    @classmethod
    def _entrypoint(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_entrypoint(value)
            except EntrypointError as exc:
                raise ValueError(str(exc)) from exc
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not _ENV_NAME.match(key):
                raise ValueError(f"{key!r} is not a valid environment variable name")
        return value

    @field_validator("requirements")
    @classmethod
    def _requirements(cls, value: list[str]) -> list[str]:
        for req in value:
            if not req.strip() or "\n" in req or len(req) > 500:
                raise ValueError(f"{req!r} is not a single pip requirement")
        return value

    @classmethod
    def of(cls, stored: dict[str, Any]) -> DeploymentMetadata:
        """The model of metadata as it was stored at upload (already checked then)."""
        return cls.model_validate(stored)


MAX_METADATA_DEPTH = 32
"""Deepest nesting of objects and lists in the metadata (parameters included)."""


def nesting_depth(value: object, limit: int) -> int:
    """How deep ``value`` nests lists and dicts, counting no further than ``limit + 1``."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if depth > limit:
                return deepest
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


def parse_metadata(raw: bytes | None) -> DeploymentMetadata:
    if raw is None:
        raise InvalidMetadata("the upload has no 'metadata' part (a JSON object)")
    try:
        data = json.loads(raw)
    except RecursionError as exc:
        raise InvalidMetadata(
            f"metadata is nested too deeply (at most {MAX_METADATA_DEPTH} levels)"
        ) from exc
    except ValueError as exc:  # bad JSON, bad UTF-8, or an integer of over 4,300 digits
        raise InvalidMetadata(f"metadata is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidMetadata("metadata must be a JSON object")
    if nesting_depth(data, MAX_METADATA_DEPTH) > MAX_METADATA_DEPTH:
        raise InvalidMetadata(f"metadata is nested deeper than {MAX_METADATA_DEPTH} levels")
    try:
        return DeploymentMetadata.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'metadata'}: {err['msg']}"
            for err in exc.errors()
        )
        raise InvalidMetadata(f"invalid metadata: {problems}") from exc
