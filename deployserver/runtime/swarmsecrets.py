"""A deployment's archive credential as a Swarm secret its replicas share."""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any

from docker.errors import APIError, NotFound

from deployserver.runtime.base import (
    LABEL_DEPLOY_ID,
    LABEL_INSTANCE,
    LABEL_MANAGED,
    CellSpec,
    CellStartError,
)

LABEL_CREDENTIAL = "deployserver.credential"
"""A secret's label: a fingerprint of the credential it holds (never the credential)."""


def _fingerprint(credential: str) -> str:
    return hashlib.sha256(credential.encode()).hexdigest()[:16]


def _mine(row: dict[str, Any], name: str, instance: str) -> bool:
    labels = row["Spec"].get("Labels") or {}
    return bool(row["Spec"]["Name"] == name and labels.get(LABEL_INSTANCE) == instance)


def ensure(api: Any, instance: str, name: str, spec: CellSpec, credential: str) -> str:
    """The secret's id: the one there is when it holds this credential, else a fresh one
    (the key may have changed)."""
    held = _fingerprint(credential)
    for row in api.secrets(filters={"name": name}):
        if _mine(row, name, instance) and row["Spec"]["Labels"].get(LABEL_CREDENTIAL) == held:
            return str(row["ID"])
    remove(api, instance, name)
    tagged = {LABEL_MANAGED: "1", LABEL_INSTANCE: instance, LABEL_DEPLOY_ID: spec.deploy_id}
    tagged[LABEL_CREDENTIAL] = held
    try:
        made = api.create_secret(name, credential.encode(), labels=tagged)
    except APIError as exc:
        raise CellStartError(f"the cell's secret: {exc.explanation}") from exc
    return str(made["ID"])


def remove(api: Any, instance: str, name: str) -> None:
    for row in api.secrets(filters={"name": name}):
        if _mine(row, name, instance):
            with contextlib.suppress(NotFound, APIError):
                api.remove_secret(row["ID"])
