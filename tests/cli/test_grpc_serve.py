"""``deployserver serve --grpc-port`` (or DEPLOYSERVER_GRPC_PORT) opens the gRPC port
beside the HTTP one, in the same process, and closes it when the server stops."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import tritonclient.grpc as triton

from tests.cli.conftest import checkout_env
from tests.helpers import free_port


def _serving(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60  # a guard against hanging, not a timing
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert process.poll() is None, log.read_text(errors="replace")
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.1)


@pytest.mark.parametrize("how", ["flag", "env"])
def test_serve_opens_the_grpc_port_and_closes_it_on_stop(tmp_path: Path, how: str) -> None:
    port, grpc_port = free_port(), free_port()
    args = ["serve", "--runtime", "process", "--port", str(port)]
    args += ["--data-dir", str(tmp_path / "data"), "--log-level", "warning"]
    env = checkout_env()
    if how == "flag":
        args += ["--grpc-port", str(grpc_port)]
    else:
        env["DEPLOYSERVER_GRPC_PORT"] = str(grpc_port)
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "deployserver.cli", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _serving(f"http://127.0.0.1:{port}", process, log)
        with triton.InferenceServerClient(f"127.0.0.1:{grpc_port}") as client:
            assert client.is_server_live() and client.is_server_ready()
            assert client.get_server_metadata().name == "deployserver"
    finally:
        process.terminate()
        # uvicorn re-raises the signal it handled once it has shut down cleanly
        code = process.wait(timeout=60)
        assert code in (0, -signal.SIGTERM), log.read_text(errors="replace")
    with triton.InferenceServerClient(f"127.0.0.1:{grpc_port}") as client:
        with pytest.raises(triton.InferenceServerException) as caught:
            client.is_server_live(client_timeout=10)
        assert caught.value.status() == "StatusCode.UNAVAILABLE"
