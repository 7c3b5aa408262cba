"""unpack(), called directly: what comes out of a zip, tar or tar.gz, and each archive it
refuses (links, devices, fifos, escaping or duplicate names, too many entries or bytes
as really written, a compression bomb, a corrupt file) with its message; a refusal
writes nothing outside the folder it was given."""

from __future__ import annotations

import errno
import hashlib
import io
import lzma
import stat
import tarfile
import warnings
import zipfile
from pathlib import Path

import pytest

from deployserver.errors import UnsafeArchive, disk_full
from deployserver.upload import unpack as unpack_module
from deployserver.upload.storage import HashingWriter, StoredFile
from deployserver.upload.unpack import UnpackLimits, is_archive, unpack

LIMITS = UnpackLimits(max_entries=100, max_bytes=1_000_000, max_ratio=100.0)
ONLY_REGULAR = "only regular files and folders are accepted"

# an entry: (name, data) for a file, (name, None) for a folder
Entry = tuple[str, bytes | None]
NESTED: list[Entry] = [
    ("weights/", None),
    ("weights/v1/model.bin", b"\x00\x01" * 50),
    ("score.py", b"class Model: ...\n"),
    ("empty/", None),
]


def stored(path: str, data: bytes) -> StoredFile:
    return StoredFile(path, len(data), hashlib.sha256(data).hexdigest())


