"""The peers' virtualenvs: each installed from PyPI once, under a folder the benchmark
owns (``--peers-dir``), and reused while its requirements are the same."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from bench.common import BenchError, say

INSTALL_SECONDS = 1800
MARKER = "deployserver-bench.json"
"""Written last, once pip succeeded: what the folder was installed with."""


def ensure(root: Path, name: str, requirements: list[str]) -> Path:
    """``root/name``, a virtualenv with ``requirements`` installed; made (or remade, when
    its requirements changed) with this interpreter's Python and pip."""
    folder = root / name
    wanted = {"python": sys.version.split()[0], "requirements": requirements}
    marker = folder / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    say(f"installing {name} into {folder} from PyPI (once; reused by later runs)")
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    log = folder / "pip.log"
    pip = [str(python(folder)), "-m", "pip", "install", "--disable-pip-version-check"]
    with log.open("wb") as out:
        done = subprocess.run(
            [*pip, *requirements],
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=INSTALL_SECONDS,
        )
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-1500:]
        raise BenchError(f"pip could not install {name} ({' '.join(requirements)}):\n{tail}")
    marker.write_text(json.dumps(wanted))
    return folder


def python(folder: Path) -> Path:
    return folder / "bin" / "python"
