"""The error tree: every failure the API reports, each carrying its HTTP status and code."""

from __future__ import annotations

from typing import Any, ClassVar


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
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return {"error": body}


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
