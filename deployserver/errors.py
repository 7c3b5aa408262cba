"""The error tree: every failure the API reports, each carrying its HTTP status and code."""

from __future__ import annotations

import errno
import json
from typing import Any, ClassVar


def error_body(code: str, message: str, **details: Any) -> dict[str, Any]:
    """The API's one error shape: ``{"error": {"code", "message"[, "details"]}}``."""
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = details
    return {"error": error}


def error_json(code: str, message: str, **details: Any) -> bytes:
    """:func:`error_body` as the bytes of a JSON answer (for answers sent below FastAPI)."""
    return json.dumps(error_body(code, message, **details)).encode()


class DeployServerError(Exception):
    """Base of every error the API answers; rendered as ``{"error": {"code", "message"}}``."""

    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"

    def to_body(self) -> dict[str, Any]:
        return error_body(self.code, self.message, **self.details)


class BadRequest(DeployServerError):
    status_code = 400
    code = "bad_request"


class InvalidUpload(DeployServerError):
    """The multipart body is malformed or its files cannot be accepted."""

    status_code = 422
    code = "invalid_upload"


class InvalidMetadata(DeployServerError):
    """The metadata part is missing, not JSON, or fails validation."""

    status_code = 422
    code = "invalid_metadata"


class UnsafeArchive(DeployServerError):
    """An archive entry would escape its folder, is not a plain file, or breaks a limit."""

    status_code = 422
    code = "unsafe_archive"


class InvalidLibrary(DeployServerError):
    """A file under ``libraries/`` is not a wheel a cell can install safely."""

    status_code = 422
    code = "invalid_library"


class NoScoringScript(DeployServerError):
    """No entrypoint was given and none of the known scoring contracts was found."""

    status_code = 422
    code = "no_scoring_script"


class UploadTooLarge(DeployServerError):
    status_code = 413
    code = "upload_too_large"


class UnsupportedMediaType(DeployServerError):
    status_code = 415
    code = "unsupported_media_type"


class DeploymentNotFound(DeployServerError):
    status_code = 404
    code = "deployment_not_found"


class ModelNotFound(DeployServerError):
    status_code = 404
    code = "model_not_found"


class Conflict(DeployServerError):
    status_code = 409
    code = "conflict"


class NotAuthenticated(DeployServerError):
    status_code = 401
    code = "not_authenticated"


class PermissionDenied(DeployServerError):
    status_code = 403
    code = "permission_denied"


class TokenNotFound(DeployServerError):
    status_code = 404
    code = "token_not_found"


class UserNotFound(DeployServerError):
    status_code = 404
    code = "user_not_found"


class InvalidGrant(DeployServerError):
    """The password login failed: unknown user or wrong password (never says which)."""

    status_code = 400
    code = "invalid_grant"


class InvalidScope(DeployServerError):
    """A login asked for a scope the user does not hold, or for an unknown one."""

    status_code = 400
    code = "invalid_scope"


class NoReadyCell(DeployServerError):
    status_code = 503
    code = "no_ready_cell"


class PredictionNotFound(DeployServerError):
    status_code = 404
    code = "prediction_not_found"


class ResourcesAboveCeiling(DeployServerError):
    """The metadata's ``resources`` ask for more than this server lets one cell have."""

    status_code = 422
    code = "resources_above_ceiling"


class InvalidScaling(DeployServerError):
    """A change of scaling that leaves it inconsistent (max below min, say)."""

    status_code = 422
    code = "invalid_scaling"


class EgressNotAllowed(DeployServerError):
    """The metadata asks for network egress and this server does not allow it."""

    status_code = 422
    code = "egress_not_allowed"


class InsufficientStorage(DeployServerError):
    """The server's disk (or the database's) is full; nothing of the request was kept."""

    status_code = 507
    code = "insufficient_storage"


_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_FULL_WORDS = ("no space left on device", "database or disk is full", "disk quota exceeded")


def disk_full(exc: BaseException) -> InsufficientStorage | None:
    """An :class:`InsufficientStorage` when ``exc`` (or what caused it) is a full disk."""
    seen: BaseException | None = exc
    for _ in range(10):  # the cause chain, bounded
        if seen is None:
            return None
        if isinstance(seen, OSError) and seen.errno in _FULL_ERRNOS:
            break
        if any(words in str(seen).lower() for words in _FULL_WORDS):
            break
        seen = seen.__cause__ or seen.__context__
    else:
        return None
    return InsufficientStorage("the server is out of disk space; nothing was kept, try later")


class TryAgainLater(DeployServerError):
    """Refused for now, not for good: ``retry_after`` seconds from now a new try may pass
    (sent as the ``Retry-After`` header)."""

    def __init__(self, message: str, *, retry_after: float, **details: Any) -> None:
        super().__init__(message, **details)
        self.retry_after = retry_after


class ModelWaking(TryAgainLater):
    """As many requests wait for a model to wake as the server holds: try again shortly."""

    status_code = 429
    code = "model_waking"


class TooManyLoginAttempts(TryAgainLater):
    """The password login was tried too often, from one address or for one user name."""

    status_code = 429
    code = "too_many_login_attempts"


class LoginBusy(TryAgainLater):
    """Every password-hashing slot stayed taken: the login is overloaded, not refused."""

    status_code = 503
    code = "login_busy"


class RequestTooLarge(DeployServerError):
    """A small request (a login form) came with a body far larger than it can need."""

    status_code = 413
    code = "request_too_large"


class InvalidWebhook(DeployServerError):
    """A webhook URL that can never be delivered to: not http(s), no host, or an address
    webhooks may not reach (loopback, private, link-local, ...)."""

    status_code = 422
    code = "invalid_webhook"


class TooManyPredictions(TryAgainLater):
    """A model or a caller already has as many asynchronous predictions waiting as allowed."""

    status_code = 429
    code = "too_many_predictions"


class PredictionStorageExceeded(DeployServerError):
    """A model or a caller already keeps as many bytes of predictions as allowed."""

    status_code = 507
    code = "prediction_storage_exceeded"


class TooManyStreams(TryAgainLater):
    """As many event streams are open as the server keeps at once."""

    status_code = 503
    code = "too_many_streams"
