"""The image content hash: what changes the cell image's tag and what does not."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from deployserver.runtime import images

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "serving_cell", tmp_path / "serving_cell")
    return tmp_path


def test_tag_is_repository_and_hash() -> None:
    tag = images.cell_image_tag(REPO)
    repository, _, digest = tag.rpartition(":")
    assert repository == images.CELL_REPOSITORY
    assert len(digest) == images.HASH_LENGTH
    assert int(digest, 16) >= 0
    assert images.cell_image_tag() == tag


@pytest.mark.parametrize("name", ["__init__.py", "requirements.txt", "Dockerfile"])
def test_changing_an_input_changes_the_tag(tree: Path, name: str) -> None:
    before = images.cell_image_tag(tree)
    with (tree / "serving_cell" / name).open("a") as f:
        f.write("\n# changed\n")
    assert images.cell_image_tag(tree) != before


def test_new_module_changes_the_tag(tree: Path) -> None:
    before = images.cell_image_tag(tree)
    (tree / "serving_cell" / "extra.py").write_text("X = 1\n")
    assert images.cell_image_tag(tree) != before


def test_caches_and_dates_do_not_change_the_tag(tree: Path) -> None:
    before = images.cell_image_tag(tree)
    cache = tree / "serving_cell" / "__pycache__"
    cache.mkdir(exist_ok=True)
    (cache / "detect.cpython-311.pyc").write_bytes(b"\0")
    (tree / "serving_cell" / "notes.txt").write_text("not shipped\n")
    (tree / "serving_cell" / "detect.py").touch()
    assert images.cell_image_tag(tree) == before


def test_hash_ignores_order_but_not_names() -> None:
    assert images.content_hash({"a": b"1", "b": b"2"}) == images.content_hash(
        {"b": b"2", "a": b"1"}
    )
    assert images.content_hash({"a": b"12"}) != images.content_hash({"a1": b"2"})


def test_missing_dockerfile_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "serving_cell").mkdir()
    with pytest.raises(images.ImageError, match="no cell Dockerfile"):
        images.cell_image_tag(tmp_path)


def test_context_holds_files_and_wheels(tmp_path: Path) -> None:
    wheelhouse = tmp_path / "wh"
    wheelhouse.mkdir()
    (wheelhouse / "x-1.0-py3-none-any.whl").write_bytes(b"wheel")
    (wheelhouse / "ignored.tar.gz").write_bytes(b"sdist")
    ctx = images.write_context(
        tmp_path / "ctx",
        {"Dockerfile": b"FROM scratch\n", "a/b.py": REPO / "pyproject.toml"},
        wheelhouse,
    )
    assert (ctx / "Dockerfile").read_bytes() == b"FROM scratch\n"
    assert (ctx / "a" / "b.py").read_bytes() == (REPO / "pyproject.toml").read_bytes()
    assert sorted(p.name for p in (ctx / "wheels").iterdir()) == ["x-1.0-py3-none-any.whl"]


def test_empty_wheelhouse_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(images.ImageError, match="no wheels"):
        images.write_context(tmp_path / "ctx", {}, tmp_path)


def test_cli_prints_the_tag(capsys: pytest.CaptureFixture[str]) -> None:
    assert images.main(["cell-tag"]) == 0
    assert capsys.readouterr().out.strip() == images.cell_image_tag(REPO)
