"""API shapes, named by role: the upload metadata and what the API answers."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from serving_cell.detect import EntrypointError, parse_entrypoint

MODEL_NAME = r"^[a-z0-9][a-z0-9._-]{0,62}$"
BASE_TYPES = ("int", "double", "string", "bool", "dict", "file")
DATA_TYPES = BASE_TYPES + tuple(f"array_{t}" for t in BASE_TYPES)
_MEMORY = re.compile(r"^[1-9][0-9]*(\.[0-9]+)?([kmg]i?b?)?$", re.IGNORECASE)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")

Status = Literal["received", "building", "starting", "ready", "failed", "stopping", "stopped"]


class FieldSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    data_type: Literal[DATA_TYPES]  # type: ignore[valid-type]


class Resources(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cpus: float | None = Field(default=None, gt=0, le=256)
    memory: str | None = None

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str | None) -> str | None:
        if value is not None and not _MEMORY.match(value):
            raise ValueError("memory must look like '512m', '2g' or '1Gi'")
        return value


class DeploymentMetadata(BaseModel):
    """The ``metadata`` part of an upload."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(pattern=MODEL_NAME)
    description: str | None = Field(default=None, max_length=10_000)
    labels: dict[str, str] = Field(default_factory=dict)
    entrypoint: str | None = None
    requirements: list[str] = Field(default_factory=list, max_length=500)
    parameters: dict[str, Any] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)
    resources: Resources = Field(default_factory=Resources)
    input_spec: list[FieldSpec] | None = None
    output_spec: list[FieldSpec] | None = None
    public: bool = False
    """Serve predictions without a token (``/serve/{model}/...`` and async predictions)."""

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


class FileRead(BaseModel):
    path: str
    size: int
    sha256: str


class CellRead(BaseModel):
    runtime: str
    id: str | None
    url: str | None
    started_at: datetime | None
    restarts: int
    last_health_at: datetime | None


class DeploymentRead(BaseModel):
    deploy_id: str
    model: str
    version: int
    status: Status
    status_reason: str | None
    created_at: datetime
    updated_at: datetime
    files: list[FileRead]
    cell: CellRead | None
    active: bool
    desired_state: str
    entrypoint: str
    metadata: dict[str, Any]


class DeploymentList(BaseModel):
    items: list[DeploymentRead]
    next_cursor: str | None


class EventRead(BaseModel):
    at: datetime
    kind: str
    message: str
    actor: str | None = None


class VersionRead(BaseModel):
    version: int
    deploy_id: str
    status: Status
    created_at: datetime


class ModelRead(BaseModel):
    name: str
    active_deploy_id: str | None
    latest_version: int
    versions: list[VersionRead]
    created_at: datetime


class ModelList(BaseModel):
    items: list[ModelRead]


class Rollback(BaseModel):
    """Which deployment to make active again: a version number or a deploy_id."""

    model_config = ConfigDict(extra="forbid")

    version: int | None = Field(default=None, ge=1)
    deploy_id: str | None = None

    @model_validator(mode="after")
    def _one(self) -> Rollback:
        if (self.version is None) == (self.deploy_id is None):
            raise ValueError("give exactly one of 'version' or 'deploy_id'")
        return self


Scope = Literal["read", "deploy", "predict", "admin"]
NAME = r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}$"


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME)
    scopes: list[Scope] = Field(min_length=1)
    expires_in: int | None = Field(default=None, ge=1, description="seconds; none = never")


class TokenRead(BaseModel):
    id: str
    name: str
    scopes: list[str]
    user: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class TokenCreated(TokenRead):
    token: str = Field(description="the bearer token; shown this once, never again")


class TokenList(BaseModel):
    items: list[TokenRead]


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME)
    password: str = Field(min_length=8, max_length=1024)
    scopes: list[Scope] = Field(min_length=1)


class UserRead(BaseModel):
    name: str
    scopes: list[str]
    created_at: datetime


class UserList(BaseModel):
    items: list[UserRead]


class AccessToken(BaseModel):
    """The OAuth2 token answer of the password login."""

    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 (the OAuth2 type word)
    expires_in: int
