"""MultipartReceiver and boundary_of, called directly: how a multipart body becomes a
metadata blob and hashed files on disk, whatever the chunking, and how each malformed
or oversized body is refused (error class and message)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from deployserver.errors import InvalidUpload, UnsupportedMediaType, UploadTooLarge
from deployserver.upload.multipart import MultipartReceiver, Received, boundary_of
from deployserver.upload.storage import StoredFile

B = b"b0undary"
META = b'{"model": "iris"}'
# Holds CRLFs, dashes and a prefix of the delimiter that is not one, so the parser has
# to hold bytes back at a chunk's end and give them back as data.
TRICKY = b"line\r\n--b0und\r\n--\r\n" + b"\r\n--b0undar" + b"x" * 7 + b"\r"


def _part(disposition: bytes, data: bytes) -> bytes:
    return b"--" + B + b"\r\nContent-Disposition: form-data; " + disposition + b"\r\n\r\n" + data


def meta(data: bytes = META, *, filename: bytes | None = None) -> bytes:
    extra = b'; filename="' + filename + b'"' if filename is not None else b""
    return _part(b'name="metadata"' + extra, data)


def file(filename: bytes, data: bytes, *, name: bytes = b"files") -> bytes:
    return _part(b'name="' + name + b'"; filename="' + filename + b'"', data)


def body(*parts: bytes) -> bytes:
    """Parts joined by delimiters, then the closing boundary."""
    return b"".join(p + b"\r\n" for p in parts) + b"--" + B + b"--\r\n"


def stored(path: str, data: bytes) -> StoredFile:
    return StoredFile(path, len(data), hashlib.sha256(data).hexdigest())


def receiver(
    tree: Path, *, max_parts: int = 10, max_metadata_bytes: int = 1000
) -> MultipartReceiver:
    tree.mkdir(exist_ok=True)
    return MultipartReceiver(B, tree, max_parts=max_parts, max_metadata_bytes=max_metadata_bytes)


def receive(tree: Path, raw: bytes, **limits: int) -> Received:
    """Feed ``raw`` in one piece; the body must be complete."""
    r = receiver(tree, **limits)
    r.feed(raw)
    assert r.finished
    return r.received


async def chunks(*pieces: bytes) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


def files_on_disk(tree: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(tree)): p.read_bytes() for p in sorted(tree.rglob("*")) if p.is_file()
    }


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# --- boundary_of ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "boundary"),
    [
        ("multipart/form-data; boundary=b0undary", b"b0undary"),
        ('multipart/form-data; boundary="with space"', b"with space"),
        ('Multipart/Form-Data; charset=utf-8; boundary="a;b"', b"a;b"),
    ],
)
def test_boundary_of_reads_plain_and_quoted_boundaries(content_type: str, boundary: bytes) -> None:
    assert boundary_of(content_type) == boundary


@pytest.mark.parametrize(
    ("content_type", "message"),
    [
        (None, "not a body without a Content-Type"),
        ("application/json", "not application/json"),
        ("multipart/mixed; boundary=x", "not multipart/mixed; boundary=x"),
        ("multipart/form-data", "multipart/form-data Content-Type without a boundary"),
        ("multipart/form-data; boundary=", "multipart/form-data Content-Type without a boundary"),
        ('multipart/form-data; boundary=""', "multipart/form-data Content-Type without a boundary"),
    ],
)
def test_boundary_of_refuses_other_types_and_missing_boundaries(
    content_type: str | None, message: str
) -> None:
    with pytest.raises(UnsupportedMediaType) as caught:
        boundary_of(content_type)
    assert caught.value.status_code == 415
    assert caught.value.message.endswith(message)


# --- what a body delivers -------------------------------------------------------------


def test_metadata_as_a_plain_field_is_kept_in_memory_not_written(tmp_path: Path) -> None:
    got = receive(tmp_path / "t", body(meta(), file(b"score.py", b"x = 1\n")))
    assert got.metadata == META
    assert files_on_disk(tmp_path / "t") == {"score.py": b"x = 1\n"}


def test_metadata_as_a_file_part_as_curl_sends_it(tmp_path: Path) -> None:
    got = receive(tmp_path / "t", body(meta(filename=b"metadata.json")))
    assert got.metadata == META
    assert got.files == []
    assert files_on_disk(tmp_path / "t") == {}


def test_several_files_with_relative_paths_are_written_hashed_in_order(tmp_path: Path) -> None:
    weights = bytes(range(256)) * 3
    raw = body(
        meta(),
        file(b"score.py", b"x = 1\n"),
        file(b"weights/v1/model.bin", weights),
        file(b"empty.txt", b"", name=b"files[]"),
        file(b"tricky.bin", TRICKY, name=b"file"),
    )
    got = receive(tmp_path / "t", raw)
    assert got.files == [
        stored("score.py", b"x = 1\n"),
        stored("weights/v1/model.bin", weights),
        stored("empty.txt", b""),
        stored("tricky.bin", TRICKY),
    ]
    assert files_on_disk(tmp_path / "t") == {
        "empty.txt": b"",
        "score.py": b"x = 1\n",
        "tricky.bin": TRICKY,
        "weights/v1/model.bin": weights,
    }


# --- chunking ---------------------------------------------------------------------------

SPLIT_BODY = body(meta(), file(b"w/a.bin", TRICKY), file(b"b.txt", b"bee"))
SPLIT_FILES = [stored("w/a.bin", TRICKY), stored("b.txt", b"bee")]


def test_a_body_split_in_two_at_every_offset_gives_the_same_result(tmp_path: Path) -> None:
    # every offset: inside the boundary lines, the CRLFs, the headers and the data
    for cut in range(len(SPLIT_BODY) + 1):
        tree = tmp_path / str(cut)
        r = receiver(tree)
        r.feed(SPLIT_BODY[:cut])
        r.feed(SPLIT_BODY[cut:])
        assert r.finished, cut
        assert (r.received.metadata, r.received.files) == (META, SPLIT_FILES), cut
        assert files_on_disk(tree) == {"w/a.bin": TRICKY, "b.txt": b"bee"}, cut


def test_a_body_fed_one_byte_at_a_time_gives_the_same_result(tmp_path: Path) -> None:
    r = receiver(tmp_path / "t")
    for i in range(len(SPLIT_BODY)):
        r.feed(SPLIT_BODY[i : i + 1])
    assert r.finished
    assert (r.received.metadata, r.received.files) == (META, SPLIT_FILES)
    assert files_on_disk(tmp_path / "t") == {"w/a.bin": TRICKY, "b.txt": b"bee"}


async def test_consume_reads_a_stream_of_small_chunks(tmp_path: Path) -> None:
    pieces = [SPLIT_BODY[i : i + 7] for i in range(0, len(SPLIT_BODY), 7)]
    got = await receiver(tmp_path / "t").consume(chunks(*pieces), max_bytes=len(SPLIT_BODY))
    assert (got.metadata, got.files) == (META, SPLIT_FILES)


# --- file names -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "path"),
    [
        (b'a;b \\"q\\".txt', 'a;b "q".txt'),  # quoted: ';' kept, escaped quotes unescaped
        (b"\xc3\xa9t\xc3\xa9/\xc3\xa0.txt", "été/à.txt"),  # UTF-8, in a folder
        (b"C:\\\\Users\\\\me\\\\score.py", "score.py"),  # a browser's full Windows path
    ],
)
def test_quoted_and_escaped_filenames(tmp_path: Path, filename: bytes, path: str) -> None:
    got = receive(tmp_path / "t", body(file(filename, b"hi")))
    assert got.files == [stored(path, b"hi")]
    assert files_on_disk(tmp_path / "t") == {path: b"hi"}


def test_an_unquoted_filename(tmp_path: Path) -> None:
    raw = body(_part(b"name=files; filename=plain.txt", b"hi"))
    assert receive(tmp_path / "t", raw).files == [stored("plain.txt", b"hi")]


@pytest.mark.parametrize(
    ("part", "message"),
    [
        (
            file(b"../escape.py", b"x"),
            "file name '../escape.py' has an empty, '.' or '..' component",
        ),
        (file(b"/etc/cron.d/x", b"x"), "file name '/etc/cron.d/x' is an absolute path"),
        (file(b"a\\\\b", b"x"), "file name 'a\\\\b' contains a backslash; use '/' between folders"),
        (file(b"", b"x"), "empty file name"),
        (file(b"caf\xe9.txt", b"x"), "file names must be UTF-8"),
        (_part(b'name="files"', b"x"), "every 'files' part needs a filename"),
        # RFC 7578 forbids filename*=; it is ignored, so there is no filename at all
        (
            _part(b"name=\"files\"; filename*=UTF-8''a.txt", b"x"),
            "every 'files' part needs a filename",
        ),
    ],
)
def test_bad_filenames_are_refused_and_write_nothing(
    tmp_path: Path, part: bytes, message: str
) -> None:
    r = receiver(tmp_path / "t")
    with pytest.raises(InvalidUpload) as caught:
        r.feed(body(part))
    assert caught.value.message == message
    assert list(tmp_path.rglob("*")) == [tmp_path / "t"]


def test_the_same_path_twice_is_refused(tmp_path: Path) -> None:
    r = receiver(tmp_path / "t")
    with pytest.raises(InvalidUpload) as caught:
        r.feed(body(file(b"a.txt", b"1"), file(b"a.txt", b"2")))
    assert caught.value.message == "a.txt appears twice, or both as a file and a folder"
    assert (tmp_path / "t" / "a.txt").read_bytes() == b"1"


# --- parts the form does not have -------------------------------------------------------


def test_a_second_metadata_part_is_refused(tmp_path: Path) -> None:
    r = receiver(tmp_path / "t")
    with pytest.raises(InvalidUpload) as caught:
        r.feed(body(meta(), meta(b"{}", filename=b"metadata.json")))
    assert caught.value.message == "more than one 'metadata' part"


@pytest.mark.parametrize(
    ("part", "name"),
    [
        (_part(b'name="other"', b"x"), "'other'"),
        (b"--" + B + b"\r\nContent-Type: text/plain\r\n\r\nx", "''"),  # no Content-Disposition
    ],
)
def test_a_part_that_is_neither_metadata_nor_files_is_refused(
    tmp_path: Path, part: bytes, name: str
) -> None:
    r = receiver(tmp_path / "t")
    with pytest.raises(InvalidUpload) as caught:
        r.feed(body(part))
    assert caught.value.message == (
        f"unexpected form part {name}; an upload has one 'metadata' part "
        "and one or more 'files' parts"
    )


# --- limits ---------------------------------------------------------------------------


def test_parts_up_to_the_limit_pass_one_more_is_refused(tmp_path: Path) -> None:
    two = [meta(), file(b"a", b"1")]
    assert receive(tmp_path / "ok", body(*two), max_parts=2).files == [stored("a", b"1")]
    r = receiver(tmp_path / "over", max_parts=2)
    with pytest.raises(InvalidUpload) as caught:
        r.feed(body(*two, file(b"b", b"2")))
    assert caught.value.message == "more than 2 parts in one upload"
    assert files_on_disk(tmp_path / "over") == {"a": b"1"}


def test_metadata_up_to_the_limit_passes_one_byte_more_is_refused(tmp_path: Path) -> None:
    limit = len(META)
    got = receive(tmp_path / "ok", body(meta()), max_metadata_bytes=limit)
    assert got.metadata == META
    r = receiver(tmp_path / "over", max_metadata_bytes=limit)
    with pytest.raises(UploadTooLarge) as caught:
        r.feed(body(meta(META + b" ")))
    assert caught.value.message == f"the metadata part is over {limit} bytes"
    assert caught.value.status_code == 413


async def test_a_body_up_to_max_bytes_passes_one_byte_more_is_refused(tmp_path: Path) -> None:
    raw = body(meta(), file(b"a", b"1"))
    got = await receiver(tmp_path / "ok").consume(chunks(raw), max_bytes=len(raw))
    assert got.files == [stored("a", b"1")]
    limit = len(raw) - 1
    with pytest.raises(UploadTooLarge) as caught:
        await receiver(tmp_path / "over").consume(chunks(raw[:10], raw[10:]), max_bytes=limit)
    assert caught.value.message == f"upload is larger than the {limit}-byte limit"


# --- malformed bodies -------------------------------------------------------------------

UNFINISHED = "the multipart body ended before its closing boundary"


@pytest.mark.parametrize(
    "raw",
    [
        body(meta())[: -len(b"--\r\n")],  # a delimiter, never the closing one
        meta() + b"\r\n--" + B + b"-X",  # a closing boundary gone wrong
        b"",
    ],
    ids=["no-closing-boundary", "bad-closing-boundary", "empty"],
)
async def test_a_body_without_its_closing_boundary_is_refused(tmp_path: Path, raw: bytes) -> None:
    with pytest.raises(InvalidUpload) as caught:
        await receiver(tmp_path / "t").consume(chunks(raw), max_bytes=1000)
    assert caught.value.message == UNFINISHED


async def test_a_body_cut_off_inside_a_file_releases_the_file(tmp_path: Path) -> None:
    r = receiver(tmp_path / "t")
    before = open_fds()
    with pytest.raises(InvalidUpload) as caught:
        await r.consume(chunks(meta(), b"\r\n", file(b"big.bin", b"half of it")), max_bytes=1000)
    assert caught.value.message == UNFINISHED
    assert open_fds() == before  # the half-written file is closed, not leaked


@pytest.mark.parametrize(
    "raw",
    [
        b"preamble\r\n" + body(meta()),  # anything before the first boundary
        b"--" + B + b"Q\r\n",  # the boundary line goes on
        b"--" + B + b"\r\nContent-Disposition form-data\r\n\r\n{}\r\n",  # no ':'
    ],
    ids=["preamble", "boundary-line", "header-without-colon"],
)
def test_malformed_bodies_are_refused_as_malformed(tmp_path: Path, raw: bytes) -> None:
    with pytest.raises(InvalidUpload) as caught:
        receiver(tmp_path / "t").feed(raw)
    assert caught.value.message.startswith("malformed multipart body: ")
