"""Database tables, as typed SQLAlchemy 2 mappings; no logic lives here."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from deployserver.domain import (
    Activation,
    DeploymentStatus,
    DesiredState,
    PredictionStatus,
    ReplicaState,
)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


E = TypeVar("E", bound=StrEnum)


class StrEnumColumn(TypeDecorator[E]):
    """A StrEnum stored as its plain string (the schema stays VARCHAR), read back as the
    enum; an unknown string in the database is an error, not a silent value."""

    impl = String(16)
    cache_ok = True

    def __init__(self, enum: type[E]) -> None:
        super().__init__()
        self.enum = enum

    def process_bind_param(self, value: E | str | None, dialect: Dialect) -> str | None:
        return None if value is None else self.enum(value).value

    def process_result_value(self, value: str | None, dialect: Dialect) -> E | None:
        return None if value is None else self.enum(value)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend (SQLite returns naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON,
    }


class Model(Base):
    """An ML model: a name that groups its deployments and counts their versions."""

    __tablename__ = "models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    last_version: Mapped[int] = mapped_column(Integer, default=0)
    active_deploy_id: Mapped[str | None] = mapped_column(String(40), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Deployment(Base):
    """One upload of a model's artefacts: immutable files, desired and observed state."""

    __tablename__ = "deployments"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    deploy_id: Mapped[str] = mapped_column(String(40), unique=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)
    entrypoint: Mapped[str] = mapped_column(String(300))
    contract: Mapped[str] = mapped_column(String(20))
    status: Mapped[DeploymentStatus] = mapped_column(StrEnumColumn(DeploymentStatus), index=True)
    status_reason: Mapped[str | None] = mapped_column(Text, default=None)
    desired_state: Mapped[DesiredState] = mapped_column(StrEnumColumn(DesiredState))
    total_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    activation: Mapped[Activation | None] = mapped_column(StrEnumColumn(Activation), default=None)
    """Switch the model to this deployment once ready (see Activation); None once done
    or given up."""
    restart_requested: Mapped[bool] = mapped_column(default=False)
    desired_replicas: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    """Replicas the autoscaler (within the scaling's bounds) wants running now."""
    paused: Mapped[bool] = mapped_column(default=False, server_default=false())
    """Idle past ``idle_seconds``: its replicas are to be paused (memory kept)."""
    tier: Mapped[str | None] = mapped_column(String(20), default=None)
    """The autoscaler's last word on how awake it is (see domain.Tier); None: serving."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    model: Mapped[Model] = relationship(lazy="joined")
    files: Mapped[list[DeploymentFile]] = relationship(
        order_by="DeploymentFile.path", cascade="all, delete-orphan", passive_deletes=True
    )
    cells: Mapped[list[Cell]] = relationship(
        order_by="Cell.slot", cascade="all, delete-orphan", passive_deletes=True, lazy="selectin"
    )
    """One row per replica slot; a slot whose cell is gone has no ``runtime_id``."""

    @property
    def live_cells(self) -> list[Cell]:
        """The replicas that have a cell (in any state)."""
        return [c for c in self.cells if c.runtime_id is not None]

    @property
    def cell(self) -> Cell | None:
        """The first ready replica, else the first live one (what ``cell`` shows)."""
        live = self.live_cells
        ready = [c for c in live if c.state is ReplicaState.READY]
        first = ready or live
        return first[0] if first else None


class DeploymentFile(Base):
    """A file stored under a deployment's folder, with its size and sha256."""

    __tablename__ = "deployment_files"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    deployment_seq: Mapped[int] = mapped_column(
        ForeignKey("deployments.seq", ondelete="CASCADE"), index=True
    )
    path: Mapped[str] = mapped_column(String(1024))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))


class Cell(Base):
    """One replica slot of a deployment: the cell last started in it, as the runtime
    reported it, with its own restarts and crash count."""

    __tablename__ = "cells"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    deployment_seq: Mapped[int] = mapped_column(
        ForeignKey("deployments.seq", ondelete="CASCADE"), index=True
    )
    slot: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    state: Mapped[ReplicaState] = mapped_column(
        StrEnumColumn(ReplicaState), default=ReplicaState.STARTING, server_default="ready"
    )
    node: Mapped[str | None] = mapped_column(String(200), default=None)
    """Where the cell runs, as the record shows it: the runtime's host, or the cluster node
    Swarm placed it on (its node id)."""
    runtime: Mapped[str] = mapped_column(String(16))
    runtime_id: Mapped[str | None] = mapped_column(String(100), default=None)
    url: Mapped[str | None] = mapped_column(String(300), default=None)
    grpc_address: Mapped[str | None] = mapped_column(String(300), default=None)
    """``host:port`` of the cell's gRPC service; None when it serves none."""
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    restarts: Mapped[int] = mapped_column(Integer, default=0)
    crashes: Mapped[int] = mapped_column(Integer, default=0)
    last_health_at: Mapped[datetime | None] = mapped_column(default=None)


class Event(Base):
    """One step of a deployment's lifecycle history: who or what did it, and when."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    deployment_seq: Mapped[int] = mapped_column(
        ForeignKey("deployments.seq", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(40))
    message: Mapped[str] = mapped_column(Text)
    actor: Mapped[str | None] = mapped_column(String(100), default=None)


class User(Base):
    """A person who logs in with a password and is handed short-lived tokens."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    scopes: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiToken(Base):
    """A bearer token: public id for lookup, sha256 of its secret, name, scopes, lifetime."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(100))
    scopes: Mapped[str] = mapped_column(String(100))
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True, default=None
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)

    user: Mapped[User | None] = relationship(lazy="joined")


class Prediction(Base):
    """An asynchronous prediction: the request as received, then its result or error."""

    __tablename__ = "predictions"
    # Quotas count a model's or a caller's waiting predictions and sum their bytes from
    # these alone, never reading the rows (which hold request bodies).
    __table_args__ = (
        Index("ix_predictions_model_usage", "model", "status", "request_bytes", "result_bytes"),
        Index("ix_predictions_actor_usage", "actor", "status", "request_bytes", "result_bytes"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[str] = mapped_column(String(40), unique=True)
    model: Mapped[str] = mapped_column(String(63), index=True)
    deploy_id: Mapped[str | None] = mapped_column(String(40), default=None)
    status: Mapped[PredictionStatus] = mapped_column(StrEnumColumn(PredictionStatus), index=True)
    content_type: Mapped[str] = mapped_column(String(200))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    webhook: Mapped[str | None] = mapped_column(String(2000), default=None)
    path: Mapped[str | None] = mapped_column(String(256), default=None)
    """The cell path the request goes to; None is the cell's ``predict``."""
    webhook_status: Mapped[str | None] = mapped_column(String(200), default=None)
    result: Mapped[Any | None] = mapped_column(JSON, default=None)
    """The result when it is kept inline (small JSON); see result_offset."""
    error: Mapped[str | None] = mapped_column(Text, default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    actor: Mapped[str | None] = mapped_column(String(100), default=None)
    request_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    """Size of ``body``, counted against the storage quotas."""
    result_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    """Bytes the result takes: its file's size, or the inline answer's."""
    result_offset: Mapped[int | None] = mapped_column(BigInteger, default=None)
    """Where the result starts in ``<data-dir>/predictions/<request_id>`` (it ends at
    ``result_bytes``); None when the result is inline or there is none."""
    result_type: Mapped[str | None] = mapped_column(String(200), default=None)
    """Media type of a succeeded prediction's result (``application/json`` or the cell's)."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    completed_at: Mapped[datetime | None] = mapped_column(default=None, index=True)
