"""The process runtime: each cell is a local ``python -m serving_cell`` subprocess.

For machines without Docker. Cells run in their own session so they outlive a server
restart; a small state file per cell lets the next server adopt them. Per-deployment
requirements go into a folder per requirements hash (``pip install --target``), cached.
A cell starts with a clean environment (:func:`cell_environment`), never the server's,
and its files (state, metadata, output) are the server's user's alone.
No isolation beyond the process boundary: use the docker runtime for untrusted code.
A cell's log file is rotated (copy, then truncate: the cell keeps appending to the
same open file) once it passes its cap, checked on every reconciler pass.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import serving_cell
from deployserver.runtime.base import CellInfo, CellSpec, CellStartError
from deployserver.runtime.environments import file_digest
from deployserver.runtime.hostpip import PipFailed, PipSandbox
from deployserver.store.files import open_private, private_dir, write_private

NAME = "process"
PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")
"""What a cell takes from the server's environment: where programs are, whose home, the
locale, the time zone and the scratch folder. Never the server's own settings (the admin
token, the webhook secret, the database URL) nor anything else the operator exported."""
CELL_CODE = Path(serving_cell.__file__).resolve().parent.parent
"""The folder holding the server's own ``serving_cell``: cells run that copy, whatever
the server's PYTHONPATH was."""


