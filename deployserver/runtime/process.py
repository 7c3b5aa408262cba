"""The process runtime: each cell is a local ``python -m serving_cell`` subprocess.

For machines without Docker. Cells run in their own session so they outlive a server
restart; a small state file per cell lets the next server adopt them. Per-deployment
requirements go into a folder per requirements hash (``pip install --target``), cached.
No isolation beyond the process boundary: use the docker runtime for untrusted code.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from deployserver.runtime.base import CellInfo, CellSpec, CellStartError

NAME = "process"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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

    def __init__(self, data_dir: Path, instance: str, python: str = sys.executable) -> None:
        self.root = data_dir.resolve() / "cells"  # cells run in their model folder
        self.envs = data_dir.resolve() / "envs"
        self.instance = instance
        self.python = python
        self.root.mkdir(parents=True, exist_ok=True)
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
            digest.update(wheel.name.encode() + hashlib.sha256(wheel.read_bytes()).digest())
        return self.envs / digest.hexdigest()[:16]

    def needs_build(self, spec: CellSpec) -> bool:
        env = self._env_dir(spec)
        return env is not None and not (env / ".complete").exists()

    def prepare(self, spec: CellSpec) -> None:
        env = self._env_dir(spec)
        if env is None or (env / ".complete").exists():
            return
        tmp = env.with_name(env.name + f".tmp{os.getpid()}")
        args = [
            self.python,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--only-binary=:all:",
            "--target",
            str(tmp),
            *spec.requirements,
            *[str(w) for w in spec.wheels],
        ]
        done = subprocess.run(args, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            raise RuntimeError(f"pip install failed: {done.stderr.strip()[-2000:]}")
        (tmp / ".complete").touch()
        os.replace(tmp, env)

    # cells ------------------------------------------------------------------------
    def start(self, spec: CellSpec) -> CellInfo:
        port = _free_port()
        cell_id = f"{spec.deploy_id}-{int(time.time() * 1000)}"
        meta_path = self.root / f"{cell_id}.metadata.json"
        meta_path.write_text(json.dumps(spec.metadata))
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
            "--metadata",
            str(meta_path),
        ]
        if spec.metadata.get("entrypoint"):
            args += ["--entrypoint", str(spec.metadata["entrypoint"])]
        env = {**os.environ, **spec.env, "DEPLOYSERVER_DEPLOY_ID": spec.deploy_id}
        env_dir = self._env_dir(spec)
        if env_dir is not None:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(env_dir), env.get("PYTHONPATH")]))
        log = open(self.root / f"{cell_id}.log", "ab")  # noqa: SIM115 - the child keeps it
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
            "deploy_id": spec.deploy_id,
            "instance": self.instance,
        }
        (self.root / f"{cell_id}.json").write_text(json.dumps(state))
        return CellInfo(NAME, cell_id, spec.deploy_id, f"http://127.0.0.1:{port}", True)

    def _state(self, cell_id: str) -> dict[str, object] | None:
        try:
            return json.loads((self.root / f"{cell_id}.json").read_text())  # type: ignore[no-any-return]
        except (OSError, ValueError):
            return None

    def _info(self, cell_id: str, state: dict[str, object]) -> CellInfo:
        deploy_id = str(state["deploy_id"])
        url = f"http://127.0.0.1:{state['port']}"
        child = self._children.get(cell_id)
        if child is not None:  # started by this server: poll() also gives the exit code
            code = child.poll()
            return CellInfo(NAME, cell_id, deploy_id, url, code is None, code)
        running = _alive(int(state["pid"]), deploy_id)  # type: ignore[call-overload]
        return CellInfo(NAME, cell_id, deploy_id, url, running)

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
        return found

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
                deadline = time.monotonic() + timeout
                while alive() and time.monotonic() < deadline:
                    time.sleep(0.05)
                if alive():
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pid, signal.SIGKILL)
            child = self._children.pop(cell_id, None)
            if child is not None:
                child.wait(timeout)
        for suffix in (".json", ".metadata.json", ".log"):
            (self.root / f"{cell_id}{suffix}").unlink(missing_ok=True)

    def logs(self, cell_id: str, tail: int = 100) -> str:
        path = self.root / f"{cell_id}.log"
        if not path.exists():
            raise LookupError(f"no cell {cell_id}")
        lines = path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-tail:]) + ("\n" if lines else "")
