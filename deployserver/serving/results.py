"""Where asynchronous prediction results live: a small JSON one in its database row, a
larger one (or one that is not JSON) in ``<data-dir>/predictions/<request_id>`` (0600),
written as it streams from the cell and never held whole in memory."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import anyio

from deployserver.serving.jsonstream import JsonError, JsonScanner

INLINE_BYTES = 64 * 1024
"""A JSON answer up to this size is kept in the database row; a larger one in a file."""
CHUNK = 256 * 1024
MEMBER = "predictions"


def results_dir(data_dir: Path) -> Path:
    return data_dir / "predictions"


def result_path(data_dir: Path, request_id: str) -> Path:
    """The result file of ``request_id`` (a hex id the server made: safe as a name)."""
    return results_dir(data_dir) / request_id


def remove_result(data_dir: Path, request_id: str) -> None:
    """Remove the result file of ``request_id`` and any partial one; absent is fine."""
    for path in (result_path(data_dir, request_id), _partial(data_dir, request_id)):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _partial(data_dir: Path, request_id: str) -> Path:
    return results_dir(data_dir) / f"{request_id}.part"


def is_json_type(content_type: str) -> bool:
    kind = content_type.split(";")[0].strip().lower()
    return kind == "application/json" or kind.endswith("+json")


class AnswerRefused(Exception):
    """The cell's answer cannot be stored: too large, not valid JSON, no predictions."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class StoredAnswer:
    """A succeeded prediction's result: ``value`` inline, or ``offset`` into its file."""

    value: Any
    size: int
    """Bytes it takes in storage (the file's size, or the inline JSON's)."""
    offset: int | None = None
    """Where the result starts in the file (a JSON answer's envelope precedes it); None
    when the result is inline."""
    media_type: str = "application/json"


def _strict_json(data: bytes) -> Any:
    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(data, parse_constant=refuse)


class AnswerSink:
    """Takes a cell's 200 answer chunk by chunk: a small JSON one stays in memory, anything
    else goes to a partial file that ``finish()`` renames into place. Refuses past
    ``limit`` bytes with ``too_large`` as the reason."""

    def __init__(
        self,
        data_dir: Path,
        request_id: str,
        *,
        media_type: str,
        limit: int,
        too_large: str,
        member: str | None = MEMBER,
    ) -> None:
        self.member = member
        """The JSON answer's member that is the result; None: the whole answer is."""
        self.data_dir = data_dir
        self.request_id = request_id
        self.media_type = media_type.split(";")[0].strip().lower() or "application/octet-stream"
        self.is_json = is_json_type(media_type)
        self.limit = limit
        self.too_large = too_large
        self.received = 0
        self._head = bytearray()
        self._fd: int | None = None
        self._scanner = JsonScanner(member) if self.is_json else None

    @property
    def needs_file(self) -> bool:
        """Whether the answer must go to a file from now on (and none is open yet)."""
        return self._fd is None and (not self.is_json or len(self._head) > INLINE_BYTES)

    @property
    def in_file(self) -> bool:
        return self._fd is not None

    @property
    def in_memory(self) -> bool:
        """Whether ``finish()`` will keep the answer inline (no disk work left)."""
        return self._fd is None and self.is_json

    def feed(self, chunk: bytes) -> None:
        """The next chunk; in memory while small, else written (call it off the event loop
        then: it writes and checks the JSON)."""
        self.received += len(chunk)
        if self.received > self.limit:
            raise AnswerRefused(self.too_large)
        if self._fd is None:
            self._head += chunk
        else:
            self._write(chunk)

    def open_file(self, limit: int, too_large: str) -> None:
        """Continue into a file, with a limit that may be lower now (storage quotas)."""
        if limit < self.limit:
            self.limit, self.too_large = limit, too_large
        if self.received > self.limit:
            raise AnswerRefused(self.too_large)
        results_dir(self.data_dir).mkdir(mode=0o700, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        self._fd = os.open(_partial(self.data_dir, self.request_id), flags, 0o600)
        head, self._head = bytes(self._head), bytearray()
        self._write(head)

    def _write(self, chunk: bytes) -> None:
        assert self._fd is not None
        if self._scanner is not None:
            try:
                self._scanner.feed(chunk)
            except JsonError as exc:
                raise AnswerRefused(f"the cell's answer is not valid JSON: {exc}") from exc
            if self._scanner.is_object is False and self.member is not None:
                raise AnswerRefused(_NO_PREDICTIONS)
        view = memoryview(chunk)
        while view:
            view = view[os.write(self._fd, view) :]

    def finish(self) -> StoredAnswer:
        """The stored answer, once the cell has sent all of it."""
        if self._fd is None and not self.is_json:
            self.open_file(self.limit, self.too_large)  # an empty answer is a result too
        if self._fd is None:
            return self._inline()
        offset, end = 0, self.received
        if self._scanner is not None:
            try:
                self._scanner.close()
            except JsonError as exc:
                raise AnswerRefused(f"the cell's answer is not valid JSON: {exc}") from exc
            if self.member is not None:
                if self._scanner.value_start is None or self._scanner.value_end is None:
                    raise AnswerRefused(_NO_PREDICTIONS)
                offset, end = self._scanner.value_start, self._scanner.value_end
                os.ftruncate(self._fd, end)  # what follows the result is the envelope's end
        os.close(self._fd)
        self._fd = None
        os.replace(_partial(self.data_dir, self.request_id), self._final())
        return StoredAnswer(None, end, offset, self.media_type)

    def _final(self) -> Path:
        return result_path(self.data_dir, self.request_id)

    def _inline(self) -> StoredAnswer:
        try:
            answer = _strict_json(bytes(self._head))
        except ValueError as exc:
            raise AnswerRefused(f"the cell's answer is not valid JSON: {exc}") from exc
        if self.member is None:
            return StoredAnswer(answer, len(self._head))
        if not isinstance(answer, dict) or self.member not in answer:
            raise AnswerRefused(_NO_PREDICTIONS)
        return StoredAnswer(answer[self.member], len(self._head))

    def discard(self) -> None:
        """Drop whatever was written (a refused or failed answer leaves nothing)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        remove_result(self.data_dir, self.request_id)


_NO_PREDICTIONS = "the cell answered 200 without a 'predictions' member"


def open_result(data_dir: Path, request_id: str) -> BinaryIO:
    """The result file of ``request_id``, open for reading (FileNotFoundError when gone).
    Held open, it is read whole even if the prediction is deleted meanwhile."""
    return result_path(data_dir, request_id).open("rb")


async def read_span(fh: BinaryIO, offset: int, end: int) -> AsyncIterator[bytes]:
    """The bytes of ``fh`` from ``offset`` to ``end``, read chunk by chunk in a thread;
    closes ``fh`` when done."""
    try:
        await anyio.to_thread.run_sync(fh.seek, offset)
        left = end - offset
        while left > 0:
            chunk = await anyio.to_thread.run_sync(fh.read, min(CHUNK, left))
            if not chunk:
                raise OSError("a result file is shorter than recorded")
            left -= len(chunk)
            yield chunk
    finally:
        fh.close()