def tar_info(name: str, kind: bytes = tarfile.REGTYPE, *, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


def write_tar(path: Path, entries: list[Entry | tarfile.TarInfo], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tf:  # type: ignore[call-overload]
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                tf.addfile(entry)
                continue
            name, data = entry
            if data is None:
                tf.addfile(tar_info(name, tarfile.DIRTYPE))
            else:
                info = tar_info(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


def write_zip(path: Path, entries: list[Entry | tuple[zipfile.ZipInfo, bytes]]) -> Path:
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        warnings.simplefilter("ignore")  # zipfile warns of the duplicates we mean to write
        for name, data in entries:
            if data is None:
                zf.writestr(name, b"")  # a name ending in '/' is a folder
            else:
                zf.writestr(name, data)
    return path


def zip_info(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = mode << 16
    return info


def tree_of(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root``: a file's bytes, None for a folder."""
    return {
        str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes())
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The empty folder to unpack into, one level down so '..' has somewhere to go."""
    folder = tmp_path / "staging" / "tree"
    folder.mkdir(parents=True)
    return folder


def refused(archive: Path, root: Path, limits: UnpackLimits = LIMITS) -> str:
    """Unpack an archive that must be refused; nothing outside ``root`` may change.
    Returns the message."""
    outside = root.parent.parent  # the test's folder: the archive, staging, the tree
    inside = f"{root.relative_to(outside)}/"

    def around() -> dict[str, bytes | None]:
        return {k: v for k, v in tree_of(outside).items() if not k.startswith(inside)}

    before = around()
    with pytest.raises(UnsafeArchive) as caught:
        unpack(archive, root, limits)
    assert around() == before
    assert caught.value.status_code == 422
    return caught.value.message


# --- what comes out ---------------------------------------------------------------------

NESTED_FILES = [
    stored("weights/v1/model.bin", b"\x00\x01" * 50),
    stored("score.py", b"class Model: ...\n"),
]
NESTED_TREE = {
    "empty": None,
    "score.py": b"class Model: ...\n",
    "weights": None,
    "weights/v1": None,
    "weights/v1/model.bin": b"\x00\x01" * 50,
}


def test_a_zip_with_nested_folders(tmp_path: Path, root: Path) -> None:
    archive = write_zip(tmp_path / "model.zip", NESTED)
    assert unpack(archive, root, LIMITS) == NESTED_FILES
    assert tree_of(root) == NESTED_TREE


@pytest.mark.parametrize(
    ("name", "mode"),
    [("model.tar", "w"), ("model.tar.gz", "w:gz"), ("model.tgz", "w:gz"), ("MODEL.TGZ", "w:gz")],
)
def test_a_tar_with_nested_folders(tmp_path: Path, root: Path, name: str, mode: str) -> None:
    archive = write_tar(tmp_path / name, list(NESTED), mode)
    assert unpack(archive, root, LIMITS) == NESTED_FILES
    assert tree_of(root) == NESTED_TREE


def test_an_archive_inside_the_archive_is_stored_as_a_file(tmp_path: Path, root: Path) -> None:
    inner = write_zip(tmp_path / "inner.zip", [("x.py", b"x")]).read_bytes()
    archive = write_tar(tmp_path / "model.tgz", [("score.py", b"s"), ("data/inner.zip", inner)])
    assert unpack(archive, root, LIMITS) == [
        stored("score.py", b"s"),
        stored("data/inner.zip", inner),
    ]
    assert tree_of(root) == {"data": None, "data/inner.zip": inner, "score.py": b"s"}


@pytest.mark.parametrize("name", ["m.zip", "m.tar", "m.tar.gz", "m.tgz", "M.ZIP", "dir/m.Tar.Gz"])
def test_is_archive_by_suffix(name: str) -> None:
    assert is_archive(name)


@pytest.mark.parametrize("name", ["m.gz", "m.tar.xz", "m.zip.txt", "zip", "m.whl"])
def test_is_not_archive(name: str) -> None:
    assert not is_archive(name)


# --- links, devices, fifos ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (tar_info("ln", tarfile.SYMTYPE, linkname="/etc/passwd"), "is a link"),
        (tar_info("ln", tarfile.LNKTYPE, linkname="score.py"), "is a link"),
        (tar_info("ln", tarfile.CHRTYPE), "is a special file"),
        (tar_info("ln", tarfile.BLKTYPE), "is a special file"),
        (tar_info("ln", tarfile.FIFOTYPE), "is a special file"),
    ],
    ids=["symlink", "hardlink", "char-device", "block-device", "fifo"],
)
def test_tar_links_and_special_files_are_refused(
    tmp_path: Path, root: Path, member: tarfile.TarInfo, message: str
) -> None:
    archive = write_tar(tmp_path / "model.tgz", [("score.py", b"s"), member])
    assert refused(archive, root) == f"archive entry 'ln' {message}; {ONLY_REGULAR}"
    assert not (root / "ln").exists() and not (root / "ln").is_symlink()


@pytest.mark.parametrize("mode", [stat.S_IFLNK | 0o777, stat.S_IFIFO | 0o644, stat.S_IFCHR | 0o644])
def test_zip_links_and_special_files_are_refused(tmp_path: Path, root: Path, mode: int) -> None:
    archive = write_zip(
        tmp_path / "model.zip", [("score.py", b"s"), (zip_info("ln", mode), b"/etc")]
    )
    assert refused(archive, root) == f"archive entry 'ln' is a link or special file; {ONLY_REGULAR}"
    assert not (root / "ln").exists() and not (root / "ln").is_symlink()


def test_an_encrypted_zip_entry_is_refused(tmp_path: Path, root: Path) -> None:
    archive = write_zip(tmp_path / "model.zip", [("secret.bin", b"x")])
    raw = bytearray(archive.read_bytes())
    for header, flags_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # local, central
        at = raw.find(header) + flags_at
        raw[at] |= 0x1
    archive.write_bytes(raw)
    assert refused(archive, root) == "archive entry 'secret.bin' is encrypted"


# --- names --------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["zip", "tgz"])
@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("../escape.py", "has an empty, '.' or '..' component"),
        ("a/../../escape.py", "has an empty, '.' or '..' component"),
        ("../escape/", "has an empty, '.' or '..' component"),  # a folder
        ("{tmp}/escape.py", "is an absolute path"),
    ],
)
def test_names_that_leave_the_folder_are_refused(
    tmp_path: Path, root: Path, suffix: str, name: str, rule: str
) -> None:
    name = name.format(tmp=tmp_path)
    data = None if name.endswith("/") else b"pwned"
    entries: list[Entry] = [("score.py", b"s"), (name, data)]
    archive = (write_zip if suffix == "zip" else write_tar)(tmp_path / f"model.{suffix}", entries)
    shown = name.rstrip("/") if suffix == "tgz" else name  # tar drops a folder's '/'
    message = refused(archive, root)
    assert message == f"refused archive: archive entry {shown!r} {rule}"


def test_a_tar_entry_whose_name_is_not_utf8_is_refused(tmp_path: Path, root: Path) -> None:
    archive = tmp_path / "model.tar"
    # GNU format writes the name's bytes as they are: b"caf\xe9.py", Latin-1
    with tarfile.open(archive, "w", format=tarfile.GNU_FORMAT, encoding="latin-1") as tf:
        tf.addfile(tar_info("café.py"))
    message = refused(archive, root)
    assert message == "refused archive: archive entry 'caf\\udce9.py' is not UTF-8"
    assert list(root.iterdir()) == []


@pytest.mark.parametrize("suffix", ["zip", "tgz"])
def test_the_same_file_twice_is_refused(tmp_path: Path, root: Path, suffix: str) -> None:
    entries: list[Entry] = [("a.txt", b"first"), ("a.txt", b"second")]
    archive = (write_zip if suffix == "zip" else write_tar)(tmp_path / f"model.{suffix}", entries)
    message = refused(archive, root)
    assert message == "refused archive: a.txt appears twice, or both as a file and a folder"
    assert tree_of(root) == {"a.txt": b"first"}


def test_a_folder_where_a_file_is_is_refused(tmp_path: Path, root: Path) -> None:
    archive = write_tar(tmp_path / "model.tgz", [("a", b"file"), ("a", None)])
    assert refused(archive, root) == "archive entry 'a' clashes with a file of the archive"


def test_a_file_where_a_folder_is_is_refused(tmp_path: Path, root: Path) -> None:
    archive = write_zip(tmp_path / "model.zip", [("a/", None), ("a", b"file")])
    message = refused(archive, root)
    assert message == "refused archive: a appears twice, or both as a file and a folder"


# --- limits -------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["zip", "tgz"])
def test_entries_up_to_the_limit_pass_one_more_is_refused(
    tmp_path: Path, root: Path, suffix: str
) -> None:
    three: list[Entry] = [("d/", None), ("d/a", b"a"), ("b", b"b")]  # folders count too
    write = write_zip if suffix == "zip" else write_tar
    limits = UnpackLimits(max_entries=3, max_bytes=1000, max_ratio=100.0)
    assert len(unpack(write(tmp_path / f"ok.{suffix}", three), root, limits)) == 2
    (tmp_path / "staging" / "tree2").mkdir()
    archive = write(tmp_path / f"over.{suffix}", [*three, ("c", b"c")])
    assert refused(archive, tmp_path / "staging" / "tree2", limits) == (
        "archive has more than 3 entries"
    )


@pytest.mark.parametrize("suffix", ["zip", "tgz"])
def test_bytes_up_to_the_limit_pass_one_more_is_refused(
    tmp_path: Path, root: Path, suffix: str
) -> None:
    # 30 bytes in all, no one file over the limit: the sum is what counts
    entries: list[Entry] = [("a", b"a" * 10), ("b", b"b" * 20)]
    write = write_zip if suffix == "zip" else write_tar
    archive = write(tmp_path / f"model.{suffix}", entries)
    assert len(unpack(archive, root, UnpackLimits(10, 30, 100.0))) == 2
    (tmp_path / "staging" / "tree2").mkdir()
    limits = UnpackLimits(10, 29, 100.0)
    message = refused(archive, tmp_path / "staging" / "tree2", limits)
    assert message == "archive unpacks to more than 29 bytes"
    # not one byte past the limit is written (the caller discards the folder)
    assert tree_of(tmp_path / "staging" / "tree2") == {"a": b"a" * 10, "b": b""}


def test_bytes_are_counted_as_written_not_as_declared(tmp_path: Path, root: Path) -> None:
    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("score.py", b"abc")
        zf.getinfo("score.py").file_size = 10**9  # the central directory now claims 1 GB
    assert zipfile.ZipFile(archive).getinfo("score.py").file_size == 10**9
    assert unpack(archive, root, UnpackLimits(10, 100, 100.0)) == [stored("score.py", b"abc")]


def test_an_archive_that_expands_past_the_ratio_is_refused(
    tmp_path: Path, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the floor below which ratios are not checked is 16 MiB; lowered so a tiny
    # archive can show the rule
    monkeypatch.setattr(unpack_module, "RATIO_FLOOR_BYTES", 1024)
    archive = write_zip(tmp_path / "model.zip", [("zeros.bin", bytes(64 * 1024))])
    ratio = 64 * 1024 / archive.stat().st_size  # about 300
    assert 2 * ratio < 1000
    # within a ratio it passes, whatever the floor
    assert len(unpack(archive, root, UnpackLimits(10, 10**6, 2 * ratio))) == 1
    other = tmp_path / "staging" / "tree2"
    other.mkdir()
    message = refused(archive, other, UnpackLimits(10, 10**6, ratio / 2))
    assert (
        message == f"archive expands more than {ratio / 2:g} times its size (a compression bomb?)"
    )
    assert tree_of(other) == {"zeros.bin": b""}  # not one byte past the limit written


def test_below_the_ratio_floor_a_well_compressed_archive_passes(tmp_path: Path, root: Path) -> None:
    archive = write_zip(tmp_path / "model.zip", [("zeros.bin", bytes(64 * 1024))])
    assert archive.stat().st_size * 100 < 64 * 1024  # over a 100x ratio
    got = unpack(archive, root, UnpackLimits(10, 10**6, 2.0))
    assert got == [stored("zeros.bin", bytes(64 * 1024))]


# --- unreadable archives ------------------------------------------------------------------


def test_a_file_that_is_not_a_zip_is_refused(tmp_path: Path, root: Path) -> None:
    archive = tmp_path / "model.zip"
    archive.write_bytes(b"PK but not really")
    assert refused(archive, root) == "could not read the archive model.zip: File is not a zip file"


def test_a_zip_entry_with_a_bad_checksum_is_refused(tmp_path: Path, root: Path) -> None:
    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("score.py", b"print('hello')")
    archive.write_bytes(archive.read_bytes().replace(b"hello", b"HELLO"))
    message = refused(archive, root)
    assert message == "could not read the archive model.zip: Bad CRC-32 for file 'score.py'"


def test_a_tar_gz_cut_short_is_refused(tmp_path: Path, root: Path) -> None:
    archive = write_tar(tmp_path / "model.tar.gz", [("a.bin", bytes(range(256)) * 64)])
    archive.write_bytes(archive.read_bytes()[:-100])
    message = refused(archive, root)
    assert message.startswith("could not read the archive model.tar.gz: ")


def test_a_tgz_that_is_not_a_tar_is_refused(tmp_path: Path, root: Path) -> None:
    archive = tmp_path / "model.tgz"
    archive.write_bytes(b"hello, not a tarball")
    message = refused(archive, root)
    assert message.startswith("could not read the archive model.tgz: ")


@pytest.mark.parametrize(
    ("name", "entries"),
    [("model.zip", []), ("model.zip", [("only/", None)]), ("model.tgz", [("only", None)])],
)
def test_an_archive_without_files_is_refused(
    tmp_path: Path, root: Path, name: str, entries: list[Entry]
) -> None:
    write = write_zip if name.endswith(".zip") else write_tar
    assert refused(write(tmp_path / name, entries), root) == "the archive holds no files"


def test_a_zip_entry_in_a_compression_method_python_cannot_read_is_refused(
    tmp_path: Path, root: Path
) -> None:
    archive = write_zip(tmp_path / "model.zip", [("score.py", b"s")])
    raw = bytearray(archive.read_bytes())
    for header, method_at in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):  # local, central
        at = raw.find(header) + method_at
        raw[at : at + 2] = (6).to_bytes(2, "little")  # 6: "imploded", from PKZIP 1
    archive.write_bytes(raw)
    message = refused(archive, root)
    assert message == (
        "could not read the archive model.zip: That compression method is not supported"
    )


def test_a_corrupt_xz_tar_is_refused(tmp_path: Path, root: Path) -> None:
    # tarfile reads xz too; a fault found past the first 8 KiB surfaces as lzma's own error
    data = b"print('hello')\n" * 2000
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tar_info("score.py")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    tar = buf.getvalue()[: 512 + -(-len(data) // 512) * 512]  # read to the stream's end
    xz = bytearray(lzma.compress(tar))
    xz[-12] ^= 0xFF  # the stream footer's CRC32
    archive = tmp_path / "model.tar"
    archive.write_bytes(xz)
    assert refused(archive, root) == "could not read the archive model.tar: Corrupt input data"


def test_a_full_disk_while_unpacking_is_not_blamed_on_the_archive(
    tmp_path: Path, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_is_full(_self: HashingWriter, _data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    archive = write_tar(tmp_path / "model.tgz", [("score.py", b"s")])
    monkeypatch.setattr(HashingWriter, "write", disk_is_full)
    with pytest.raises(OSError) as caught:
        unpack(archive, root, LIMITS)
    full = disk_full(caught.value)  # what receive_upload answers with: 507, not 422
    assert full is not None and full.code == "insufficient_storage"
