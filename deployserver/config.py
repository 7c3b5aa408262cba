"""Settings: every knob of the server, read from DEPLOYSERVER_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """The server's configuration; each field also reads ``DEPLOYSERVER_<FIELD>``."""

    model_config = SettingsConfigDict(
        env_prefix="DEPLOYSERVER_", extra="ignore", hide_input_in_errors=True
    )

    host: str = "127.0.0.1"
    """Address the HTTP server binds to."""
    port: int = 8000
    """Port the HTTP server listens on."""
    data_dir: Path = Path("./data")
    """Folder for the embedded database, uploaded deployments and staging space."""
    database_url: str | None = None
    """SQLAlchemy URL; empty means SQLite at ``<data_dir>/deployserver.db``."""
    runtime: Literal["docker", "process"] = "docker"
    """Where serving cells run: Docker containers, or local processes."""

    max_upload_bytes: int = Field(default=8 * 1024**3, ge=1)
    """Largest request body accepted by the upload endpoint (413 above it)."""
    max_upload_parts: int = Field(default=10_000, ge=2)
    """Most multipart parts in one upload (metadata plus files)."""
    max_metadata_bytes: int = Field(default=1024**2, ge=1024)
    """Largest metadata JSON part."""
    max_archive_entries: int = Field(default=10_000, ge=1)
    """Most entries an uploaded archive may hold."""
    max_unpacked_bytes: int = Field(default=16 * 1024**3, ge=1)
    """Most bytes an archive may unpack to, counted as they are written."""
    max_compression_ratio: float = Field(default=200.0, gt=1)
    """Largest unpacked/packed size ratio of an archive (zip bombs stop here)."""

    cell_image: str = "deployserver/cell:latest"
    """Image every Docker cell (and environment image) is built from."""
    cell_port: int = Field(default=8080, ge=1, le=65535)
    """Port the cell listens on inside its container."""
    default_cpus: float = Field(default=1.0, gt=0)
    """CPU limit of a cell whose metadata sets none."""
    default_memory: str = "1g"
    """Memory limit of a cell whose metadata sets none."""
    pids_limit: int = Field(default=256, ge=16)
    """Most processes/threads in one cell."""
    health_first_delay: float = Field(default=0.05, gt=0)
    """Seconds before the second health ping of a new cell (the first goes at once)."""
    health_max_delay: float = Field(default=0.5, gt=0)
    """Longest wait between two health pings of a new cell."""
    health_deadline: float = Field(default=180.0, gt=0)
    """Seconds a new cell has to become ready before it is failed."""
    reconcile_interval: float = Field(default=2.0, gt=0)
    """Seconds between two passes of the reconciler."""
    watch_interval: float = Field(default=10.0, gt=0)
    """Seconds between two health pings of each ready cell."""
    crash_loop_budget: int = Field(default=5, ge=0)
    """Restarts of a crashing cell before it is failed."""
    crash_forgive_seconds: float = Field(default=600.0, gt=0)
    """A cell healthy this long after its last start has its crash count reset."""
    restart_backoff: float = Field(default=1.0, gt=0)
    """First wait before restarting a crashed cell; doubles each time."""
    restart_backoff_max: float = Field(default=60.0, gt=0)
    """Longest wait before restarting a crashed cell."""
    admin_token: SecretStr | None = None
    """An admin bearer token chosen by the operator (32+ characters, not starting ``dst_``);
    when unset, the server mints one on first start into ``<data_dir>/admin-token``."""
    login_token_seconds: int = Field(default=3600, ge=60)
    """Lifetime of the tokens the password login (``POST /api/v1/auth/token``) hands out."""
    metrics_public: bool = True
    """Whether ``/metrics`` answers without a token (else it needs the ``read`` scope)."""

    @field_validator("admin_token")
    @classmethod
    def _admin_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        secret = value.get_secret_value()
        if len(secret) < 32:
            raise ValueError("must be at least 32 characters (try: openssl rand -hex 32)")
        if secret.startswith("dst_"):
            raise ValueError("must not start with 'dst_', the prefix of tokens the server mints")
        return value

    proxy_timeout: float = Field(default=300.0, gt=0)
    """Seconds /serve waits for a cell's answer (504 after)."""
    async_concurrency_per_model: int = Field(default=4, ge=1)
    """Asynchronous predictions one model's cell works on at once."""
    async_poll_interval: float = Field(default=2.0, gt=0)
    """Seconds between looks at the queue when nothing wakes the worker."""
    async_timeout: float = Field(default=300.0, gt=0)
    """Seconds a cell has to answer one asynchronous prediction."""
    async_max_attempts: int = Field(default=20, ge=1)
    """Tries to reach a cell (none ready, cell down) before a prediction fails."""
    async_queue_timeout: float = Field(default=3600.0, gt=0)
    """Seconds a prediction may wait for its model to have a ready cell before it fails."""
    async_retention_seconds: float = Field(default=7 * 24 * 3600, gt=0)
    """Finished asynchronous predictions are purged after this long."""
    max_prediction_bytes: int = Field(default=16 * 1024**2, ge=1)
    """Largest body of one asynchronous prediction (kept in the database)."""
    webhook_secret: SecretStr | None = None
    """HMAC key of webhook signatures; unset: one is kept in ``<data_dir>/webhook-secret``."""
    webhook_attempts: int = Field(default=5, ge=1)
    """Tries to deliver a webhook."""
    webhook_backoff: float = Field(default=0.5, gt=0)
    """First wait between webhook tries; doubles up to 30 s."""

    @field_validator("data_dir")
    @classmethod
    def _absolute_data_dir(cls, value: Path) -> Path:
        """Absolute from the start: cells run in other folders, Docker needs host paths."""
        return value.expanduser().resolve()

    @property
    def resolved_database_url(self) -> str:
        """The database URL in force: the configured one or the embedded SQLite file."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'deployserver.db').resolve()}"

    @property
    def deployments_dir(self) -> Path:
        """Where each deployment's folder lives, as ``<deployments_dir>/<deploy_id>``."""
        return self.data_dir / "deployments"

    @property
    def logs_dir(self) -> Path:
        """Output kept from cells that have been stopped or have failed."""
        return self.data_dir / "logs"

    @property
    def staging_dir(self) -> Path:
        """Scratch space for uploads in flight; the same filesystem as deployments_dir."""
        return self.data_dir / "staging"
