#!/usr/bin/env bash
# Build the Debian bookworm base image (deployserver/base:bookworm) without any registry.
#
# It stands in for python:3.11-slim where no image can be pulled: debootstrap a minbase
# root filesystem from a Debian mirror (bookworm ships CPython 3.11), add python3 with
# venv support and CA certificates, strip caches and docs, and `docker import` the tree.
# The Dockerfiles only rely on `python3 -m venv`, which both images have.
#
# Usage: scripts/build-base-image.sh [--force]
#   --force                      rebuild even if the tag already exists
# Environment:
#   DEPLOYSERVER_BASE_IMAGE      tag to produce       (default deployserver/base:bookworm)
#   DEBIAN_MIRROR                mirror URL           (default http://deb.debian.org/debian)
#   DEBIAN_SUITE                 Debian release       (default bookworm)
# Prints the tag on stdout; progress goes to stderr. Needs root (debootstrap chroots).
set -euo pipefail

TAG="${DEPLOYSERVER_BASE_IMAGE:-deployserver/base:bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE="${DEBIAN_SUITE:-bookworm}"
PACKAGES="python3,python3-venv,ca-certificates"

source "$(dirname "$0")/lib.sh"
parse_flags force -- "$@"

log() { echo "build-base-image: $*" >&2; }

if [[ $flag_force -eq 0 ]] && docker image inspect "$TAG" >/dev/null 2>&1; then
    log "$TAG already exists (use --force to rebuild)"
    echo "$TAG"
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    log "must run as root (debootstrap needs chroot and device nodes)"
    exit 1
fi

if ! command -v debootstrap >/dev/null 2>&1; then
    log "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap >&2
fi

work="$(mktemp -d /var/tmp/deployserver-base.XXXXXX)"
trap 'rm -rf --one-file-system "$work"' EXIT
rootfs="$work/rootfs"

log "debootstrap $SUITE from $MIRROR into $rootfs"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$MIRROR" >&2

# Keep later `apt-get install` layers small too, as Debian's official images do.
cat > "$rootfs/etc/dpkg/dpkg.cfg.d/deployserver-excludes" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
CFG
cat > "$rootfs/etc/apt/apt.conf.d/deployserver-clean" <<'CFG'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
CFG

log "cleaning caches and docs"
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/cache/debconf/*-old \
    "$rootfs"/var/log/* "$rootfs"/tmp/* "$rootfs"/var/tmp/* \
    "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/lintian/* \
    "$rootfs"/usr/share/locale/*
find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
find "$rootfs" -xdev -name __pycache__ -type d -prune -exec rm -rf {} +
# debootstrap leaves the build host's resolver config and name in the tree.
: > "$rootfs/etc/resolv.conf"
: > "$rootfs/etc/hostname"

log "importing as $TAG"
tar --numeric-owner --xattrs -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    --message "debootstrap --variant=minbase $SUITE + $PACKAGES" \
    - "$TAG" >&2

echo "$TAG"
