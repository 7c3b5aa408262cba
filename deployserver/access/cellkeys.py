"""Archive credentials: what a cell on another node shows to fetch its deployment's files.

A credential is ``dsa_<deploy_id>_<mac>``, the MAC an HMAC-SHA256 of the deployment id
under a key only the server knows (``<data_dir>/cell-key``, 0600). Nothing is stored per
deployment: the server recomputes the MAC and compares. A credential names one
deployment and opens one door, that deployment's archive; it is no API token (the token
guards never accept it, it carries no scope) and a cell of another deployment holds a
different one. It stops working with its deployment's files (deleted) or when the key
file is replaced (every cell then needs a restart to fetch again).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from deployserver.config import Settings
from deployserver.errors import NotAuthenticated, PermissionDenied
from deployserver.store.files import write_private

KEY_FILE = "cell-key"
PREFIX = "dsa_"
_FORMAT = re.compile(r"^dsa_([a-z0-9]{8,40})_([0-9a-f]{64})$")
_PURPOSE = b"deployserver cell archive\0"


def cell_key(settings: Settings) -> bytes:
    """The server's archive key, made on first use."""
    path = settings.data_dir / KEY_FILE
    if not path.exists():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        write_private(path, secrets.token_hex(32))
    return path.read_text().strip().encode()


def _mac(key: bytes, deploy_id: str) -> str:
    return hmac.new(key, _PURPOSE + deploy_id.encode(), hashlib.sha256).hexdigest()


def archive_credential(key: bytes, deploy_id: str) -> str:
    """The credential the cells of ``deploy_id`` (and only they) are given."""
    if not re.fullmatch(r"[a-z0-9]{8,40}", deploy_id):
        raise ValueError(f"not a deploy_id: {deploy_id!r}")
    return f"{PREFIX}{deploy_id}_{_mac(key, deploy_id)}"


def check_archive_credential(key: bytes, deploy_id: str, presented: str | None) -> None:
    """Pass when ``presented`` is the credential of ``deploy_id``; NotAuthenticated for
    none or a forged one, PermissionDenied for a valid one of another deployment."""
    if not presented:
        raise NotAuthenticated("a deployment's archive needs its cell credential (Bearer dsa_...)")
    match = _FORMAT.match(presented)
    if match is None or not hmac.compare_digest(match.group(2), _mac(key, match.group(1))):
        raise NotAuthenticated("invalid cell credential")
    if match.group(1) != deploy_id:
        raise PermissionDenied("this cell credential reads another deployment only")
