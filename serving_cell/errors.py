"""The cell's error tree: each class carries its HTTP status and snake_case code."""

from __future__ import annotations


def describe(exc: BaseException) -> str:
    """``ExceptionType: message`` (or the type alone): what a caller is told of an
    exception in the script, never its traceback."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class CellError(Exception):
    """Base of every error the cell answers on purpose; mapped to JSON by one handler."""

    status_code = 500
    code = "cell_error"
    native_code: str | None = None
    """The calling tool's own code for this error, when the model gave one (MLflow's)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"

    def to_json(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}


class InvalidInput(CellError):
    """The request body cannot be read as the endpoint expects."""

    status_code = 400
    code = "invalid_input"


class InputSpecMismatch(CellError):
    """The request does not match the deployment's input_spec."""

    status_code = 400
    code = "input_spec_mismatch"


class UnsupportedMediaType(CellError):
    status_code = 415
    code = "unsupported_media_type"


class ModelNotReady(CellError):
    """Predictions asked for while the model is loading or failed to load."""

    status_code = 503
    code = "model_not_ready"


class ModelNotFound(CellError):
    """A V2 request named a model this cell does not serve."""

    status_code = 404
    code = "model_not_found"


class PredictionFailed(CellError):
    """The scoring script raised; the message is the exception's, never its traceback."""

    status_code = 500
    code = "prediction_failed"


class BatchMismatch(CellError):
    """A batched predict answered something that does not split back into one item per
    request (not a list, a list of another length, a stream): a 500, the script's fault."""

    status_code = 500
    code = "batch_mismatch"


class OutputSpecMismatch(CellError):
    """The scoring script answered something that breaks the deployment's output_spec.

    A 500, not a 400: the caller's request was fine, the script broke its own promise.
    """

    status_code = 500
    code = "output_spec_mismatch"


class ModelRejectedInput(CellError):
    """The model itself refused the request as invalid (an MLflow model's signature check):
    the caller's to fix, so a 4xx, with the model's own code when it has one."""

    status_code = 400
    code = "invalid_input"

    def __init__(
        self, message: str, *, status_code: int = 400, native_code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.native_code = native_code


class NotServedHere(CellError):
    """A path this cell serves for another scoring contract only."""

    status_code = 404
    code = "not_found"
