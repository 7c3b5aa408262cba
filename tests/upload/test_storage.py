"""The upload's folders on disk, called directly: which relative paths are refused and
why, how one file is written and hashed (new files only, never through a link), and how
staging folders are made, promoted into place, retired and swept."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path, PurePosixPath

import pytest

from deployserver.errors import InvalidUpload
from deployserver.upload.storage import (
    MAX_COMPONENT_BYTES,
    MAX_PATH_BYTES,
    HashingWriter,
    StoredFile,
    deployment_dir,
    discard,
    new_staging,
    promote,
    retire,
    safe_relpath,
    sweep,
)

DEPLOY_ID = "01a1fe1efa5abb9268665fb3"


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def tree_of(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root``: a file's bytes, None for a folder."""
    return {
        str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes())
        for p in sorted(root.rglob("*"))
    }


# --- safe_relpath -----------------------------------------------------------------------


AT_LIMIT = "/".join(["x" * 255] * 3 + ["x" * 254, "y"])  # 1,024 bytes
assert len(AT_LIMIT) == MAX_PATH_BYTES


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("score.py", "score.py"),
        ("weights/v1/model.bin", "weights/v1/model.bin"),
        ("weights/", "weights"),  # a trailing slash names the same thing
        ("été/a b;c.txt", "été/a b;c.txt"),
        ("...", "..."),  # only '.' and '..' themselves are special
        ("x" * MAX_COMPONENT_BYTES, "x" * MAX_COMPONENT_BYTES),
        ("é" * 127 + "x", "é" * 127 + "x"),  # 255 bytes in 128 characters
        (AT_LIMIT, AT_LIMIT),
    ],
)
def test_safe_relpath_accepts_plain_relative_paths(name: str, path: str) -> None:
    assert safe_relpath(name) == PurePosixPath(path)


LONG_ASCII = AT_LIMIT + "z"  # 1,025 bytes
LONG_UTF8 = "/".join(["é" * 120] * 5)  # 604 characters, 1,204 bytes


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "empty file name"),
        (LONG_ASCII, f"file name {LONG_ASCII[:80]!r}... is longer than {MAX_PATH_BYTES} bytes"),
        (LONG_UTF8, f"file name {LONG_UTF8[:80]!r}... is longer than {MAX_PATH_BYTES} bytes"),
        ("a\x00b", "file name 'a\\x00b' contains a NUL or control character"),
        ("a\nb", "file name 'a\\nb' contains a NUL or control character"),
        ("a\x1fb", "file name 'a\\x1fb' contains a NUL or control character"),
        ("a\x7fb", "file name 'a\\x7fb' contains a NUL or control character"),
        # an undecodable byte, as tarfile reads it (surrogateescape): not storable as text
        ("sc\udcffore.py", "file name 'sc\\udcffore.py' is not UTF-8"),
        ("a\\b", "file name 'a\\\\b' contains a backslash; use '/' between folders"),
        ("C:evil.py", "file name 'C:evil.py' starts with a drive letter"),
        ("/etc/passwd", "file name '/etc/passwd' is an absolute path"),
        ("/", "file name '/' is an absolute path"),
        ("..", "file name '..' has an empty, '.' or '..' component"),
        ("../x", "file name '../x' has an empty, '.' or '..' component"),
        ("a/../../x", "file name 'a/../../x' has an empty, '.' or '..' component"),
        ("./x", "file name './x' has an empty, '.' or '..' component"),
        ("a/./x", "file name 'a/./x' has an empty, '.' or '..' component"),
        ("a//x", "file name 'a//x' has an empty, '.' or '..' component"),
        ("x" * 256, f"file name {'x' * 80!r} has a name over 255 bytes (UTF-8)"),
        ("a/" + "é" * 128, f"file name {('a/' + 'é' * 78)!r} has a name over 255 bytes (UTF-8)"),
    ],
)
def test_safe_relpath_refusals(name: str, message: str) -> None:
    with pytest.raises(InvalidUpload) as caught:
        safe_relpath(name)
    assert caught.value.message == message
    assert caught.value.status_code == 422


