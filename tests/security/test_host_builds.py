"""Host code execution during environment builds: a wheel under ``libraries/`` whose
metadata points at a local sdist (a direct reference) is refused at upload, and even if one
reached pip, pip on the host builds nothing from source, runs as an unprivileged user with a
clean environment, and is stopped after its time limit."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployserver.config import Settings
from deployserver.runtime.base import CellSpec
from deployserver.runtime.environments import download_wheels
from deployserver.runtime.hostpip import PipFailed, PipSandbox
from deployserver.runtime.images import ImageError
from deployserver.runtime.process import ProcessRuntime
from tests.helpers import (
    SCORE_PY,
    assert_refused_and_untouched,
    make_wheel,
    multipart,
    upload_server,
)

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="dropping to another user needs root")


def _pwned_sdist(folder: Path, marker: Path) -> Path:
    """An sdist whose setup.py writes ``marker``: proof that its code ran."""
    setup = (
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('pwned')\n"
        "from setuptools import setup\nsetup(name='pwned', version='1.0')\n"
    ).encode()
    path = folder / "pwned-1.0.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for name, data in {"pwned-1.0/setup.py": setup, "pwned-1.0/PKG-INFO": b""}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    path.chmod(0o644)
    return path


@pytest.fixture
def attack() -> Iterator[tuple[bytes, Path, Path]]:
    """(a carrier wheel that requires the sdist by file:// URL, the sdist, the marker).
    The sdist is where any user can read it, and the marker where any user can write, so
    only the guard, not file permissions, stops the build."""
    where = Path(tempfile.mkdtemp(prefix="ds-attacker-"))
    where.chmod(0o777)
    marker = where / "MARKER"
    sdist = _pwned_sdist(where, marker)
    requires = (f"pwned @ {sdist.as_uri()}",)
    try:
        yield make_wheel("carrier", "1.0", {"carrier.py": b""}, requires=requires), sdist, marker
    finally:
        shutil.rmtree(where)


def test_a_wheel_with_a_direct_reference_is_refused_at_upload(
    tmp_path: Path, database_url: str, attack: tuple[bytes, Path, Path]
) -> None:
    wheel, sdist, marker = attack
    files = {"score.py": SCORE_PY, "libraries/carrier-1.0-py3-none-any.whl": wheel}
    with upload_server(tmp_path, database_url) as (client, app):
        error = assert_refused_and_untouched(
            client,
            app,
            tmp_path / "data",
            {"files": multipart({"model": "victim"}, files)},
            422,
            "invalid_library",
            "libraries/carrier-1.0-py3-none-any.whl",
        )
    assert f"pwned @ {sdist.as_uri()}" in error["message"]
    assert "direct reference" in error["message"]
    assert not marker.exists()


@pytest.mark.parametrize(
    ("name", "data", "words"),
    [
        ("libraries/pwned-1.0.tar.gz", b"sdist", "is not a wheel"),
        ("libraries/setup.py", b"print(1)", "is not a wheel"),
        ("libraries/sub/x-1.0-py3-none-any.whl", b"", "no folders"),
        ("libraries/x-1.0-py3-none-any.whl", b"not a zip", "not a readable wheel"),
        ("libraries/not-a-wheel-name.whl", b"", "not a valid wheel file name"),
        ("libraries/x-1.0-cp39-cp39-manylinux2014_x86_64.whl", None, "cannot run in a cell"),
        ("libraries/x-1.0-cp311-cp311-win_amd64.whl", None, "cannot run in a cell"),
        ("libraries/x-1.0-py3-none-any.whl", b"https", "direct reference"),
        ("libraries/x-1.0-py3-none-any.whl", b"nometa", "exactly one x-<version>.dist-info"),
    ],
)
def test_anything_but_a_safe_wheel_under_libraries_is_refused(
    tmp_path: Path, database_url: str, name: str, data: bytes | None, words: str
) -> None:
    if data is None:
        data = make_wheel("x", "1.0", {"x.py": b""})
    elif data == b"https":
        data = make_wheel("x", "1.0", {}, requires=("y @ https://example.org/y-1.0.tar.gz",))
    elif data == b"nometa":
        data = make_wheel("other", "1.0", {})
    files = {"score.py": SCORE_PY, name: data}
    with upload_server(tmp_path, database_url) as (client, app):
        assert_refused_and_untouched(
            client,
            app,
            tmp_path / "data",
            {"files": multipart({"model": "victim"}, files)},
            422,
            "invalid_library",
            words,
        )


def test_a_safe_wheel_with_named_requirements_is_accepted(
    tmp_path: Path, database_url: str
) -> None:
    wheel = make_wheel("fine", "1.0", {"fine.py": b""}, requires=("numpy>=1.26", "six"))
    files = {"score.py": SCORE_PY, "libraries/fine-1.0-py3-none-any.whl": wheel}
    with upload_server(tmp_path, database_url) as (client, _app):
        resp = client.post(
            "/api/v1/deployments",
            params={"start": "false"},
            files=multipart({"model": "fine"}, files),
        )
    assert resp.status_code == 202, resp.text


def _sandbox(timeout: float = 300) -> PipSandbox:
    return PipSandbox.from_settings(Settings(build_timeout=timeout))


def test_pip_on_the_host_refuses_to_build_a_direct_reference(
    tmp_path: Path, attack: tuple[bytes, Path, Path]
) -> None:
    """Past the upload check (a wheel from an index, say), the environment build still
    builds nothing: the Docker runtime's wheel download fails, and the marker never appears."""
    wheel_bytes, _sdist, marker = attack
    wheel = tmp_path / "carrier-1.0-py3-none-any.whl"
    wheel.write_bytes(wheel_bytes)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(ImageError, match="refusing to build"):
        download_wheels(_sandbox(), [], [wheel], dest)
    assert not marker.exists()
    assert list(dest.iterdir()) == []


def test_the_process_runtime_install_refuses_too(
    tmp_path: Path, attack: tuple[bytes, Path, Path]
) -> None:
    wheel_bytes, _sdist, marker = attack
    model_dir = tmp_path / "model"
    (model_dir / "libraries").mkdir(parents=True)
    wheel = model_dir / "libraries" / "carrier-1.0-py3-none-any.whl"
    wheel.write_bytes(wheel_bytes)
    runtime = ProcessRuntime(tmp_path / "data", "test", sandbox=_sandbox())
    spec = CellSpec("d" * 24, "victim", 1, model_dir, "score.py:Model", {}, wheels=(wheel,))
    with pytest.raises(RuntimeError, match="refusing to build"):
        runtime.prepare(spec)
    assert not marker.exists()
    assert not any(runtime.envs.glob("*")) if runtime.envs.exists() else True


@root_only
def test_pip_runs_as_a_user_that_cannot_read_the_data_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEPLOYSERVER_ADMIN_TOKEN", "s" * 40)
    monkeypatch.setenv("DEPLOYSERVER_DATABASE_URL", "postgresql://u:secret@db/x")
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    (data / "admin-token").write_text("secret")
    sandbox = _sandbox()
    probe = (
        "import os, sys\n"
        "print(os.getuid(), os.getgid(), os.getgroups())\n"
        "print(sorted(k for k in os.environ if k.startswith('DEPLOYSERVER_')))\n"
        f"try:\n    open({str(data / 'admin-token')!r}).read()\n"
        "except PermissionError:\n    print('denied')\n"
    )
    with sandbox.workdir() as work:
        out = sandbox.run([sandbox.interpreter(), "-c", probe], work, 60).splitlines()
    assert out[0] == f"{Settings().build_uid} {Settings().build_uid} []"
    assert out[1] == "[]"
    assert out[2] == "denied"


def test_pip_is_stopped_after_its_time_limit() -> None:
    sandbox = _sandbox(timeout=1)
    with sandbox.workdir() as work:
        child = work / "child.pid"
        script = (
            "import subprocess, sys, time\n"
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
            f"open({str(child)!r}, 'w').write(str(p.pid))\n"
            "time.sleep(60)\n"
        )
        with pytest.raises(PipFailed, match="longer than 1 s"):
            sandbox.run([sandbox.interpreter(), "-c", script], work, 1)
        pid = int(child.read_text())
    # the whole process group went, grandchildren included
    stat = Path(f"/proc/{pid}/stat")
    assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
