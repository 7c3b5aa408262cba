"""How client commands talk: results on stdout (JSON with ``--json``), people on stderr,
and one exit code per kind of outcome."""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel
from rich.console import Console

from deployserver.client.errors import (
    DeployClientError,
    DeployServerAPIError,
    ServerUnreachable,
    StreamEnded,
    WaitTimeout,
)
from deployserver.client.packing import PackageError
from deployserver.errors import error_body

EXIT_OK = 0
EXIT_FAILED = 1
"""The deployment ended ``failed`` (or was stopped) while we waited."""
EXIT_USAGE = 2
"""Bad arguments or a folder that cannot be packed; nothing was sent."""
EXIT_API_ERROR = 3
"""The server refused the request (its error code and message are printed)."""
EXIT_UNREACHABLE = 4
EXIT_TIMEOUT = 5

Command = Callable[[argparse.Namespace], int]


def stderr_console() -> Console:
    """Where people read progress and messages; rich decides whether it is a terminal."""
    return Console(stderr=True, highlight=False)


def say(message: str) -> None:
    """A line for people, never on stdout."""
    print(message, file=sys.stderr, flush=True)


def emit(args: argparse.Namespace, value: Any, human: str | Callable[[], str]) -> None:
    """Print the command's result: ``value`` as JSON with ``--json``, else ``human``."""
    if getattr(args, "json_output", False):
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json")
        print(json.dumps(value, indent=2, default=str), flush=True)
    else:
        text = human() if callable(human) else human
        if text:
            print(text, flush=True)


def _fail(args: argparse.Namespace, code: str, message: str, exit_code: int) -> int:
    say(f"deployserver: {code}: {message}" if code else f"deployserver: {message}")
    if getattr(args, "json_output", False):
        print(json.dumps(error_body(code, message)), flush=True)
    return exit_code


def handles_errors(run: Command) -> Command:
    """Turn the SDK's exceptions into a message and an exit code."""

    @functools.wraps(run)
    def wrapper(args: argparse.Namespace) -> int:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # no per-request lines
        try:
            return run(args)
        except PackageError as exc:
            return _fail(args, "invalid_package", str(exc), EXIT_USAGE)
        except DeployServerAPIError as exc:
            message = exc.message
            if exc.retry_after is not None and "try again" not in message:
                message += f" (try again in {exc.retry_after:g} s)"
            return _fail(args, exc.code, message, EXIT_API_ERROR)
        except ServerUnreachable as exc:
            return _fail(args, "server_unreachable", str(exc), EXIT_UNREACHABLE)
        except StreamEnded as exc:
            return _fail(args, "stream_ended", exc.reason, EXIT_FAILED)
        except WaitTimeout as exc:
            return _fail(args, "timeout", str(exc), EXIT_TIMEOUT)
        except DeployClientError as exc:
            return _fail(args, "client_error", str(exc), EXIT_FAILED)
        except KeyboardInterrupt:
            say("interrupted")
            return 130

    return wrapper


def human_size(size: float) -> str:
    """``1.5 MB`` style, decimal units as rich's progress bar shows them."""
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Plain aligned columns, easy to read and to ``awk``."""
    cells = [list(headers), *[["" if v is None else str(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )
