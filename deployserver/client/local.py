"""What a client works out on its own: the token it sends (the local admin token of a
server on this machine, if nothing else was given) and when a deployment has settled."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from deployserver.domain import ADMIN_TOKEN_FILE, DeploymentStatus, DesiredState
from deployserver.schemas import DeploymentRead


def local_admin_token(data_dir: Path, environ: Mapping[str, str] | None = None) -> str | None:
    """The admin token a local client can use: DEPLOYSERVER_ADMIN_TOKEN when set (in
    ``environ``, default the process's), else the one the server wrote to
    ``<data_dir>/admin-token``; None when there is neither (or it cannot be read)."""
    environ = os.environ if environ is None else environ
    if token := environ.get("DEPLOYSERVER_ADMIN_TOKEN"):
        return token
    try:
        return (data_dir / ADMIN_TOKEN_FILE).read_text().strip() or None
    except (FileNotFoundError, PermissionError):
        return None


RESTING = {
    DesiredState.RUNNING: frozenset({DeploymentStatus.READY, DeploymentStatus.FAILED}),
    DesiredState.STOPPED: frozenset(
        {DeploymentStatus.STOPPED, DeploymentStatus.FAILED, DeploymentStatus.RECEIVED}
    ),
}
"""Per desired state, the statuses a deployment rests in until someone asks for a change."""


def settled(record: DeploymentRead) -> bool:
    """Whether the deployment reached what was last asked of it (or failed trying)."""
    return record.status in RESTING.get(record.desired_state, RESTING[DesiredState.RUNNING])


_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def _is_local(url: str) -> bool:
    return (urlsplit(url).hostname or "") in _LOCAL_HOSTS


def resolve_token(url: str, token: str | None = None) -> str | None:
    """The token to send: ``token``, else ``DEPLOYSERVER_TOKEN``, else, for a server on this
    machine, the local admin token (``DEPLOYSERVER_ADMIN_TOKEN`` or ``<data-dir>/admin-token``
    with the data folder from ``DEPLOYSERVER_DATA_DIR``, default ``./data``)."""
    if token:
        return token
    if env_token := os.environ.get("DEPLOYSERVER_TOKEN"):
        return env_token
    if _is_local(url):
        return local_admin_token(Path(os.environ.get("DEPLOYSERVER_DATA_DIR", "data")))
    return None
