"""Fetch the deployment's files from the control plane, checked and cached on this node.

Cells of the Swarm runtime have no shared disk with the server: at start the cell asks
``GET <url>`` with its deployment's credential, checks the archive against the sha256 it
was started with and unpacks it into ``<cache>/<sha256>/``; a later cell of the same
deployment on this node (the cache is per deployment and node) finds it there and
fetches nothing (``<cache>/<sha256>.complete`` marks a folder whole). Nothing but
regular files and folders is unpacked, and nothing outside the folder. Standard library
only.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath

DONE = ".complete"
CACHED = "from this node's cache"
CHUNK = 1024 * 1024
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class FetchError(RuntimeError):
    """The files could not be fetched or did not check out; the message says why."""


class Unreachable(FetchError):
    """The server could not be reached (or the transfer broke off): worth another try."""


def _download(url: str, token: str, target: Path, timeout: float) -> str:
    """Stream ``url`` into ``target``; its sha256."""
    if not url.startswith(("http://", "https://")):
        raise FetchError(f"--fetch-url {url!r} is no http(s) URL")
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})  # noqa: S310
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp, target.open("wb") as out:  # noqa: S310
            while chunk := resp.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
    except urllib.error.HTTPError as exc:  # the server answered: asking again will not help
        raise FetchError(f"fetching the model files from {url} failed: {exc}") from exc
    except OSError as exc:  # URLError (refused, no route, ...) and cut transfers
        raise Unreachable(f"fetching the model files from {url} failed: {exc}") from exc
    return digest.hexdigest()


def _download_patiently(url: str, token: str, target: Path, timeout: float, patience: float) -> str:
    """``_download``, tried again while the server cannot be reached for ``patience``
    seconds: an overlay network takes a few seconds to converge after a task starts
    ("No route to host" meanwhile), and a server being restarted refuses for a moment."""
    deadline = time.monotonic() + patience
    delay = 0.2
    while True:
        try:
            return _download(url, token, target, timeout)
        except Unreachable as exc:
            if time.monotonic() + delay > deadline:
                raise FetchError(str(exc)) from exc
            print(f"{exc}; trying again in {delay:g} s", file=sys.stderr, flush=True)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def _safe_name(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise FetchError(f"unsafe name in the model archive: {name!r}")
    return path


def unpack(archive: Path, dest: Path) -> None:
    """Unpack ``archive`` into the empty folder ``dest``: files and folders only."""
    with tarfile.open(archive, "r:") as tar:
        for member in tar:
            rel = _safe_name(member.name)
            target = dest.joinpath(*rel.parts)
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
            elif member.isfile():
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                if source is None:
                    raise FetchError(f"unreadable entry in the model archive: {member.name!r}")
                with source, target.open("xb") as out:
                    shutil.copyfileobj(source, out, CHUNK)
            else:
                raise FetchError(f"not a file or folder in the model archive: {member.name!r}")


def fetch_model(
    url: str,
    sha256: str,
    token_file: Path,
    cache: Path,
    *,
    timeout: float = 300.0,
    patience: float = 60.0,
) -> Path:
    """The deployment's folder on this node: from the cache, else fetched and checked."""
    if not _SHA256.match(sha256):
        raise FetchError(f"--fetch-sha256 {sha256!r} is not a sha256")
    folder, done = cache / sha256, cache / f"{sha256}{DONE}"
    if done.is_file() and folder.is_dir():
        return _say(folder, CACHED)
    try:
        token = token_file.read_text().strip()
    except OSError as exc:
        raise FetchError(f"cannot read the cell credential: {exc}") from exc
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # replicas on one node fetch one at a time
        if done.is_file() and folder.is_dir():
            return _say(folder, CACHED)
        work = Path(tempfile.mkdtemp(prefix=".fetch-", dir=cache))
        try:
            archive = work / "archive.tar"
            got = _download_patiently(url, token, archive, timeout, patience)
            if got != sha256:
                raise FetchError(f"the model archive's sha256 is {got}, not {sha256}: refused")
            tree = work / "tree"
            tree.mkdir()
            unpack(archive, tree)
            shutil.rmtree(folder, ignore_errors=True)  # left by a cell that died mid-way
            os.rename(tree, folder)
            done.write_text(sha256 + "\n")
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return _say(folder, f"fetched from {url}, sha256 checked")


def _say(folder: Path, how: str) -> Path:
    print(f"model files: {how} ({folder})", file=sys.stderr, flush=True)
    return folder
