"""A Swarm cell fetches its deployment's files: checked against the sha256, cached per
node, and nothing unpacked but files and folders inside the folder."""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from serving_cell.fetch import FetchError, fetch_model
from tests.helpers import serve

TOKEN = "dsa_0123456789ab_" + "0" * 64


def _tar(entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in entries:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


GOOD = _tar([_file("score.py", b"print('hi')\n"), _file("weights/w.bin", b"\x00" * 100)])


class Archives:
    def __init__(self) -> None:
        self.body = GOOD
        self.requests = 0
        self.seen_auth: list[str | None] = []

    def app(self) -> Starlette:
        async def archive(request: Request) -> Response:
            self.requests += 1
            self.seen_auth.append(request.headers.get("authorization"))
            if request.headers.get("authorization") != f"Bearer {TOKEN}":
                return Response(b'{"error": {}}', status_code=401)
            return Response(self.body, media_type="application/x-tar")

        return Starlette(routes=[Route("/archive", archive)])


@pytest.fixture
def archives() -> Iterator[tuple[Archives, str]]:
    served = Archives()
    with serve(served.app()) as url:  # type: ignore[arg-type]
        yield served, f"{url}/archive"


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "credential"
    path.write_text(TOKEN + "\n")
    return path


def test_fetched_once_per_node_then_served_from_the_cache(
    archives: tuple[Archives, str],
    token_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    served, url = archives
    sha = hashlib.sha256(GOOD).hexdigest()
    cache = tmp_path / "cache"
    folder = fetch_model(url, sha, token_file, cache)
    assert (folder / "score.py").read_bytes() == b"print('hi')\n"
    assert (folder / "weights" / "w.bin").stat().st_size == 100
    assert served.seen_auth == [f"Bearer {TOKEN}"]
    assert "sha256 checked" in capsys.readouterr().err
    assert fetch_model(url, sha, token_file, cache) == folder
    assert served.requests == 1
    assert "from this node's cache" in capsys.readouterr().err
    assert sorted(p.name for p in cache.iterdir()) == [".lock", sha, f"{sha}.complete"]


def test_an_archive_that_does_not_match_its_sha256_is_refused(
    archives: tuple[Archives, str], token_file: Path, tmp_path: Path
) -> None:
    _served, url = archives
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(FetchError, match="sha256"):
        fetch_model(url, wrong, token_file, tmp_path / "cache")
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [".lock"]


def test_a_refused_credential_fails_with_the_reason(
    archives: tuple[Archives, str], tmp_path: Path
) -> None:
    _served, url = archives
    bad = tmp_path / "bad"
    bad.write_text("dsa_nope")
    with pytest.raises(FetchError, match="401"):
        fetch_model(url, hashlib.sha256(GOOD).hexdigest(), bad, tmp_path / "cache")


@pytest.mark.parametrize(
    "entries",
    [
        [_file("../escape.py", b"x")],
        [_file("/etc/evil", b"x")],
        [(tarfile.TarInfo("link"), None)],
    ],
    ids=["dotdot", "absolute", "symlink"],
)
def test_nothing_but_files_and_folders_inside_is_unpacked(
    archives: tuple[Archives, str],
    token_file: Path,
    tmp_path: Path,
    entries: list[tuple[tarfile.TarInfo, bytes | None]],
) -> None:
    served, url = archives
    if entries[0][1] is None:
        entries[0][0].type, entries[0][0].linkname = tarfile.SYMTYPE, "/etc/passwd"
    served.body = _tar(entries)
    with pytest.raises(FetchError, match="archive"):
        fetch_model(url, hashlib.sha256(served.body).hexdigest(), token_file, tmp_path / "c")
    assert not (tmp_path / "escape.py").exists()
    assert not any(p.name == "link" for p in tmp_path.rglob("*"))


def test_an_unreachable_server_is_tried_again_then_given_up(
    token_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused connections are retried (an overlay converging), then fail with why."""
    from tests.swarmkit import free_port

    url = f"http://127.0.0.1:{free_port()}/archive"  # nobody listens there
    with pytest.raises(FetchError, match="refused"):
        fetch_model(url, hashlib.sha256(GOOD).hexdigest(), token_file, tmp_path, patience=0.5)
    assert "trying again" in capsys.readouterr().err
