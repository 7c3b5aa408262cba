"""What a folder packs to, and the multipart body it streams as (no server needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployserver.client.packing import MultipartBody, PackageError, pack
from tests.cli.conftest import write_package
from tests.helpers import SCORE_PY

FOLDER = {
    "score.py": SCORE_PY,
    "weights/model.bin": b"\x00" * 300,
    "notes/draft.txt": b"not for the server",
    "run.log": b"log",
    ".git/HEAD": b"ref: refs/heads/main",
    "pkg/__pycache__/score.cpython-311.pyc": b"\x00",
    ".deployignore": b"notes/\n*.log\n",
}


def _paths(folder: Path, model: str | None = None) -> list[str]:
    return [f.path for f in pack(folder, model=model).files]


def test_deployignore_and_the_never_packed_are_left_out(tmp_path: Path) -> None:
    write_package(tmp_path, {"model": "m"}, FOLDER)
    assert _paths(tmp_path) == ["score.py", "weights/model.bin"]


def test_files_patterns_pick_exactly_their_files(tmp_path: Path) -> None:
    write_package(tmp_path, {"model": "m", "files": ["*.py", "notes/"]}, FOLDER)
    assert _paths(tmp_path) == ["notes/draft.txt", "score.py"]


def test_a_deployignore_negation_keeps_a_file(tmp_path: Path) -> None:
    files = FOLDER | {".deployignore": b"*.log\n!keep.log\nnotes/\n", "keep.log": b"k"}
    write_package(tmp_path, {"model": "m"}, files)
    assert "keep.log" in _paths(tmp_path) and "run.log" not in _paths(tmp_path)


def test_model_option_overrides_the_metadata(tmp_path: Path) -> None:
    write_package(tmp_path, {"model": "m"}, {"score.py": SCORE_PY})
    assert pack(tmp_path, model="other").model == "other"


@pytest.mark.parametrize(
    ("metadata", "files", "says"),
    [
        (None, {"score.py": SCORE_PY}, "metadata.json is missing"),
        ({"description": "no name"}, {"score.py": SCORE_PY}, "names no 'model'"),
        ({"model": "m", "files": "*.py"}, {"score.py": SCORE_PY}, "list of patterns"),
        ({"model": "m", "files": ["*.txt"]}, {"score.py": SCORE_PY}, "nothing to pack"),
        ({"model": "m"}, {'we"ird.py': SCORE_PY}, "cannot send a file named"),
    ],
)
def test_unpackable_folders_say_why(
    tmp_path: Path, metadata: dict[str, object] | None, files: dict[str, bytes], says: str
) -> None:
    write_package(tmp_path, metadata or {}, files)
    if metadata is None:
        (tmp_path / "metadata.json").unlink()
    with pytest.raises(PackageError, match=says):
        pack(tmp_path)


def test_body_has_its_announced_length_and_reports_progress(tmp_path: Path) -> None:
    write_package(tmp_path, {"model": "m"}, FOLDER)
    seen: list[tuple[int, int]] = []
    body = MultipartBody(pack(tmp_path), lambda sent, total: seen.append((sent, total)))
    data = b"".join(body)
    assert len(data) == body.length
    assert seen[-1] == (body.length, body.length)
    assert [s for s, _ in seen] == sorted(s for s, _ in seen)
    ctype, _, boundary = body.content_type.partition("; boundary=")
    assert ctype == "multipart/form-data"
    boundary_bytes = boundary.encode()
    assert data.startswith(b"--" + boundary_bytes)
    assert data.endswith(b"--" + boundary_bytes + b"--\r\n")
    assert b'name="files"; filename="weights/model.bin"' in data
