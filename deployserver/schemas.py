"""The API's shapes, named by role: what it answers and the small bodies it takes.

Shared by the routers and the SDK, so it imports nothing but pydantic and the domain words
(the upload's metadata has its own module: ``deployserver.upload.metadata``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, model_validator

from deployserver.domain import DeploymentStatus, DesiredState, PredictionStatus

MODEL_NAME = r"^[a-z0-9][a-z0-9._-]{0,62}$"

MAX_INT32 = 2**31 - 1
"""Largest version number or counter a request may name (the database's INTEGER)."""
MAX_TOKEN_SECONDS = 100 * 365 * 24 * 3600
"""Longest token lifetime one may ask for; past it, ask for none (never expires)."""

Status = DeploymentStatus


class FileRead(BaseModel):
    path: str
    size: int
    sha256: str


MAX_REPLICAS = 1000
"""Most replicas any metadata may name; each server sets its own, lower ceiling."""
MAX_IDLE_SECONDS = 30 * 24 * 3600
DEFAULT_TARGET_CONCURRENCY = 4.0
DEFAULT_IDLE_SECONDS = 300.0


class Scaling(BaseModel):
    """How many replicas a deployment runs: metadata ``scaling``, and the body of
    ``PUT /api/v1/deployments/{deploy_id}/scaling``. ``max_replicas`` defaults to
    ``min_replicas`` (at least 1): without it, a deployment keeps a fixed number."""

    model_config = ConfigDict(extra="forbid")

    min_replicas: StrictInt = Field(default=1, ge=0, le=MAX_REPLICAS)
    """Replicas kept however idle; 0: scale to zero after ``idle_seconds``."""
    max_replicas: StrictInt = Field(default=0, ge=0, le=MAX_REPLICAS)
    target_concurrency: float = Field(default=DEFAULT_TARGET_CONCURRENCY, gt=0, le=10_000)
    """Requests in flight per replica the autoscaler aims at."""
    idle_seconds: float = Field(default=DEFAULT_IDLE_SECONDS, gt=0, le=MAX_IDLE_SECONDS)
    """Seconds without a request before an idle model (``min_replicas`` 0) is paused."""
    resend_dropped: StrictBool = True
    """A request whose replica died holding it, before answering a byte, is sent once to
    another replica (a prediction is a function of its input); false for a ``predict``
    with side effects outside the cell, which must never run twice."""

    @model_validator(mode="before")
    @classmethod
    def _default_max(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("max_replicas") is None:
            low = data.get("min_replicas", 1)
            data = {**data, "max_replicas": max(low, 1) if isinstance(low, int) else low}
        return data

    @model_validator(mode="after")
    def _ordered(self) -> Scaling:
        if self.max_replicas < 1:
            raise ValueError("max_replicas must be at least 1")
        if self.max_replicas < self.min_replicas:
            raise ValueError(
                f"max_replicas ({self.max_replicas}) is below min_replicas ({self.min_replicas})"
            )
        return self


class ScalingChange(BaseModel):
    """A change of scaling: the fields given replace the current ones."""

    model_config = ConfigDict(extra="forbid")

    min_replicas: StrictInt | None = Field(default=None, ge=0, le=MAX_REPLICAS)
    max_replicas: StrictInt | None = Field(default=None, ge=1, le=MAX_REPLICAS)
    target_concurrency: float | None = Field(default=None, gt=0, le=10_000)
    idle_seconds: float | None = Field(default=None, gt=0, le=MAX_IDLE_SECONDS)
    resend_dropped: StrictBool | None = None


class ReplicaRead(BaseModel):
    """One replica of a deployment: a cell of its own."""

    id: str
    state: str
    """``starting``, ``ready``, ``paused`` or ``draining``."""
    started_at: datetime | None
    restarts: int
    node: str | None


class ReplicasRead(BaseModel):
    desired: int
    ready: int
    tier: str
    """In words: ``serving``, ``idle``, ``paused``, ``scaled to zero`` (or ``stopped``)."""
    cells: list[ReplicaRead]


class CellRead(BaseModel):
    runtime: str
    id: str | None
    url: str | None
    grpc_address: str | None = None
    node: str | None = None
    """The cluster node the cell runs on (swarm runtime); None on a single host."""
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
    """The first ready replica (kept for clients from before replicas)."""
    replicas: ReplicasRead | None = None
    active: bool
    desired_state: DesiredState
    entrypoint: str
    metadata: dict[str, Any]


class PredictionRead(BaseModel):
    """An asynchronous prediction, as the API answers it and its webhook receives it."""

    request_id: str
    model: str
    deploy_id: str | None
    status: PredictionStatus
    result: Any = None
    """The result when it is kept inline (small JSON); else null: see ``result_url``."""
    error: str | None
    created_at: datetime
    completed_at: datetime | None
    path: str
    """The cell path the request goes to (``predict`` unless another was named)."""
    webhook_status: str | None
    result_type: str | None
    result_url: str | None
    """Where the result is served as the cell answered it, once the prediction succeeded."""


class PredictionList(BaseModel):
    items: list[PredictionRead]
    next_cursor: str | None


class DeploymentList(BaseModel):
    items: list[DeploymentRead]
    next_cursor: str | None


class EventRead(BaseModel):
    at: datetime
    kind: str
    message: str
    actor: str | None = None


class StreamEvent(BaseModel):
    """One deployment event of ``GET /api/v1/events/stream`` (a ``data:`` line). ``id`` is
    None for ``deleted``, which is not kept (a deployment's events go with it)."""

    id: int | None = None
    deploy_id: str
    model: str
    version: int
    at: datetime
    kind: str
    message: str
    status: str
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

    version: int | None = Field(default=None, ge=1, le=MAX_INT32)
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
    expires_in: int | None = Field(
        default=None,
        ge=1,
        le=MAX_TOKEN_SECONDS,
        description="seconds (at most 100 years); none = never",
    )


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


class CallerRead(BaseModel):
    """Who the token in a request is: its name (the actor events show), scopes, expiry."""

    token_id: str
    name: str
    scopes: list[str]
    expires_at: datetime | None


class SignedOut(BaseModel):
    """The answer to ``POST /api/v1/auth/logout``."""

    revoked: bool
    """True: the token (a login's) is revoked; False: a token made by an admin, left as it is."""


class AccessToken(BaseModel):
    """The OAuth2 token answer of the password login."""

    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 (the OAuth2 type word)
    expires_in: int