def test_safe_relpath_names_what_it_checks() -> None:
    with pytest.raises(InvalidUpload) as caught:
        safe_relpath("../x", what="archive entry")
    assert caught.value.message == "archive entry '../x' has an empty, '.' or '..' component"


# --- HashingWriter ----------------------------------------------------------------------


def test_hashing_writer_writes_a_new_file_with_its_size_and_sha256(tmp_path: Path) -> None:
    before = open_fds()
    writer = HashingWriter(tmp_path, PurePosixPath("weights/v1/model.bin"))
    writer.write(b"abc")
    writer.write(memoryview(b"\x00def")[1:])
    got = writer.close()
    assert got == StoredFile("weights/v1/model.bin", 6, hashlib.sha256(b"abcdef").hexdigest())
    assert tree_of(tmp_path) == {
        "weights": None,
        "weights/v1": None,
        "weights/v1/model.bin": b"abcdef",
    }
    assert open_fds() == before


def test_hashing_writer_close_without_sync_gives_the_same_answer(tmp_path: Path) -> None:
    writer = HashingWriter(tmp_path, PurePosixPath("e"))
    assert writer.close(sync=False) == StoredFile("e", 0, hashlib.sha256(b"").hexdigest())
    assert (tmp_path / "e").read_bytes() == b""


@pytest.mark.parametrize(
    ("existing", "rel", "message"),
    [
        ({"a.txt": b"first"}, "a.txt", "a.txt appears twice, or both as a file and a folder"),
        ({"a/b": b"first"}, "a", "a appears twice, or both as a file and a folder"),
        ({"a": b"first"}, "a/b", "a/b appears twice, or both as a file and a folder"),
        ({"a": b"first"}, "a/b/c", "a/b/c clashes with another file of the upload"),
    ],
)
def test_hashing_writer_never_writes_over_what_is_there(
    tmp_path: Path, existing: dict[str, bytes], rel: str, message: str
) -> None:
    for name, data in existing.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    before = tree_of(tmp_path)
    with pytest.raises(InvalidUpload) as caught:
        HashingWriter(tmp_path, PurePosixPath(rel))
    assert caught.value.message == message
    assert tree_of(tmp_path) == before


@pytest.mark.parametrize("target_exists", [True, False], ids=["link", "dangling-link"])
def test_hashing_writer_never_writes_through_a_link(tmp_path: Path, target_exists: bool) -> None:
    outside = tmp_path / "outside.txt"
    if target_exists:
        outside.write_bytes(b"keep me")
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "score.py").symlink_to(outside)
    with pytest.raises(InvalidUpload) as caught:
        HashingWriter(tmp_path / "tree", PurePosixPath("score.py"))
    assert caught.value.message == "score.py appears twice, or both as a file and a folder"
    if target_exists:
        assert outside.read_bytes() == b"keep me"
    else:
        assert not outside.exists()


def test_hashing_writer_abort_releases_the_file(tmp_path: Path) -> None:
    before = open_fds()
    writer = HashingWriter(tmp_path, PurePosixPath("half.bin"))
    writer.write(b"half")
    writer.abort()
    assert open_fds() == before
    with pytest.raises(OSError):  # closed: nothing more goes into it
        writer.write(b"more")


def test_hashing_writer_as_a_context_aborts_on_error(tmp_path: Path) -> None:
    before = open_fds()
    with pytest.raises(RuntimeError), HashingWriter(tmp_path, PurePosixPath("x")) as writer:
        writer.write(b"partial")
        raise RuntimeError("refused mid-way")
    assert open_fds() == before


# --- staging, promotion, retirement, sweeping --------------------------------------------


