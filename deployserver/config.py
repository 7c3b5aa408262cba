"""Settings: every knob of the server, read from DEPLOYSERVER_* environment variables."""

from __future__ import annotations

import os
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def parse_networks(text: str) -> tuple[IPv4Network | IPv6Network, ...]:
    """Comma-separated CIDRs (``10.0.0.0/8, ::1/128``); a bare address is its own network."""
    networks = []
    for word in (w.strip() for w in text.split(",")):
        if word:
            try:
                networks.append(ip_network(word, strict=False))
            except ValueError as exc:
                raise ValueError(f"{word!r} is not a network (like 10.0.0.0/8): {exc}") from exc
    return tuple(networks)


class Settings(BaseSettings):
    """The server's configuration; each field also reads ``DEPLOYSERVER_<FIELD>``."""

    model_config = SettingsConfigDict(
        env_prefix="DEPLOYSERVER_", extra="ignore", hide_input_in_errors=True
    )

    host: str = "127.0.0.1"
    """Address the HTTP server binds to."""
    port: int = 8000
    """Port the HTTP server listens on."""
    grpc_port: int | None = Field(default=None, ge=0, le=65535)
    """Port of the Open Inference Protocol's gRPC service, on ``host`` beside the HTTP
    server (0: any free port); unset: no gRPC."""
    data_dir: Path = Path("./data")
    """Folder for the embedded database, uploaded deployments and staging space."""
    database_url: str | None = None
    """SQLAlchemy URL; empty means SQLite at ``<data_dir>/deployserver.db``."""
    runtime: Literal["docker", "process", "swarm"] = "docker"
    """Where serving cells run: Docker containers, local processes, or the services of a
    Docker Swarm whose manager is the local engine."""
    registry: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[a-z0-9._/-]+)?$"
    )
    """Registry (``host[:port][/path]``) the Swarm runtime pushes the cell and environment
    images to, and every node pulls them from, pinned by digest; unset: the images stay
    on this engine, so tasks can only run on this node."""
    swarm_network: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    """The overlay network (attachable, internal) of the Swarm runtime's cells; made when
    missing. Unset: ``ds-<instance>-cells``."""
    swarm_server_url: str | None = Field(default=None, pattern=r"^https?://[^\s/]+$")
    """How cells reach this server over the overlay to fetch their files (``http://host:
    port``); unset: the server's own address on the overlay and its port."""

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

    max_header_bytes: int = Field(default=64 * 1024, ge=1024)
    """Most bytes of a request's line and headers (431 above)."""
    max_header_count: int = Field(default=100, ge=8)
    """Most header lines in one request (431 above)."""
    header_timeout: float = Field(default=30.0, gt=0)
    """Seconds a connection has to send a complete request head (408 after)."""
    body_idle_timeout: float = Field(default=60.0, gt=0)
    """Seconds a request body may send nothing before the request ends (408, and an
    upload's staging folder is removed)."""
    shutdown_grace: float = Field(default=10.0, gt=0)
    """Seconds a stopping server waits for requests in flight before closing them."""

    cell_image: str = "deployserver/cell:latest"
    """Image every Docker cell (and environment image) is built from."""
    cell_port: int = Field(default=8080, ge=1, le=65535)
    """Port the cell listens on inside its container."""
    cell_grpc_port: int = Field(default=8081, ge=1, le=65535)
    """Port of the cell's gRPC service inside its container."""
    default_cpus: float = Field(default=1.0, gt=0)
    """CPU limit of a cell whose metadata sets none."""
    default_memory: str = "1g"
    """Memory limit of a cell whose metadata sets none."""
    pids_limit: int = Field(default=256, ge=16)
    """Most processes/threads in one cell."""
    max_cell_memory: str = Field(default="16g", pattern=r"^[1-9][0-9]*(\.[0-9]+)?([kmg]i?b?)?$")
    """Most memory a deployment's ``resources.memory`` may ask for (422 at upload above)."""
    max_cell_cpus: float = Field(default_factory=lambda: float(os.cpu_count() or 1), gt=0)
    """Most CPUs a deployment's ``resources.cpus`` may ask for; default: the host's cores."""
    max_replicas: int = Field(default=16, ge=1, le=1000)
    """Most replicas one deployment's ``scaling.max_replicas`` may ask for (422 above)."""
    min_idle_seconds: float = Field(default=1.0, gt=0)
    """Shortest ``scaling.idle_seconds`` a deployment may ask for (422 below)."""
    autoscale_stable_window: float = Field(default=60.0, gt=0)
    """Seconds of in-flight requests the autoscaler averages over."""
    autoscale_panic_window: float = Field(default=6.0, gt=0)
    """Shorter window that takes over when load doubles what the replicas are sized for."""
    scale_down_delay: float = Field(default=30.0, ge=0)
    """Seconds the autoscaler must have wanted fewer replicas before it removes any."""
    zero_after_paused: float = Field(default=600.0, gt=0)
    """Seconds a paused model stays paused (memory kept) before its replicas are removed."""
    drain_timeout: float = Field(default=30.0, gt=0)
    """Seconds a replica taken out of service has to finish its requests before it stops."""
    wake_queue: int = Field(default=256, ge=0)
    """Requests to a model with no running replica held while one wakes (429 above)."""
    wake_timeout: float = Field(default=120.0, gt=0)
    """Seconds a held request waits for its model to wake before 503."""
    allow_egress: bool = False
    """Whether a deployment may ask for network egress (metadata ``"network": {"egress":
    true}``); otherwise such an upload is refused and every cell reaches nothing at all."""
    cell_subnets: str = "10.213.0.0/16"
    """Address range the Docker runtime carves each cell's own small network from (a /29
    per cell); pick one that no network of this host or its neighbours uses."""
    server_container: str | None = None
    """The container this server runs in (id or name), when it runs in one on the same
    Docker Engine as its cells; unset: found by itself from /proc/self/mountinfo."""
    cell_log_max_bytes: int = Field(default=10 * 1024**2, ge=64 * 1024)
    """Size at which a cell's log is rotated (Docker ``max-size``; the process runtime's
    log file likewise)."""
    cell_log_files: int = Field(default=3, ge=1, le=20)
    """Log files kept per cell, the current one included (Docker ``max-file``)."""
    health_first_delay: float = Field(default=0.05, gt=0)
    """Seconds before the second health ping of a new cell (the first goes at once)."""
    health_max_delay: float = Field(default=0.5, gt=0)
    """Longest wait between two health pings of a new cell."""
    health_deadline: float = Field(default=180.0, gt=0)
    """Seconds a new cell has to become ready before it is failed."""
    reconcile_interval: float = Field(default=2.0, gt=0)
    """Seconds between two passes of the reconciler."""
    idle_pass_backoff: float = Field(default=5.0, ge=1)
    """After passes that found nothing to do, the reconciler and the prediction worker
    wait longer, doubling up to this many times their interval (1: never); a request
    that needs them wakes them at once. Idle, 50 watched cells cost a third less CPU."""
    watch_interval: float = Field(default=10.0, gt=0)
    """Seconds between two health pings of each ready cell."""
    health_ping_timeout: float = Field(default=2.0, gt=0)
    """Seconds one health ping may take in all (connect, headers and body), not per read:
    a cell that drips its answer is cut off."""
    watch_concurrency: int = Field(default=16, ge=1)
    """Health pings of ready cells in flight at once."""
    crash_loop_budget: int = Field(default=5, ge=0)
    """Restarts of a crashing cell before it is failed."""
    crash_forgive_seconds: float = Field(default=600.0, gt=0)
    """A cell healthy this long after its last start has its crash count reset."""
    restart_backoff: float = Field(default=1.0, gt=0)
    """First wait before restarting a crashed cell; doubles each time."""
    restart_backoff_max: float = Field(default=60.0, gt=0)
    """Longest wait before restarting a crashed cell."""
    build_uid: int | None = Field(default=10002, ge=1)
    """User (and group) id pip runs as on the host when the server runs as root: it cannot
    read the data folder, the database or the server's secrets. Unset: the server's user."""
    build_python: str | None = None
    """Interpreter whose pip downloads and installs requirements; unset: the server's own
    when the build user can run it, else the system's ``/usr/bin/python3``."""
    build_timeout: float = Field(default=900.0, gt=0)
    """Seconds one pip run may take before it is stopped (and the build failed)."""
    admin_token: SecretStr | None = None
    """An admin bearer token chosen by the operator (32+ characters, not starting ``dst_``);
    when unset, the server mints one on first start into ``<data_dir>/admin-token``."""
    login_token_seconds: int = Field(default=3600, ge=60)
    """Lifetime of the tokens the password login (``POST /api/v1/auth/token``) hands out."""
    metrics_public: bool = False
    """Whether ``/metrics`` answers without a token; by default it needs the ``read`` scope
    (its labels name every model, private ones included)."""
    login_client_per_minute: int = Field(default=30, ge=1)
    """Password logins one client address may try per minute (a burst of as many; 429 above)."""
    login_name_per_minute: int = Field(default=10, ge=1)
    """Password logins one user name may be tried with per minute, from anywhere (429 above)."""
    login_lockout_after: int = Field(default=5, ge=1)
    """Failed logins in a row after which a user name is locked out (known or not)."""
    login_lockout_seconds: float = Field(default=30.0, gt=0)
    """First lockout of a user name; each further failure doubles it."""
    login_lockout_max_seconds: float = Field(default=900.0, gt=0)
    """Longest lockout; a name's failures are forgotten after twice this without one."""
    login_hash_slots: int = Field(default=2, ge=1)
    """Password hashes (64 MiB of memory each) computed at once; other logins wait."""
    login_hash_wait_seconds: float = Field(default=2.0, gt=0)
    """Longest wait for a hashing slot before a login is answered 503 (Retry-After)."""
    lookup_cache_entries: int = Field(default=10_000, ge=1)
    """Most entries each in-memory lookup cache keeps (routes of models, accepted tokens);
    the least recently used go first."""
    lookup_cache_misses: int = Field(default=1_000, ge=1)
    """Most misses each lookup cache remembers (names that are no model, refused tokens),
    for as briefly as its hits: repeating one costs no query, inventing new ones no memory."""
    trusted_proxies: str | None = None
    """Addresses (comma-separated IPs or networks, ``*`` for any) of reverse proxies whose
    X-Forwarded-For/-Proto say who the caller is; unset: none, the connection's peer is."""
    events_keepalive: float = Field(default=15.0, gt=0, le=3600)
    """Seconds of silence after which the event stream sends a keep-alive comment (and
    checks that the reader's token still holds: a revoked or expired one ends it)."""
    events_queue_size: int = Field(default=256, ge=1, le=100_000)
    """Events one stream's reader may fall behind before the server drops it."""
    events_max_streams: int = Field(default=500, ge=1)
    """Event streams open at once (503 past it)."""

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
    grpc_timeout: float = Field(default=300.0, gt=0)
    """Seconds a gRPC call may wait for its cell's answer (DEADLINE_EXCEEDED after); a
    caller's shorter deadline wins."""
    grpc_max_message_bytes: int = Field(default=64 * 1024**2, ge=1024, le=2**31 - 1)
    """Largest gRPC request or answer, in bytes (RESOURCE_EXHAUSTED above)."""
    grpc_max_concurrency: int = Field(default=100, ge=1)
    """gRPC calls handled at once; one more is refused with RESOURCE_EXHAUSTED."""
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
    webhook_allow: str = ""
    """Networks (CIDRs, comma-separated, e.g. ``10.1.0.0/16,fd00::/8``) webhooks may reach
    although they are loopback, private, link-local or otherwise not public: on-prem hooks.
    Empty: webhooks reach public addresses only."""
    webhook_timeout: float = Field(default=10.0, gt=0)
    """Seconds one webhook try may take, from connecting to the receiver's status line."""
    max_prediction_result_bytes: int = Field(default=256 * 1024**2, ge=1024)
    """Largest answer an asynchronous prediction may store; a larger one fails it."""
    async_anonymous: bool = False
    """Whether a public model's asynchronous predictions need no token (``/serve`` of a
    public model never does). Off: the async API needs the ``predict`` scope."""
    async_max_pending_per_model: int = Field(default=1000, ge=1)
    """Most queued and running asynchronous predictions of one model (429 above)."""
    async_max_pending_per_caller: int = Field(default=100, ge=1)
    """Most queued and running asynchronous predictions of one caller (a token's name;
    anonymous callers count as one) (429 above)."""
    async_max_stored_bytes_per_model: int = Field(default=4 * 1024**3, ge=1)
    """Most bytes of requests and results one model's asynchronous predictions may keep
    (507 at submission above it; an answer that would pass it fails its prediction)."""
    async_max_stored_bytes_per_caller: int = Field(default=1024**3, ge=1)
    """Most bytes of requests and results one caller's asynchronous predictions may keep."""

    @field_validator("webhook_allow")
    @classmethod
    def _webhook_allow(cls, value: str) -> str:
        parse_networks(value)  # refuse a typo at start-up, not at the first webhook
        return value

    @property
    def webhook_networks(self) -> tuple[IPv4Network | IPv6Network, ...]:
        """The networks of ``webhook_allow``, parsed."""
        return parse_networks(self.webhook_allow)

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
