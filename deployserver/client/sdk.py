"""The Python SDK: ``DeployClient`` over the REST API, raising typed errors.

from deployserver.client import DeployClient

with DeployClient("http://127.0.0.1:8000") as ds:
    up = ds.push("my-model/")                 # streams the folder from disk
    record = ds.wait(up.deploy_id)            # ready, or failed with its status_reason
    print(ds.predict("my-model", {"text": "lovely"}))
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import httpx

from deployserver.client.errors import (
    BadRequest,
    Conflict,
    DeployClientError,
    DeployServerAPIError,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    ServerUnreachable,
    ServiceUnavailable,
    StreamEnded,
    TooManyRequests,
    Unauthorized,
    UnprocessableEntity,
    UnsupportedMediaType,
    WaitTimeout,
    raise_for_error,
)
from deployserver.client.local import resolve_token, settled
from deployserver.client.packing import MultipartBody, Package, Progress, pack
from deployserver.client.sse import messages
from deployserver.schemas import (
    AccessToken,
    DeploymentList,
    DeploymentRead,
    EventRead,
    ModelList,
    ModelRead,
    SignedOut,
    StreamEvent,
)

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
    "StreamEnded",
    "TooManyRequests",
    "Unauthorized",
    "UnprocessableEntity",
    "UnsupportedMediaType",
    "WaitTimeout",
    "resolve_token",
    "settled",
]

log = logging.getLogger("deployserver.client")
DEFAULT_URL = "http://127.0.0.1:8000"


class DeployClient:
    """A client of one deployserver. ``url`` defaults to ``DEPLOYSERVER_URL`` or
    ``http://127.0.0.1:8000``; for ``token`` see :func:`resolve_token`. Every method raises
    a :class:`~deployserver.client.errors.DeployServerAPIError` subclass when the server
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

    # access

    def login(self, username: str, password: str, *, scopes: Collection[str] = ()) -> AccessToken:
        """Trade a user's password for a short-lived token (all the user's scopes, or
        ``scopes``), and send that token from now on. Too many tries raise
        :class:`TooManyRequests` (its ``retry_after`` says when to try again)."""
        form = {"username": username, "password": password, "scope": " ".join(scopes)}
        answer = self._call("POST", "/api/v1/auth/token", data=form).json()
        token = AccessToken.model_validate(answer)
        self._http.headers["Authorization"] = f"Bearer {token.access_token}"
        return token

    def logout(self) -> SignedOut:
        """Sign out: the token this client sends is revoked if a password login gave it
        (``revoked``), and no longer sent either way."""
        answer = SignedOut.model_validate(self._call("POST", "/api/v1/auth/logout").json())
        self._http.headers.pop("Authorization", None)
        return answer

    # deployments

    def push(
        self,
        path: Path | str | Package,
        *,
        model: str | None = None,
        start: bool = True,
        progress: Progress | None = None,
    ) -> DeploymentRead:
        """Upload a package folder (see :mod:`deployserver.client.packing`), streamed from disk;
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

    def scale(self, deploy_id: str, **scaling: float | bool | None) -> DeploymentRead:
        """Change the replicas live: ``min_replicas``, ``max_replicas``,
        ``target_concurrency``, ``idle_seconds``, ``resend_dropped`` (those given
        change)."""
        body = {k: v for k, v in scaling.items() if v is not None}
        path = f"/api/v1/deployments/{quote(deploy_id)}/scaling"
        return self._deployment("PUT", path, json=body)

    def delete(self, deploy_id: str) -> None:
        """Stop the cell and remove the deployment's folder and record."""
        self._call("DELETE", f"/api/v1/deployments/{quote(deploy_id)}")

    def logs(self, deploy_id: str, tail: int | None = None) -> str:
        """The cell's output (its last ``tail`` lines; the server's default is 200)."""
        params = {"tail": tail} if tail is not None else {}
        path = f"/api/v1/deployments/{quote(deploy_id)}/logs"
        return self._call("GET", path, params=params).text

    def events(self, deploy_id: str) -> builtins.list[EventRead]:
        """The deployment's lifecycle history, oldest first."""
        answer = self._call("GET", f"/api/v1/deployments/{quote(deploy_id)}/events").json()
        return [EventRead.model_validate(e) for e in answer]

    def stream_events(
        self,
        *,
        model: str | None = None,
        deploy_id: str | None = None,
        since: int | None = None,
        tail: int | None = None,
        follow: bool = True,
    ) -> Iterator[StreamEvent]:
        """Deployment events as the server pushes them (``GET /api/v1/events/stream``):
        first the recorded ones after event id ``since`` or the last ``tail`` ones, then,
        with ``follow``, each new one as it happens, until the caller stops iterating.
        :class:`StreamEnded` when the server ends the stream (token revoked or expired,
        reader too far behind, server stopping)."""
        params: dict[str, Any] = {
            k: v
            for k, v in (("model", model), ("deploy_id", deploy_id), ("since", since))
            if v is not None
        }
        if tail is not None:
            params["tail"] = tail
        params["follow"] = "true" if follow else "false"
        timeout = httpx.Timeout(self._http.timeout.connect, read=None)
        try:
            with self._http.stream(
                "GET", "/api/v1/events/stream", params=params, timeout=timeout
            ) as response:
                raise_for_error(response)
                for message in messages(response.iter_lines()):
                    if message.event == "message":
                        yield StreamEvent.model_validate_json(message.data)
                    elif message.event == "end":
                        raise StreamEnded(json.loads(message.data).get("message", "ended"))
                    elif message.event == "gap":
                        log.warning("event stream: %s", json.loads(message.data).get("message"))
        except httpx.TransportError as exc:
            raise ServerUnreachable(f"lost the event stream of {self.url}: {exc}") from exc

    # models

    def models(self) -> builtins.list[ModelRead]:
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
        a multipart ``file`` part; the answer's JSON (a list of items for JSON lines)."""
        if file is None:
            return _json_of(self._call("POST", path, json=data, **kwargs))
        if isinstance(file, Path | str):
            with open(file, "rb") as fh:
                return self._send(path, None, fh, **kwargs)
        name = Path(str(getattr(file, "name", "file"))).name
        return _json_of(self._call("POST", path, files={"file": (name, file)}, **kwargs))

    def predict(
        self,
        model: str,
        data: Any = None,
        *,
        file: Path | str | IO[bytes] | None = None,
        path: str = "predict",
    ) -> Any:
        """``POST /serve/{model}/{path}`` (``predict`` unless given, e.g.
        ``api/v1.0/predictions``) with ``data`` as JSON or ``file`` as a multipart ``file``
        part; the answer's JSON (``{"predictions": ...}`` from ``predict``; a streaming
        model's items as a list)."""
        return self._send(f"/serve/{quote(model)}/{cell_path(path)}", data, file)

    def predict_async(
        self,
        model: str,
        data: Any = None,
        *,
        file: Path | str | IO[bytes] | None = None,
        webhook: str | None = None,
        path: str | None = None,
    ) -> dict[str, Any]:
        """Queue a prediction (for the cell's ``path``, ``predict`` unless given):
        ``{"request_id", "status": "queued"}``."""
        params = {"webhook": webhook} if webhook else {}
        if path is not None:
            params["path"] = cell_path(path)
        path = f"/api/v1/models/{quote(model)}/predictions"
        answer: dict[str, Any] = self._send(path, data, file, params=params)
        return answer

    def get_prediction(self, request_id: str, *, wait: float = 0) -> dict[str, Any]:
        """A queued prediction: its status, and ``result`` or ``error`` once done. With
        ``wait`` (up to 60 s), the server answers once it is done, or after that long."""
        params = {"wait": wait} if wait else {}
        path = f"/api/v1/predictions/{quote(request_id)}"
        timeout = self._http.timeout.read
        extra = {"timeout": (timeout or 0) + wait} if wait and timeout is not None else {}
        answer: dict[str, Any] = self._call("GET", path, params=params, **extra).json()
        return answer


def cell_path(path: str) -> str:
    """``path`` as a path under a model's cell; ValueError for one that would leave it
    (the server checks it too, and answers 400)."""
    parts = path.removesuffix("/").split("/")
    if path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"path {path!r} must be relative to the cell, without '..'")
    if any(c in path for c in "?#%\\:") or not path.isprintable() or " " in path:
        raise ValueError(f"path {path!r} must be a plain path: no query, escapes or scheme")
    return path


def _json_of(response: httpx.Response) -> Any:
    """The answer's JSON; JSON lines (a streaming model's answer) as a list of items."""
    kind = response.headers.get("content-type", "").split(";")[0].strip()
    if kind == "application/x-ndjson":
        return [json.loads(line) for line in response.text.splitlines() if line.strip()]
    return response.json()