def test_new_staging_makes_a_fresh_private_folder_each_time(tmp_path: Path) -> None:
    root = tmp_path / "staging"  # made on first use
    first, second = new_staging(root), new_staging(root)
    assert first != second
    assert first.parent == root and first.name.startswith("upload-")
    assert stat.S_IMODE(first.stat().st_mode) == 0o700
    assert sorted(root.iterdir()) == sorted([first, second])


def test_discard_removes_a_folder_and_accepts_a_missing_one(tmp_path: Path) -> None:
    staging = new_staging(tmp_path)
    (staging / "tree" / "a").mkdir(parents=True)
    (staging / "tree" / "a" / "b").write_bytes(b"x")
    discard(staging)
    discard(staging)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bad", ["", "../etc", "UPPERCASE1", "short", "a" * 41, "abc/defghij"])
def test_deployment_dir_refuses_what_is_not_a_deploy_id(tmp_path: Path, bad: str) -> None:
    assert deployment_dir(tmp_path, DEPLOY_ID) == tmp_path / DEPLOY_ID
    with pytest.raises(ValueError, match="not a deploy_id"):
        deployment_dir(tmp_path, bad)


def test_promote_moves_the_staged_tree_into_place(tmp_path: Path) -> None:
    deployments = tmp_path / "deployments"
    deployments.mkdir()
    tree = new_staging(tmp_path / "staging") / "tree"
    tree.mkdir(mode=0o700)
    (tree / "weights").mkdir()
    (tree / "weights" / "m.bin").write_bytes(b"w")
    target = promote(tree, deployments, DEPLOY_ID)
    assert target == deployments / DEPLOY_ID
    assert tree_of(target) == {"weights": None, "weights/m.bin": b"w"}
    assert stat.S_IMODE(target.stat().st_mode) == 0o755  # cells run as another user
    assert not tree.exists()


def test_promote_never_replaces_an_existing_deployment(tmp_path: Path) -> None:
    deployments = tmp_path / "deployments"
    (deployments / DEPLOY_ID).mkdir(parents=True)
    (deployments / DEPLOY_ID / "score.py").write_bytes(b"old")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "score.py").write_bytes(b"new")
    with pytest.raises(OSError):
        promote(tree, deployments, DEPLOY_ID)
    assert (deployments / DEPLOY_ID / "score.py").read_bytes() == b"old"
    assert (tree / "score.py").read_bytes() == b"new"


def test_retire_moves_a_deployment_aside_into_staging(tmp_path: Path) -> None:
    deployments, staging = tmp_path / "deployments", tmp_path / "staging"
    (deployments / DEPLOY_ID).mkdir(parents=True)
    (deployments / DEPLOY_ID / "score.py").write_bytes(b"x")
    staging.mkdir()
    trash = retire(deployments, staging, DEPLOY_ID)
    assert trash is not None
    assert trash.parent == staging and trash.name.startswith(f"trash-{DEPLOY_ID}-")
    assert tree_of(trash) == {"score.py": b"x"}
    assert list(deployments.iterdir()) == []
    assert retire(deployments, staging, DEPLOY_ID) is None  # already gone


def test_sweep_empties_staging_without_following_links(tmp_path: Path) -> None:
    staging, keep = tmp_path / "staging", tmp_path / "keep"
    keep.mkdir()
    (keep / "precious").write_bytes(b"p")
    (new_staging(staging) / "tree").mkdir()
    (staging / f"trash-{DEPLOY_ID}-0000").mkdir()
    (staging / "stray-file").write_bytes(b"s")
    (staging / "link-to-keep").symlink_to(keep)
    assert sweep(staging) == 4
    assert list(staging.iterdir()) == []
    assert sweep(staging) == 0
    assert tree_of(keep) == {"precious": b"p"}


def test_sweep_of_a_missing_staging_folder_is_nothing(tmp_path: Path) -> None:
    assert sweep(tmp_path / "staging") == 0
