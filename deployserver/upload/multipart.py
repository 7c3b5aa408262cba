"""Streaming multipart/form-data reception: each file part goes straight to disk.

Parts are parsed as the body arrives (python-multipart's push parser) and every file
is hashed while it is written, so an upload is never held whole in memory and never
copied twice.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from deployserver.errors import InvalidUpload, UnsupportedMediaType, UploadTooLarge
from deployserver.upload.feeder import Feeder
from deployserver.upload.storage import HashingWriter, StoredFile, safe_relpath

# Body chunks are gathered to about this size (a larger message goes as it is) before
# one hop to a worker thread parses and writes them, so the event loop never blocks on
# disk and the hop cost stays small next to the write.
BATCH_BYTES = 512 * 1024
DEPTH = 2
"""Batches handed to the upload's thread and not yet written, at most."""


class Received:
    """What one upload request delivered: the metadata bytes and the stored files."""

    def __init__(self) -> None:
        self.metadata: bytes | None = None
        self.files: list[StoredFile] = []


def boundary_of(content_type: str | None) -> bytes:
    """The multipart boundary, or 415 when the body is not multipart/form-data."""
    ctype, options = parse_options_header(content_type or "")
    if ctype != b"multipart/form-data":
        raise UnsupportedMediaType(
            "uploads must be multipart/form-data with a 'metadata' part and 'files' parts, "
            f"not {content_type or 'a body without a Content-Type'}"
        )
    boundary = options.get(b"boundary")
    if not boundary:
        raise UnsupportedMediaType("multipart/form-data Content-Type without a boundary")
    return boundary


class MultipartReceiver:
    """Feeds a multipart body to the parser; writes file parts under ``tree``."""

    def __init__(
        self, boundary: bytes, tree: Path, *, max_parts: int, max_metadata_bytes: int
    ) -> None:
        self.tree = tree
        self.max_parts = max_parts
        self.max_metadata_bytes = max_metadata_bytes
        self.received = Received()
        self.parts = 0
        self.finished = False
        self._headers: dict[bytes, bytes] = {}
        self._field = b""
        self._value = b""
        self._meta: bytearray | None = None
        self._writer: HashingWriter | None = None
        self._parser = MultipartParser(
            boundary,
            callbacks={
                "on_part_begin": self._part_begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
                "on_end": self._end,
            },
        )

    # parser callbacks -------------------------------------------------------------
    def _part_begin(self) -> None:
        self.parts += 1
        if self.parts > self.max_parts:
            raise InvalidUpload(f"more than {self.max_parts} parts in one upload")
        self._headers = {}

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.lower()] = self._value
        self._field = self._value = b""

    def _headers_finished(self) -> None:
        _disp, options = parse_options_header(self._headers.get(b"content-disposition"))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        raw_filename = options.get(b"filename")
        if name == "metadata":
            if self.received.metadata is not None or self._meta is not None:
                raise InvalidUpload("more than one 'metadata' part")
            self._meta = bytearray()
        elif name in ("files", "files[]", "file"):
            if raw_filename is None:
                raise InvalidUpload("every 'files' part needs a filename")
            try:
                filename = raw_filename.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidUpload("file names must be UTF-8") from exc
            self._writer = HashingWriter(self.tree, safe_relpath(filename))
        else:
            raise InvalidUpload(
                f"unexpected form part {name!r}; an upload has one 'metadata' part "
                "and one or more 'files' parts"
            )

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._writer is not None:
            self._writer.write(memoryview(data)[start:end])
        elif self._meta is not None:
            self._meta += data[start:end]
            if len(self._meta) > self.max_metadata_bytes:
                raise UploadTooLarge(f"the metadata part is over {self.max_metadata_bytes} bytes")

    def _part_end(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            self.received.files.append(writer.close())
        elif self._meta is not None:
            self.received.metadata, self._meta = bytes(self._meta), None

    def _end(self) -> None:
        self.finished = True

    # driving ----------------------------------------------------------------------
    def feed(self, data: bytes | bytearray) -> None:
        try:
            self._parser.write(bytes(data) if isinstance(data, bytearray) else data)
        except MultipartParseError as exc:
            raise InvalidUpload(f"malformed multipart body: {exc}") from exc

    def close(self) -> None:
        """Release an unfinished file; the staging folder is discarded by the caller."""
        if self._writer is not None:
            self._writer.abort()
            self._writer = None

    async def consume(self, stream: AsyncIterator[bytes], *, max_bytes: int) -> Received:
        """Read the whole body from ``stream``, enforcing ``max_bytes``.

        Pipelined: while a thread of this upload's own parses, hashes and writes the
        batches (hashlib and os.write release the GIL), the event loop receives the next
        ones, so network and disk work overlap; at most ``DEPTH`` batches wait, which
        bounds the memory."""
        total = 0
        batch = bytearray()
        feeder = Feeder(self.feed, DEPTH)
        finished = False
        try:
            async for chunk in stream:
                total += len(chunk)
                if total > max_bytes:
                    raise UploadTooLarge(f"upload is larger than the {max_bytes}-byte limit")
                if not batch and len(chunk) >= BATCH_BYTES:
                    await feeder.put(chunk)  # large enough as it came: no copy
                    continue
                batch += chunk
                if len(batch) >= BATCH_BYTES:
                    await feeder.put(batch)
                    batch = bytearray()
            if batch:
                await feeder.put(batch)
            await feeder.finish()
            finished = True
        finally:
            if not finished:
                await feeder.abandon()  # never close a file the thread is still writing
            self.close()
        if not self.finished:
            raise InvalidUpload("the multipart body ended before its closing boundary")
        return self.received
