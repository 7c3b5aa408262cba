# Shared by the build-*-image.sh scripts; source it, do not run it.

# download_wheels DEST PIP_ARGS...: fill DEST with the binary wheels that PIP_ARGS
# (requirements, -r files) need on the images' Python: CPython 3.11, Linux x86_64, glibc
# >= 2.17 (bookworm has 2.36). Targets the image explicitly, so it also works from a host
# that is not Linux/cp311. Runs on the host: the image builds themselves have no network.
download_wheels() {
    local dest="$1"; shift
    mkdir -p "$dest"
    "${PYTHON:-python3}" -m pip download --disable-pip-version-check --quiet \
        --only-binary=:all: --implementation cp --python-version 3.11 --abi cp311 \
        --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux_2_28_x86_64 --platform linux_x86_64 \
        --dest "$dest" "$@" >&2
}

# resolve_base_image: the base the Dockerfiles build on, the same rule as
# deployserver.runtime.images.resolve_base_image: $DEPLOYSERVER_BASE_IMAGE, else python:3.11-slim
# if present locally, else deployserver/base:bookworm. Fails if it is not present.
resolve_base_image() {
    local base="${DEPLOYSERVER_BASE_IMAGE:-}"
    if [[ -z "$base" ]]; then
        base=deployserver/base:bookworm
        if docker image inspect python:3.11-slim >/dev/null 2>&1; then
            base=python:3.11-slim
        fi
    fi
    if ! docker image inspect "$base" >/dev/null 2>&1; then
        echo "base image $base is not present and cannot be pulled:" \
             "run scripts/build-base-image.sh (or set DEPLOYSERVER_BASE_IMAGE)" >&2
        return 1
    fi
    echo "$base"
}

# parse_flags NAME... -- "$@": for each --NAME among the arguments set flag_NAME=1 (others
# stay 0); -h/--help prints the script's leading comment; anything else is an error.
parse_flags() {
    local names=() name arg
    while [[ $1 != -- ]]; do names+=("$1"); shift; done
    shift
    for name in "${names[@]}"; do declare -g "flag_$name=0"; done
    for arg in "$@"; do
        case "$arg" in
            -h|--help) sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; exit 0 ;;
        esac
        for name in "${names[@]}"; do
            if [[ $arg == "--$name" ]]; then declare -g "flag_$name=1"; continue 2; fi
        done
        echo "unknown argument: $arg (see --help)" >&2
        exit 2
    done
}