def cell_environment(
    spec: CellSpec, env_dir: Path | None, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The whole environment of a process cell: the basics of ``environ`` (default the
    server's) in PASSED_ENV, the deployment's metadata ``env``, its deploy_id, and a
    PYTHONPATH with its requirements' folder and the cell code."""
    environ = os.environ if environ is None else environ
    env = {key: environ[key] for key in PASSED_ENV if key in environ}
    env.setdefault("PATH", os.defpath)
    env.update(spec.env)  # the deployment's own settings (DEPLOYSERVER_* already refused)
    env["DEPLOYSERVER_DEPLOY_ID"] = spec.deploy_id
    paths = [str(env_dir)] if env_dir is not None else []
    paths += [str(CELL_CODE), spec.env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, paths))
    return env


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (held together while picked, so they differ)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def _stopped(pid: int) -> bool:
    """Whether ``pid`` is frozen by SIGSTOP (its state ``T``)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] == "T"


def _alive(pid: int, deploy_id: str) -> bool:
    """Whether ``pid`` is still the cell of ``deploy_id`` (for cells we did not start)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state != "Z" and b"serving_cell" in cmdline and deploy_id.encode() in cmdline


class ProcessRuntime:
    name = NAME

    def __init__(
        self,
        data_dir: Path,
        instance: str,
        *,
        sandbox: PipSandbox,
        python: str = sys.executable,
        log_max_bytes: int = 10 * 1024**2,
        log_files: int = 3,
    ) -> None:
        self.log_max_bytes = log_max_bytes
        self.log_files = log_files
        # cells run in their model folder; these hold their metadata (env values too),
        # output and installed requirements: the server's user's only
        self.root = private_dir(data_dir.resolve() / "cells")
        self.envs = private_dir(data_dir.resolve() / "envs")
        self.instance = instance
        self.python = python
        self.sandbox = sandbox
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    def describe(self) -> str:
        return f"process runtime: cells are local subprocesses of {self.python}"

    # environments -----------------------------------------------------------------
    def _env_dir(self, spec: CellSpec) -> Path | None:
        if not spec.requirements and not spec.wheels:
            return None
        digest = hashlib.sha256()
        for req in spec.requirements:
            digest.update(req.encode() + b"\n")
        for wheel in spec.wheels:
            digest.update(wheel.name.encode() + file_digest(wheel))
        return self.envs / digest.hexdigest()[:16]

    def needs_build(self, spec: CellSpec) -> bool:
        env = self._env_dir(spec)
        return env is not None and not (env / ".complete").exists()

    def prepare(self, spec: CellSpec) -> None:
        env = self._env_dir(spec)
        if env is None or (env / ".complete").exists():
            return
        with self.sandbox.workdir() as work:
            local, target = work / "local", work / "target"
            local.mkdir()
            for wheel in spec.wheels:
                shutil.copyfile(wheel, local / wheel.name)
            self.sandbox.give(work)
            args = ["install", "--quiet", "--only-binary=:all:", "--target", str(target)]
            args += [*spec.requirements, *(str(local / w.name) for w in spec.wheels)]
            try:
                self.sandbox.run_pip(args, work)
            except PipFailed as exc:
                raise RuntimeError(f"pip install failed: {exc}") from exc
            self.sandbox.take_back(target)
            (target / ".complete").touch()
            tmp = env.with_name(env.name + f".tmp{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.move(target, tmp)
            os.replace(tmp, env)

    # cells ------------------------------------------------------------------------
    def start(self, spec: CellSpec) -> CellInfo:
        port, grpc_port = _free_ports(2)
        # replicas of one deployment may start in the same millisecond
        cell_id = f"{spec.deploy_id}-{int(time.time() * 1000)}{secrets.token_hex(2)}"
        meta_path = self.root / f"{cell_id}.metadata.json"
        write_private(meta_path, json.dumps(spec.metadata))
        args = [
            self.python,
            "-m",
            "serving_cell",
            "--model-dir",
            str(spec.model_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--grpc-port",
            str(grpc_port),
            "--metadata",
            str(meta_path),
        ]
        if spec.explicit_entrypoint:
            args += ["--entrypoint", spec.explicit_entrypoint]
        env = cell_environment(spec, self._env_dir(spec))
        log = open_private(self.root / f"{cell_id}.log", append=True)  # the child keeps it
        try:
            proc = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
                cwd=spec.model_dir,
            )
        except OSError as exc:
            raise CellStartError(str(exc)) from exc
        finally:
            log.close()
        self._children[cell_id] = proc
        state = {
            "pid": proc.pid,
            "port": port,
            "grpc_port": grpc_port,
            "deploy_id": spec.deploy_id,
            "instance": self.instance,
        }
        write_private(self.root / f"{cell_id}.json", json.dumps(state))
        return self._info(cell_id, state)

    def _state(self, cell_id: str) -> dict[str, object] | None:
        try:
            return json.loads((self.root / f"{cell_id}.json").read_text())  # type: ignore[no-any-return]
        except (OSError, ValueError):
            return None

    def _info(self, cell_id: str, state: dict[str, object]) -> CellInfo:
        deploy_id = str(state["deploy_id"])
        url = f"http://127.0.0.1:{state['port']}"
        # cells started before cells served gRPC have no such port
        grpc = f"127.0.0.1:{state['grpc_port']}" if state.get("grpc_port") else None
        pid = int(state["pid"])  # type: ignore[call-overload]
        child = self._children.get(cell_id)
        if child is not None:  # started by this server: poll() also gives the exit code
            code = child.poll()
            paused = code is None and _stopped(pid)
            return CellInfo(NAME, cell_id, deploy_id, url, code is None, code, grpc, paused)
        running = _alive(pid, deploy_id)
        paused = running and _stopped(pid)
        return CellInfo(NAME, cell_id, deploy_id, url, running, grpc_address=grpc, paused=paused)

    def node(self) -> str:
        return socket.gethostname()

    def _signal(self, cell_id: str, signum: int) -> None:
        state = self._state(cell_id)
        if state is None or not self._info(cell_id, state).running:
            raise LookupError(f"no cell {cell_id}")
        try:
            os.killpg(int(state["pid"]), signum)  # type: ignore[call-overload]
        except ProcessLookupError as exc:
            raise LookupError(f"no cell {cell_id}") from exc

    def pause(self, cell_id: str) -> None:
        self._signal(cell_id, signal.SIGSTOP)

    def resume(self, cell_id: str) -> None:
        self._signal(cell_id, signal.SIGCONT)

    def inspect(self, cell_id: str) -> CellInfo | None:
        state = self._state(cell_id)
        return None if state is None else self._info(cell_id, state)

    def list_cells(self) -> list[CellInfo]:
        found = []
        for path in sorted(self.root.glob("*.json")):
            if path.name.endswith(".metadata.json"):
                continue
            state = self._state(path.stem)
            if state is not None and state.get("instance") == self.instance:
                found.append(self._info(path.stem, state))
                self._cap_log(path.stem)
        return found

    def _cap_log(self, cell_id: str) -> None:
        """Rotate the cell's log past its cap: ``.log`` -> ``.log.1`` -> ... Its last
        ``log_max_bytes`` are copied, then it is truncated in place, since the cell holds
        it open in append mode (a line written in between may be lost)."""
        log = self.root / f"{cell_id}.log"
        try:
            size = log.stat().st_size
        except OSError:
            return
        if size <= self.log_max_bytes:
            return
        kept = [log.with_name(f"{log.name}.{n}") for n in range(1, self.log_files)]
        for older, newer in zip(reversed(kept[1:]), reversed(kept[:-1]), strict=True):
            if newer.exists():
                os.replace(newer, older)
        with open(log, "r+b") as fh:
            if kept:
                fh.seek(size - self.log_max_bytes)
                write_private(kept[0], fh.read(self.log_max_bytes))
            fh.truncate(0)

    def stop(self, cell_id: str, timeout: float = 10.0) -> None:
        state = self._state(cell_id)
        if state is not None:
            pid = int(state["pid"])  # type: ignore[call-overload]

            def alive() -> bool:
                info = self._info(cell_id, state)
                return info.running

            if alive():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGTERM)
                    os.killpg(pid, signal.SIGCONT)  # a paused cell acts on it once thawed
                deadline = time.monotonic() + timeout
                while alive() and time.monotonic() < deadline:
                    time.sleep(0.05)
                if alive():
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pid, signal.SIGKILL)
            child = self._children.pop(cell_id, None)
            if child is not None:
                child.wait(timeout)
        rotated = [f".log.{n}" for n in range(1, self.log_files)]
        for suffix in (".json", ".metadata.json", ".log", *rotated):
            (self.root / f"{cell_id}{suffix}").unlink(missing_ok=True)

    def successor(self, cell_id: str) -> CellInfo | None:
        """The control plane restarts this runtime's cells: never one of its own."""
        return None

    def close(self) -> None:
        """Nothing is made ahead of a cell here."""

    def logs(self, cell_id: str, tail: int = 100) -> str:
        path = self.root / f"{cell_id}.log"
        if not path.exists():
            raise LookupError(f"no cell {cell_id}")
        lines = path.read_text(errors="replace").splitlines()
        previous = path.with_name(f"{path.name}.1")
        if len(lines) < tail and previous.exists():  # just rotated: the tail began there
            lines = previous.read_text(errors="replace").splitlines() + lines
        return "\n".join(lines[-tail:]) + ("\n" if lines else "")
