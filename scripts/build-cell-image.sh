#!/usr/bin/env bash
# Build the serving cell image offline: deployserver/cell:<content hash> and :latest.
#
# The content hash covers serving_cell/Dockerfile, serving_cell/requirements.txt and the
# package's *.py files (deployserver/images.py computes it, the server uses the same), so
# this does nothing when that tag exists and a changed cell source makes a new image.
#   1. download the wheels of serving_cell/requirements.txt into wheelhouse/cell (host, PyPI)
#   2. docker build --network none from a context holding only the Dockerfile, the package
#      and the wheels (pip install --no-index inside)
#
# Usage: scripts/build-cell-image.sh [--force] [--offline]
#   --force     rebuild even if the content tag exists
#   --offline   do not download: use wheelhouse/cell as it is (air-gapped machines)
# Environment:
#   DEPLOYSERVER_BASE_IMAGE  base image (default python:3.11-slim if present locally,
#                            else deployserver/base:bookworm from build-base-image.sh)
#   PYTHON                   host Python that runs pip and the tag helper (default python3)
# Prints the content tag on stdout; progress goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

parse_flags force offline -- "$@"

tag="$("${PYTHON:-python3}" -m deployserver.runtime.images cell-tag)"
# The wheelhouse is kept even when the image exists: it is what makes a rebuild (or the
# server's own ensure_cell_image) possible offline later.
if [[ $flag_offline -eq 0 ]] && ! compgen -G "wheelhouse/cell/*.whl" >/dev/null; then
    echo "build-cell-image: downloading wheels into wheelhouse/cell" >&2
    download_wheels wheelhouse/cell -r serving_cell/requirements.txt
fi
if [[ $flag_force -eq 0 ]] && docker image inspect "$tag" >/dev/null 2>&1; then
    echo "build-cell-image: $tag already exists (use --force to rebuild)" >&2
    docker tag "$tag" deployserver/cell:latest
    echo "$tag"
    exit 0
fi

base="$(resolve_base_image)"
if [[ $flag_offline -eq 0 ]]; then
    echo "build-cell-image: refreshing wheels in wheelhouse/cell" >&2
    download_wheels wheelhouse/cell -r serving_cell/requirements.txt
fi

context="$(mktemp -d "${TMPDIR:-/tmp}/deployserver-cell.XXXXXX")"
trap 'rm -rf "$context"' EXIT
"${PYTHON:-python3}" -m deployserver.runtime.images cell-context "$context" --wheelhouse wheelhouse/cell

echo "build-cell-image: building $tag on $base" >&2
docker build --network none --pull=false \
    --build-arg "BASE_IMAGE=$base" --build-arg "CONTENT_HASH=${tag##*:}" \
    --tag "$tag" --tag deployserver/cell:latest "$context" >&2
echo "$tag"
