#!/usr/bin/env bash
# Build the server image (top-level Dockerfile) offline, as deployserver/server:latest.
#
#   1. write the project's dependencies (pyproject.toml) to wheelhouse/server/requirements.txt
#      and download their wheels, plus setuptools for installing the project (host, PyPI);
#      skipped when that list is unchanged and its wheels are there
#   2. docker build --network none (pip install --no-index inside)
#
# Usage: scripts/build-server-image.sh [--offline]
#   --offline   do not download: use wheelhouse/server as it is (air-gapped machines)
# Environment:
#   DEPLOYSERVER_BASE_IMAGE    base image (same default as build-cell-image.sh)
#   DEPLOYSERVER_SERVER_IMAGE  tag to produce (default deployserver/server:latest)
#   PYTHON                     host Python that runs pip (default python3)
# Prints the tag on stdout; progress goes to stderr. Docker's layer cache makes a rebuild
# with unchanged sources quick.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

parse_flags offline -- "$@"

tag="${DEPLOYSERVER_SERVER_IMAGE:-deployserver/server:latest}"
base="$(resolve_base_image)"
if [[ $flag_offline -eq 0 ]]; then
    mkdir -p wheelhouse/server
    wanted="$("${PYTHON:-python3}" - <<'PY'
import tomllib

with open("pyproject.toml", "rb") as f:
    project = tomllib.load(f)
print("\n".join([*project["project"]["dependencies"], *project["build-system"]["requires"]]))
PY
)"
    # Same requirements as the wheels already there: no download, and Docker's layer
    # cache keeps the dependencies' layer, so only the sources' layer is rebuilt.
    if [[ "$wanted" == "$(cat wheelhouse/server/requirements.txt 2>/dev/null)" ]] \
        && compgen -G "wheelhouse/server/*.whl" >/dev/null; then
        echo "build-server-image: wheelhouse/server is up to date" >&2
    else
        echo "$wanted" > wheelhouse/server/requirements.txt
        echo "build-server-image: downloading wheels into wheelhouse/server" >&2
        download_wheels wheelhouse/server -r wheelhouse/server/requirements.txt
    fi
fi

echo "build-server-image: building $tag on $base" >&2
docker build --network none --pull=false --build-arg "BASE_IMAGE=$base" --tag "$tag" . >&2
echo "$tag"
