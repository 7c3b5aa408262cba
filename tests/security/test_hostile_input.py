"""Hostile input that used to earn a 500 or a dropped connection: each now gets a 4xx in
the usual error shape (507 for a full disk), and leaves nothing behind."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import (
    SCORE_PY,
    assert_refused_and_untouched,
    multipart,
    upload_server,
)


def _raw_metadata(text: str) -> dict[str, Any]:
    return {
        "files": [
            ("metadata", ("metadata.json", text.encode(), "application/json")),
            ("files", ("score.py", SCORE_PY, "text/x-python")),
        ]
    }


DEEP = '{"model": "deep", "parameters": ' + "[" * 100_000 + "]" * 100_000 + "}"
HUGE_INT = '{"model": "big", "parameters": {"n": ' + "9" * 5000 + "}}"
SHALLOW_BUT_DEEP = '{"model": "deep", "parameters": {"a": ' + "[" * 500 + "]" * 500 + "}}"
OVERFLOWS_DETECTOR = b"x = " + b"1 + " * 200_000 + b"1\n"


@pytest.mark.parametrize(
    ("kwargs", "code", "words"),
    [
        (_raw_metadata(DEEP), "invalid_metadata", "nested"),
        (_raw_metadata(SHALLOW_BUT_DEEP), "invalid_metadata", "nested deeper than"),
        (_raw_metadata(HUGE_INT), "invalid_metadata", "digits"),
        (
            {"files": multipart({"model": "long"}, {"score.py": SCORE_PY, "é" * 200: b"x"})},
            "invalid_upload",
            "255 bytes",
        ),
        (
            {
                "files": multipart(
                    {"model": "long"},
                    {"score.py": SCORE_PY, "/".join(["\U0001f600" * 63] * 5): b"x"},
                )
            },
            "invalid_upload",
            "bytes",
        ),
        (
            {"files": multipart({"model": "overflow"}, {"score.py": OVERFLOWS_DETECTOR})},
            "no_scoring_script",
            "score.py",
        ),
        (
            {"files": multipart({"model": "overflow"}, {"other.py": OVERFLOWS_DETECTOR})},
            "no_scoring_script",
            "no scoring script",
        ),
    ],
    ids=[
        "nested 100k deep",
        "nested 500 deep",
        "5000-digit integer",
        "255-byte component",
        "long path in bytes",
        "detector overflow in score.py",
        "detector overflow elsewhere",
    ],
)
def test_hostile_upload_input_is_a_4xx(
    tmp_path: Path, database_url: str, kwargs: dict[str, Any], code: str, words: str
) -> None:
    with upload_server(tmp_path, database_url) as (client, app):
        assert_refused_and_untouched(client, app, tmp_path / "data", kwargs, 422, code, words)


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/api/v1/models/m/rollback", {"version": 2**63}, 422),
        ("POST", "/api/v1/models/m/rollback", {"version": 10**30}, 422),
        ("POST", "/api/v1/tokens", {"name": "t", "scopes": ["read"], "expires_in": 10**20}, 422),
        ("POST", "/api/v1/tokens", {"name": "t", "scopes": ["read"], "expires_in": 2**63}, 422),
        ("POST", "/api/v1/tokens", "[" * 100_000 + "]" * 100_000, 400),
        ("POST", "/api/v1/models/m/rollback", '{"version": ' + "9" * 5000 + "}", 400),
    ],
    ids=[
        "rollback 2**63",
        "rollback 10**30",
        "expires_in 10**20",
        "expires_in 2**63",
        "JSON body 100k deep",
        "JSON body 5000 digits",
    ],
)
def test_out_of_range_values_are_a_4xx(
    api: httpx.Client, method: str, path: str, body: Any, status: int
) -> None:
    content = body if isinstance(body, str) else json.dumps(body)
    resp = api.request(method, path, content=content, headers={"content-type": "application/json"})
    assert resp.status_code == status, resp.text
    assert set(resp.json()["error"]) >= {"code", "message"}


@pytest.mark.parametrize("seq", ["9" * 30, "-1", str(2**63), "1e5", "0x10"])
@pytest.mark.parametrize("path", ["/api/v1/deployments", "/api/v1/predictions"])
def test_a_cursor_out_of_range_is_a_400(api: httpx.Client, path: str, seq: str) -> None:
    cursor = base64.urlsafe_b64encode(seq.encode()).decode().rstrip("=")
    resp = api.get(path, params={"cursor": cursor})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["code"] == "bad_request"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs: a real filesystem that fills up."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_is_a_507_and_leaves_nothing(
    small_disk: Path, tmp_path: Path, database_url: str
) -> None:
    files = {"score.py": SCORE_PY, "weights.bin": os.urandom(6 * 1024 * 1024)}
    (tmp_path / "data").mkdir()  # the database stays on the roomy disk (or PostgreSQL)
    with upload_server(small_disk, database_url) as (client, app):
        assert_refused_and_untouched(
            client,
            app,
            small_disk / "data",
            {"files": multipart({"model": "full"}, files)},
            507,
            "insufficient_storage",
            "space",
        )
