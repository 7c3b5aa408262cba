"""pip on the server's host, confined: wheels only, an unprivileged user, a clean
environment and a time limit.

Every pip call the server makes (downloading an environment's wheels, installing a process
cell's requirements) goes through :func:`run_pip`:

- pip runs under ``pipguard.py``, which removes pip's ways of building from source, so no
  package's build code runs even for a direct reference that slipped past the upload checks;
- when the server runs as root, pip runs as ``DEPLOYSERVER_BUILD_UID`` with no supplementary
  groups: it cannot read the data folder (0700), the database or the server's secrets;
- its environment holds only ``PATH``, locale, proxy and ``PIP_*`` settings: never the
  server's ``DEPLOYSERVER_*`` values (admin token, database URL, webhook secret);
- it works in a scratch folder of its own, and the whole process group is killed when
  ``DEPLOYSERVER_BUILD_TIMEOUT`` passes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from deployserver.config import Settings

GUARD = Path(__file__).with_name("pipguard.py")
PASSED_ENV = ("PATH", "LANG", "LC_ALL", "SSL_CERT_FILE", "SSL_CERT_DIR", "NO_PROXY", "no_proxy")
PASSED_PREFIXES = ("PIP_", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")
_WORKING: set[tuple[str, int | None]] = set()
"""(interpreter, uid) pairs seen running pip, so each is probed once per process."""


SYSTEM_PYTHON = "/usr/bin/python3"
"""Tried when pip's user cannot run the server's own interpreter (one under /root, say)."""


class PipFailed(RuntimeError):
    """pip refused, failed or ran out of time; the message ends with its output."""


@dataclass(frozen=True)
class PipSandbox:
    """Who pip runs as and for how long."""

    uid: int | None
    """Run as this user (and group) when the server is root; None: as the server's user."""
    timeout: float
    python: str | None = None
    """The interpreter whose pip runs; None: the server's own if pip's user can run it,
    else the system's ``python3``."""

    @classmethod
    def from_settings(cls, settings: Settings) -> PipSandbox:
        return cls(settings.build_uid, settings.build_timeout, settings.build_python)

    @property
    def drops_privileges(self) -> bool:
        return self.uid is not None and os.geteuid() == 0

    @contextlib.contextmanager
    def workdir(self) -> Iterator[Path]:
        """A scratch folder pip may write to (owned by pip's user), removed afterwards."""
        path = Path(tempfile.mkdtemp(prefix="deployserver-pip-"))
        try:
            if self.drops_privileges:
                assert self.uid is not None
                os.chown(path, self.uid, self.uid)
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def give(self, path: Path) -> None:
        """Make ``path`` (a file or tree in a workdir) readable and writable by pip's user."""
        if not self.drops_privileges:
            return
        assert self.uid is not None
        for item in [path, *(path.rglob("*") if path.is_dir() else ())]:
            os.chown(item, self.uid, self.uid, follow_symlinks=False)

    def take_back(self, path: Path) -> None:
        """Return a tree pip's user wrote to the server's own user."""
        if not self.drops_privileges:
            return
        uid, gid = os.geteuid(), os.getegid()
        for item in [path, *path.rglob("*")]:
            os.chown(item, uid, gid, follow_symlinks=False)

    def environment(self, home: Path) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if key in PASSED_ENV or key.startswith(PASSED_PREFIXES)
        }
        env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
        env.update(
            HOME=str(home),
            PIP_DISABLE_PIP_VERSION_CHECK="1",
            PIP_NO_INPUT="1",
            PIP_CACHE_DIR=str(home / ".cache"),
            PYTHONDONTWRITEBYTECODE="1",
        )
        return env

    def interpreter(self) -> str:
        """The first candidate interpreter that runs pip as pip's user."""
        candidates = [self.python] if self.python else [sys.executable, SYSTEM_PYTHON]
        tried = []
        for python in candidates:
            if (python, self.uid) not in _WORKING:
                with self.workdir() as scratch:
                    try:
                        self.run([python, "-I", *self._guard(scratch), "--version"], scratch, 60)
                    except (PipFailed, OSError) as exc:
                        tried.append(f"{python}: {str(exc)[-300:]}")
                        continue
                _WORKING.add((python, self.uid))
            return python
        raise PipFailed(
            "no Python with pip that the build user can run; set DEPLOYSERVER_BUILD_PYTHON "
            "(tried " + "; ".join(tried) + ")"
        )

    def _guard(self, workdir: Path) -> list[str]:
        """The guard, copied where pip's user can read it."""
        copy = workdir / ".pipguard.py"
        if not copy.exists():
            shutil.copyfile(GUARD, copy)
            self.give(copy)
        return [str(copy)]

    def run_pip(self, args: Sequence[str], workdir: Path) -> str:
        """Run ``pip args`` confined; returns its output, or raises :class:`PipFailed`."""
        python = self.interpreter()
        return self.run([python, "-I", *self._guard(workdir), *args], workdir, self.timeout)

    def run(self, command: list[str], workdir: Path, timeout: float) -> str:
        """Run ``command`` as pip runs: its user, its environment, its time limit."""
        options: dict[str, object] = {}
        if self.drops_privileges:
            options = {"user": self.uid, "group": self.uid, "extra_groups": []}
        proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=workdir,
            env=self.environment(workdir),
            start_new_session=True,
            umask=0o077,
            **options,  # type: ignore[call-overload]
        )
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise PipFailed(f"pip took longer than {timeout:g} s and was stopped") from None
        text = bytes(out).decode(errors="replace").strip()
        if proc.returncode != 0:
            raise PipFailed(text[-2000:] or f"pip exited with code {proc.returncode}")
        return text
