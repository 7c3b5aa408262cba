"""Hostile and malformed uploads: each is refused with a clear 4xx JSON error, and the
data folder and the database are exactly as they were before it."""

from __future__ import annotations

import io
import json
import stat
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import (
    SCORE_PY,
    assert_refused_and_untouched,
    make_tar,
    make_zip,
    multipart,
    package_files,
    upload_server,
)

META = {"model": "victim"}


def _tar_with(member: tarfile.TarInfo, data: bytes = b"") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("score.py")
        info.size = len(SCORE_PY)
        tf.addfile(info, io.BytesIO(SCORE_PY))
        tf.addfile(member, io.BytesIO(data) if data else None)
    return buf.getvalue()


def _tar_link(kind: bytes, target: str) -> bytes:
    info = tarfile.TarInfo("escape")
    info.type = kind
    info.linkname = target
    return _tar_with(info)


def _tar_device() -> bytes:
    info = tarfile.TarInfo("dev-null")
    info.type = tarfile.CHRTYPE
    info.devmajor, info.devminor = 1, 3
    return _tar_with(info)


def _zip_symlink() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("score.py", SCORE_PY)
        info = zipfile.ZipInfo("link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    return buf.getvalue()


def _zip_bomb() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("score.py", SCORE_PY)
        with zf.open("zeros.bin", "w", force_zip64=True) as fh:
            block = b"\0" * (1024 * 1024)
            for _ in range(64):
                fh.write(block)
    return buf.getvalue()


def _files(archive_name: str, data: bytes) -> dict[str, Any]:
    return {"files": multipart(META, {archive_name: data})}


def _raw(content_type: str, body: bytes) -> dict[str, Any]:
    return {"content": body, "headers": {"content-type": content_type}}


def _raw_part_name(filename: bytes) -> dict[str, Any]:
    """A body with a file part name no client library would send verbatim."""
    b = b"x0x0boundary"
    body = (
        b"--"
        + b
        + b'\r\nContent-Disposition: form-data; name="metadata"\r\n\r\n'
        + json.dumps(META).encode()
        + b"\r\n--"
        + b
        + b'\r\nContent-Disposition: form-data; name="files"; filename="'
        + filename
        + b'"\r\n\r\n'
        + SCORE_PY
        + b"\r\n--"
        + b
        + b"--\r\n"
    )
    return _raw("multipart/form-data; boundary=" + b.decode(), body)


def _truncated() -> dict[str, Any]:
    request = httpx.Request("POST", "http://x/", files=multipart(META, {"score.py": SCORE_PY}))
    body = request.read()
    return _raw(request.headers["content-type"], body[: len(body) // 2])


# name, request kwargs (or a builder), expected status, expected code, words in the message
CASES: list[tuple[str, Callable[[], dict[str, Any]], int, str, str]] = [
    (
        "zip slip",
        lambda: _files("p.zip", make_zip({"score.py": SCORE_PY, "../evil.py": b"x"})),
        422,
        "unsafe_archive",
        "'..'",
    ),
    (
        "zip absolute path",
        lambda: _files("p.zip", make_zip({"/etc/evil": b"x"})),
        422,
        "unsafe_archive",
        "absolute",
    ),
    (
        "zip backslash",
        lambda: _files("p.zip", make_zip({"..\\evil.py": b"x"})),
        422,
        "unsafe_archive",
        "backslash",
    ),
    (
        "zip drive letter",
        lambda: _files("p.zip", make_zip({"C:/evil.py": b"x"})),
        422,
        "unsafe_archive",
        "drive letter",
    ),
    ("zip symlink", lambda: _files("p.zip", _zip_symlink()), 422, "unsafe_archive", "link"),
    ("zip bomb", lambda: _files("p.zip", _zip_bomb()), 422, "unsafe_archive", "bomb"),
    (
        "tar dot-dot",
        lambda: _files("p.tar.gz", make_tar({"a/../../evil.py": b"x"})),
        422,
        "unsafe_archive",
        "'..'",
    ),
    (
        "tar absolute path",
        lambda: _files("p.tgz", make_tar({"/tmp/evil.py": b"x"})),
        422,
        "unsafe_archive",
        "absolute",
    ),
    (
        "tar symlink escape",
        lambda: _files("p.tar.gz", _tar_link(tarfile.SYMTYPE, "/etc/passwd")),
        422,
        "unsafe_archive",
        "link",
    ),
    (
        "tar hard link escape",
        lambda: _files("p.tar.gz", _tar_link(tarfile.LNKTYPE, "../../x")),
        422,
        "unsafe_archive",
        "link",
    ),
    (
        "tar device",
        lambda: _files("p.tar.gz", _tar_device()),
        422,
        "unsafe_archive",
        "special file",
    ),
    (
        "corrupt archive",
        lambda: _files("p.zip", b"PK\x03\x04 not really a zip"),
        422,
        "unsafe_archive",
        "could not read",
    ),
    (
        "part name with ..",
        lambda: {"files": multipart(META, {"../score.py": SCORE_PY})},
        422,
        "invalid_upload",
        "'..'",
    ),
    (
        "part name absolute",
        lambda: {"files": multipart(META, {"/score.py": SCORE_PY})},
        422,
        "invalid_upload",
        "absolute",
    ),
    ("part name with NUL", lambda: _raw_part_name(b"sc\x00ore.py"), 422, "invalid_upload", "NUL"),
    (
        "part name with control char",
        lambda: _raw_part_name(b"a\nb/score.py"),
        422,
        "invalid_upload",
        "control",
    ),
    ("part name not UTF-8", lambda: _raw_part_name(b"\xff\xfe.py"), 422, "invalid_upload", "UTF-8"),
    (
        "same file twice",
        lambda: {
            "files": multipart(META, {"score.py": SCORE_PY})
            + multipart(None, {"score.py": SCORE_PY})
        },
        422,
        "invalid_upload",
        "twice",
    ),
    (
        "missing metadata",
        lambda: {"files": multipart(None, {"score.py": SCORE_PY})},
        422,
        "invalid_metadata",
        "no 'metadata' part",
    ),
    (
        "malformed JSON",
        lambda: {
            "data": {"metadata": "{not json"},
            "files": multipart(None, {"score.py": SCORE_PY}),
        },
        422,
        "invalid_metadata",
        "not valid JSON",
    ),
    (
        "metadata not an object",
        lambda: {"data": {"metadata": "[1]"}, "files": multipart(None, {"score.py": SCORE_PY})},
        422,
        "invalid_metadata",
        "JSON object",
    ),
    (
        "bad model name",
        lambda: {"files": multipart({"model": "Bad Name!"}, package_files())},
        422,
        "invalid_metadata",
        "model",
    ),
    (
        "bad entrypoint form",
        lambda: {"files": multipart({"model": "m", "entrypoint": "score"}, package_files())},
        422,
        "invalid_metadata",
        "path/to/file.py:ClassName",
    ),
    (
        "entrypoint not uploaded",
        lambda: {
            "files": multipart({"model": "m", "entrypoint": "other.py:Model"}, package_files())
        },
        422,
        "no_scoring_script",
        "not among the uploaded files",
    ),
    (
        "bad resources",
        lambda: {
            "files": multipart(
                {"model": "m", "resources": {"cpus": -1, "memory": "lots"}}, package_files()
            )
        },
        422,
        "invalid_metadata",
        "resources.memory",
    ),
    (
        "batching too large",
        lambda: {
            "files": multipart(
                {"model": "m", "batching": {"max_batch_size": 100_000}}, package_files()
            )
        },
        422,
        "invalid_metadata",
        "batching.max_batch_size: Input should be less than or equal to 1024",
    ),
    (
        "batching window of zero",
        lambda: {
            "files": multipart({"model": "m", "batching": {"max_latency_ms": 0}}, package_files())
        },
        422,
        "invalid_metadata",
        "batching.max_latency_ms: Input should be greater than 0",
    ),
    (
        "batching unknown field",
        lambda: {"files": multipart({"model": "m", "batching": {"size": 8}}, package_files())},
        422,
        "invalid_metadata",
        "batching.size: Extra inputs are not permitted",
    ),
    (
        "batching for a script that cannot take a batch",
        lambda: {
            "files": multipart(
                {"model": "m", "batching": {}},
                {"Model.py": b"class Model:\n    def predict(self, X, feature_names): ...\n"},
            )
        },
        422,
        "invalid_metadata",
        "batching: metadata 'batching' needs this project's contract",
    ),
    (
        "bad spec type",
        lambda: {
            "files": multipart(
                {"model": "m", "input_spec": [{"name": "x", "data_type": "float128"}]},
                package_files(),
            )
        },
        422,
        "invalid_metadata",
        "input_spec.0.data_type",
    ),
    (
        "no scoring script",
        lambda: {"files": multipart(META, {"readme.txt": b"hello"})},
        422,
        "no_scoring_script",
        "score.py",
    ),
    ("no files", lambda: {"files": multipart(META, {})}, 422, "invalid_upload", "no files"),
    (
        "unexpected part",
        lambda: {
            "data": {"metadata": json.dumps(META), "other": "x"},
            "files": multipart(None, {"score.py": SCORE_PY}),
        },
        422,
        "invalid_upload",
        "unexpected form part 'other'",
    ),
    (
        "wrong content type",
        lambda: {"json": {"model": "m"}},
        415,
        "unsupported_media_type",
        "multipart/form-data",
    ),
    (
        "no boundary",
        lambda: _raw("multipart/form-data", b"x"),
        415,
        "unsupported_media_type",
        "boundary",
    ),
    ("truncated body", _truncated, 422, "invalid_upload", "ended before"),
]


@pytest.mark.parametrize(
    ("kwargs_of", "status", "code", "words"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_hostile_upload_is_refused_and_leaves_nothing(
    tmp_path: Path, database_url: str, kwargs_of, status: int, code: str, words: str
) -> None:
    with upload_server(tmp_path, database_url) as (client, app):
        assert_refused_and_untouched(
            client, app, tmp_path / "data", kwargs_of(), status, code, words
        )


def test_too_many_archive_entries(tmp_path: Path, database_url: str) -> None:
    many = {f"f{i}.txt": b"x" for i in range(11)} | {"score.py": SCORE_PY}
    with upload_server(tmp_path, database_url, max_archive_entries=10) as (client, app):
        assert_refused_and_untouched(
            client,
            app,
            tmp_path / "data",
            _files("p.zip", make_zip(many)),
            422,
            "unsafe_archive",
            "more than 10 entries",
        )


def test_unpacked_size_is_counted_as_written(tmp_path: Path, database_url: str) -> None:
    big = {"score.py": SCORE_PY, "big.bin": bytes(range(256)) * 4096}  # 1 MiB, barely compresses
    with upload_server(tmp_path, database_url, max_unpacked_bytes=512 * 1024) as (client, app):
        assert_refused_and_untouched(
            client,
            app,
            tmp_path / "data",
            _files("p.tar.gz", make_tar(big)),
            422,
            "unsafe_archive",
            "more than 524288 bytes",
        )


def test_too_many_parts(tmp_path: Path, database_url: str) -> None:
    many = {f"f{i}.txt": b"x" for i in range(5)} | {"score.py": SCORE_PY}
    with upload_server(tmp_path, database_url, max_upload_parts=4) as (client, app):
        assert_refused_and_untouched(
            client,
            app,
            tmp_path / "data",
            {"files": multipart(META, many)},
            422,
            "invalid_upload",
            "more than 4 parts",
        )


def test_oversize_upload_is_413_from_content_length(tmp_path: Path, database_url: str) -> None:
    payload = package_files({"blob.bin": b"x" * 300_000})
    with upload_server(tmp_path, database_url, max_upload_bytes=200_000) as (client, app):
        assert_refused_and_untouched(
            client,
            app,
            tmp_path / "data",
            {"files": multipart(META, payload)},
            413,
            "upload_too_large",
            "200000-byte limit",
        )


def test_oversize_chunked_upload_is_413_while_streaming(tmp_path: Path, database_url: str) -> None:
    request = httpx.Request(
        "POST", "http://x/", files=multipart(META, package_files({"blob.bin": b"x" * 300_000}))
    )
    body = request.read()

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must hold mid-stream
        for i in range(0, len(body), 16384):
            yield body[i : i + 16384]

    kwargs = {"content": chunks(), "headers": {"content-type": request.headers["content-type"]}}
    with upload_server(tmp_path, database_url, max_upload_bytes=200_000) as (client, app):
        assert_refused_and_untouched(
            client, app, tmp_path / "data", kwargs, 413, "upload_too_large", "200000-byte limit"
        )
