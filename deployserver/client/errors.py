"""The SDK's errors: one class per HTTP status the API answers, carrying the server's
``{"error": {"code", "message"}}``, plus the failures that happen before an answer."""

from __future__ import annotations

from typing import ClassVar

import httpx


class DeployClientError(Exception):
    """Base of every error the SDK raises."""


class ServerUnreachable(DeployClientError):
    """No answer: the server is down, the URL is wrong, or the connection broke."""


class WaitTimeout(DeployClientError):
    """A deployment did not reach the wanted status in time."""


class StreamEnded(DeployClientError):
    """The server ended an event stream: ``reason`` says why (the token was revoked or
    expired, the reader fell too far behind, the server is stopping)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DeployServerAPIError(DeployClientError):
    """The server answered with an error: its HTTP ``status``, ``code`` and ``message``;
    ``retry_after`` holds the seconds of its ``Retry-After`` header, when it sent one."""

    status_code: ClassVar[int | None] = None

    def __init__(
        self, status: int, code: str, message: str, *, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status}, {self.code!r}, {self.message!r})"


class BadRequest(DeployServerAPIError):
    status_code = 400


class Unauthorized(DeployServerAPIError):
    """No token, or a bad, revoked or expired one."""

    status_code = 401


class Forbidden(DeployServerAPIError):
    """The token lacks the route's scope."""

    status_code = 403


class NotFound(DeployServerAPIError):
    status_code = 404


class Conflict(DeployServerAPIError):
    status_code = 409


class PayloadTooLarge(DeployServerAPIError):
    status_code = 413


class UnsupportedMediaType(DeployServerAPIError):
    status_code = 415


class UnprocessableEntity(DeployServerAPIError):
    """The server understood the request but refused its content (metadata, files)."""

    status_code = 422


class TooManyRequests(DeployServerAPIError):
    """Too many tries (the password login's limits); ``retry_after`` says when to retry."""

    status_code = 429


class ServiceUnavailable(DeployServerAPIError):
    """For predictions: the model has no ready cell; for the login: it is busy."""

    status_code = 503


_BY_STATUS: dict[int, type[DeployServerAPIError]] = {
    cls.status_code: cls
    for cls in DeployServerAPIError.__subclasses__()
    if cls.status_code is not None
}


def raise_for_error(response: httpx.Response) -> None:
    """Raise the error class for ``response``'s status when it is not a success."""
    if response.status_code < 400:
        return
    response.read()
    code, message = f"http_{response.status_code}", response.text.strip() or response.reason_phrase
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        pass  # not our error shape (a proxy, a cell's own answer): keep the raw text
    cls = _BY_STATUS.get(response.status_code, DeployServerAPIError)
    raise cls(response.status_code, code, message, retry_after=_retry_after(response))


def _retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds; None when absent or an HTTP date (we never send one)."""
    value = response.headers.get("retry-after", "").strip()
    return float(value) if value.isdigit() else None
