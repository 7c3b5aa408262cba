"""The SDK imports no server code: importing it in a fresh interpreter pulls in neither
the server's frameworks nor the cell package, only the SDK and the shared words."""

from __future__ import annotations

import json
import subprocess
import sys

SERVER_ONLY = ("sqlalchemy", "fastapi", "starlette", "alembic", "uvicorn", "docker", "serving_cell")
SHARED = {"deployserver", "deployserver.domain", "deployserver.schemas"}


def test_importing_the_sdk_pulls_in_no_server_code() -> None:
    probe = "import json, sys\nimport deployserver.client\nprint(json.dumps(sorted(sys.modules)))\n"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = json.loads(done.stdout)
    leaked = [m for m in loaded if m.split(".")[0] in SERVER_ONLY]
    assert leaked == [], leaked
    ours = {m for m in loaded if m.startswith("deployserver")}
    assert ours - SHARED == {m for m in ours if m.startswith("deployserver.client")}, ours
