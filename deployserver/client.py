"""The Python SDK: ``DeployClient`` over the REST API, raising typed errors.

from deployserver.client import DeployClient

with DeployClient("http://127.0.0.1:8000") as ds:
    up = ds.push("my-model/")                 # streams the folder from disk
    record = ds.wait(up.deploy_id)            # ready, or failed with its status_reason
    print(ds.predict("my-model", {"text": "lovely"}))
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urlsplit

import httpx

from deployserver import auth
from deployserver.client_errors import (
    BadRequest,
    Conflict,
    DeployClientError,
    DeployServerAPIError,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    ServerUnreachable,
    ServiceUnavailable,
    Unauthorized,
    UnprocessableEntity,
    UnsupportedMediaType,
    WaitTimeout,
    raise_for_error,
)
from deployserver.packing import MultipartBody, Package, Progress, pack
from deployserver.schemas import DeploymentList, DeploymentRead, EventRead, ModelList, ModelRead

__all__ = [  # the client and every error it raises, importable from here
    "BadRequest",
    "Conflict",
    "DeployClient",
    "DeployClientError",
    "DeployServerAPIError",
    "Forbidden",
    "NotFound",
    "PayloadTooLarge",
    "ServerUnreachable",
    "ServiceUnavailable",
    "Unauthorized",
    "UnprocessableEntity",
    "UnsupportedMediaType",
    "WaitTimeout",
    "resolve_token",
    "settled",
]

DEFAULT_URL = "http://127.0.0.1:8000"
RESTING = {
    "running": frozenset({"ready", "failed"}),
    "stopped": frozenset({"stopped", "failed", "received"}),
}
"""Per desired state, the statuses a deployment rests in until someone asks for a change."""


def settled(record: DeploymentRead) -> bool:
    """Whether the deployment reached what was last asked of it (or failed trying)."""
    return record.status in RESTING.get(record.desired_state, RESTING["running"])


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
        return auth.local_admin_token(Path(os.environ.get("DEPLOYSERVER_DATA_DIR", "data")))
    return None


class DeployClient:
    """A client of one deployserver. ``url`` defaults to ``DEPLOYSERVER_URL`` or
    ``http://127.0.0.1:8000``; for ``token`` see :func:`resolve_token`. Every method raises
    a :class:`~deployserver.client_errors.DeployServerAPIError` subclass when the server
    answers with an error, :class:`ServerUnreachable` when it cannot be reached."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = (url or os.environ.get("DEPLOYSERVER_URL") or DEFAULT_URL).rstrip("/")
        token = resolve_token(self.url, token)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> DeployClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DeployClient({self.url!r})"

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ServerUnreachable(f"cannot reach {self.url}: {exc}") from exc
        raise_for_error(response)
        return response

    def _deployment(self, method: str, path: str, **kwargs: Any) -> DeploymentRead:
        return DeploymentRead.model_validate(self._call(method, path, **kwargs).json())

    # deployments

    def push(
        self,
        path: Path | str | Package,
        *,
        model: str | None = None,
        start: bool = True,
        progress: Progress | None = None,
    ) -> DeploymentRead:
        """Upload a package folder (see :mod:`deployserver.packing`), streamed from disk;
        ``progress(sent, total)`` is called as the bytes go. The record as received."""
        package = path if isinstance(path, Package) else pack(path, model=model)
        body = MultipartBody(package, progress)
        headers = {"Content-Type": body.content_type, "Content-Length": str(body.length)}
        params = {"start": "true" if start else "false"}
        return self._deployment(
            "POST",
            "/api/v1/deployments",
            content=iter(body),
            headers=headers,
            params=params,
            timeout=httpx.Timeout(self._http.timeout.connect, read=None, write=None),
        )

    def get(self, deploy_id: str) -> DeploymentRead:
        """The deployment's record: status, reason, cell, files, metadata."""
        return self._deployment("GET", f"/api/v1/deployments/{quote(deploy_id)}")

    def list(
        self, *, model: str | None = None, status: str | None = None, limit: int | None = None
    ) -> list[DeploymentRead]:
        """Deployments, newest first, every page (or the first ``limit`` ones)."""
        return list(self.iter_deployments(model=model, status=status, limit=limit))

    def iter_deployments(
        self, *, model: str | None = None, status: str | None = None, limit: int | None = None
    ) -> Iterator[DeploymentRead]:
        """Deployments, newest first, fetching pages as they are consumed."""
        params: dict[str, Any] = {k: v for k, v in (("model", model), ("status", status)) if v}
        params["limit"] = min(limit or 100, 100)
        count = 0
        while True:
            page = DeploymentList.model_validate(
                self._call("GET", "/api/v1/deployments", params=params).json()
            )
            for item in page.items:
                if limit is not None and count >= limit:
                    return
                count += 1
                yield item
            if page.next_cursor is None:
                return
            params["cursor"] = page.next_cursor

    def wait(
        self,
        deploy_id: str,
        *,
        until: Collection[str] | None = None,
        timeout: float | None = None,
        on_status: Callable[[DeploymentRead], None] | None = None,
        interval: float = 0.2,
        max_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> DeploymentRead:
        """Poll until the status is one of ``until`` or, by default, :func:`settled` (ready or
        failed when asked to run; stopped when asked to stop); ``on_status(record)`` sees
        each new status. :class:`WaitTimeout` after ``timeout``
        seconds. Polls at ``interval`` seconds, doubling up to ``max_interval``."""
        deadline = None if timeout is None else clock() + timeout
        seen = None
        while True:
            record = self.get(deploy_id)
            if record.status != seen:
                seen = record.status
                if on_status is not None:
                    on_status(record)
            if record.status in until if until is not None else settled(record):
                return record
            if deadline is not None and clock() >= deadline:
                raise WaitTimeout(f"{deploy_id} is still {record.status} after {timeout:g} s")
            sleep(interval)
            interval = min(interval * 2, max_interval)

    def start(self, deploy_id: str) -> DeploymentRead:
        """Ask for the deployment's cell to run (a failed one gets a fresh try)."""
        return self._deployment("POST", f"/api/v1/deployments/{quote(deploy_id)}/start")

    def stop(self, deploy_id: str) -> DeploymentRead:
        """Ask for the deployment's cell to stop."""
        return self._deployment("POST", f"/api/v1/deployments/{quote(deploy_id)}/stop")

    def restart(self, deploy_id: str) -> DeploymentRead:
        """Ask for a fresh cell for the deployment."""
        return self._deployment("POST", f"/api/v1/deployments/{quote(deploy_id)}/restart")

    def delete(self, deploy_id: str) -> None:
        """Stop the cell and remove the deployment's folder and record."""
        self._call("DELETE", f"/api/v1/deployments/{quote(deploy_id)}")

    def logs(self, deploy_id: str, tail: int | None = None) -> str:
        """The cell's output (its last ``tail`` lines; the server's default is 200)."""
        params = {"tail": tail} if tail is not None else {}
        path = f"/api/v1/deployments/{quote(deploy_id)}/logs"
        return self._call("GET", path, params=params).text

    def events(self, deploy_id: str) -> list[EventRead]:
        """The deployment's lifecycle history, oldest first."""
        answer = self._call("GET", f"/api/v1/deployments/{quote(deploy_id)}/events").json()
        return [EventRead.model_validate(e) for e in answer]

    # models

    def models(self) -> list[ModelRead]:
        """Every model with its versions and active deployment."""
        return ModelList.model_validate(self._call("GET", "/api/v1/models").json()).items

    def model(self, name: str) -> ModelRead:
        """One model with its versions and active deployment."""
        return ModelRead.model_validate(self._call("GET", f"/api/v1/models/{quote(name)}").json())

    def rollback(
        self, model: str, *, version: int | None = None, deploy_id: str | None = None
    ) -> DeploymentRead:
        """Make an earlier deployment of ``model`` active again (give one of the two)."""
        body = {"version": version} if deploy_id is None else {"deploy_id": deploy_id}
        return self._deployment("POST", f"/api/v1/models/{quote(model)}/rollback", json=body)

    # predictions

    def _send(
        self, path: str, data: Any, file: Path | str | IO[bytes] | None, **kwargs: Any
    ) -> Any:
        """POST ``data`` as JSON, or ``file`` (a path or an open binary file, streamed) as
        a multipart ``file`` part; the answer's JSON."""
        if file is None:
            return self._call("POST", path, json=data, **kwargs).json()
        if isinstance(file, Path | str):
            with open(file, "rb") as fh:
                return self._send(path, None, fh, **kwargs)
        name = Path(str(getattr(file, "name", "file"))).name
        return self._call("POST", path, files={"file": (name, file)}, **kwargs).json()

    def predict(
        self, model: str, data: Any = None, *, file: Path | str | IO[bytes] | None = None
    ) -> Any:
        """``POST /serve/{model}/predict`` with ``data`` as JSON or ``file`` as a multipart
        ``file`` part; the answer's JSON (``{"predictions": ...}``)."""
        return self._send(f"/serve/{quote(model)}/predict", data, file)

    def predict_async(
        self,
        model: str,
        data: Any = None,
        *,
        file: Path | str | IO[bytes] | None = None,
        webhook: str | None = None,
    ) -> dict[str, Any]:
        """Queue a prediction: ``{"request_id", "status": "queued"}``."""
        params = {"webhook": webhook} if webhook else {}
        path = f"/api/v1/models/{quote(model)}/predictions"
        answer: dict[str, Any] = self._send(path, data, file, params=params)
        return answer

    def get_prediction(self, request_id: str) -> dict[str, Any]:
        """A queued prediction: its status, and ``result`` or ``error`` once done."""
        answer: dict[str, Any] = self._call(
            "GET", f"/api/v1/predictions/{quote(request_id)}"
        ).json()
        return answer
