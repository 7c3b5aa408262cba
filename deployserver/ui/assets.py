"""The UI's files, read once into memory: each with its content type and ETag, one version
hash over them all for their URLs, and the shell page that names that version."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from string import Template

from deployserver.upload.metadata import DeploymentMetadata

STATIC_DIR = Path(__file__).parent / "static"
SHELL_FILE = Path(__file__).parent / "shell.html"
CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
}
"""The only kinds of file served; a file of another kind in the folder is not served."""
METADATA_SCHEMA = "metadata.schema.json"
"""The upload metadata's JSON schema, made from the server's own model: the upload form
checks against it before sending."""


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def _asset(body: bytes, content_type: str) -> Asset:
    return Asset(body, content_type, f'"{hashlib.sha256(body).hexdigest()[:32]}"')


@dataclass(frozen=True)
class Bundle:
    """Everything the UI serves; ``version`` changes whenever any file does."""

    version: str
    files: dict[str, Asset]
    shell: Asset

    @property
    def base(self) -> str:
        return f"/ui/static/{self.version}"


def load() -> Bundle:
    """Read the static folder (and make the metadata schema) into a bundle."""
    raw: dict[str, bytes] = {}
    for path in sorted(STATIC_DIR.rglob("*")):
        if path.is_file() and path.suffix in CONTENT_TYPES:
            raw[path.relative_to(STATIC_DIR).as_posix()] = path.read_bytes()
    schema = DeploymentMetadata.model_json_schema()
    raw[METADATA_SCHEMA] = json.dumps(schema, indent=1, sort_keys=True).encode()
    digest = hashlib.sha256()
    for name, body in raw.items():
        digest.update(name.encode() + b"\0" + hashlib.sha256(body).digest())
    shell_text = SHELL_FILE.read_text(encoding="utf-8")
    digest.update(shell_text.encode())
    version = digest.hexdigest()[:16]
    files = {name: _asset(body, CONTENT_TYPES[Path(name).suffix]) for name, body in raw.items()}
    shell = Template(shell_text).substitute(base=f"/ui/static/{version}")
    return Bundle(version, files, _asset(shell.encode(), "text/html; charset=utf-8"))
