#!/usr/bin/env bash
# Build the fairsynth image (Dockerfile) — from the package indexes when the machine reaches
# them, or offline, as in an air-gapped network or a CI runner without Docker Hub.
#
#   deploy/build-image.sh [--online | --offline] [--tag fairsynth:latest]
#
# --online   docker build with the Dockerfile's defaults (python:3.11-slim, index installs).
# --offline  1. a Debian base image made with debootstrap from the apt mirror this machine
#               already uses (needs root and the debootstrap package; kept as BASE_IMAGE, made
#               once), 2. a wheelhouse in deploy/wheels made with `pip download` on this machine
#               (any index or local mirror its pip is configured with), 3. docker build with
#               --build-arg BASE=BASE_IMAGE; the build then installs with --no-index.
# Default: --online if `docker pull python:3.11-slim` succeeds, else --offline.
#
# Environment: PYTHON (the pip used for the wheelhouse; default ./.venv/bin/python, else python3),
# DEBIAN_MIRROR (default: the first deb.debian.org-style URI in apt's sources), BASE_IMAGE
# (default fairsynth-base:bookworm), SUITE (default bookworm).
set -euo pipefail
cd "$(dirname "$0")/.."

mode=auto
tag=fairsynth:latest
while [ $# -gt 0 ]; do
    case "$1" in
        --online) mode=online ;;
        --offline) mode=offline ;;
        --tag) tag="$2"; shift ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) echo "build-image.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done

docker info >/dev/null 2>&1 || {
    echo "build-image.sh: no Docker engine answers (docker info failed); start one first" \
         "(docs/containers.md)." >&2
    exit 1
}
if [ "$mode" = auto ]; then
    if docker pull -q python:3.11-slim >/dev/null 2>&1; then
        mode=online; echo "build-image.sh: online build (python:3.11-slim pulled)"
    else
        mode=offline; echo "build-image.sh: offline build (python:3.11-slim cannot be pulled)"
    fi
fi

if [ "$mode" = online ]; then
    exec docker build -t "$tag" .
fi

# The first Debian archive apt uses (deb822 "URIs:" lines, or one-line "deb" entries); comments
# and the security archive are skipped.
apt_mirror() {
    {
        grep -hE '^[[:space:]]*URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
            | sed -E 's/^[[:space:]]*URIs:[[:space:]]*//' | tr ' ' '\n'
        grep -hE '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list \
            /etc/apt/sources.list.d/*.list 2>/dev/null \
            | awk '{ for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; break } }'
    } | grep -E '/debian/?$' | head -n1 || true
}

base="${BASE_IMAGE:-fairsynth-base:bookworm}"
suite="${SUITE:-bookworm}"
if ! docker image inspect "$base" >/dev/null 2>&1; then
    command -v debootstrap >/dev/null || {
        echo "build-image.sh: the offline base needs debootstrap (apt-get install debootstrap)." >&2
        exit 1
    }
    mirror="${DEBIAN_MIRROR:-$(apt_mirror)}"
    [ -n "$mirror" ] || {
        echo "build-image.sh: set DEBIAN_MIRROR (no Debian mirror in apt's sources)." >&2
        exit 1
    }
    root="$(mktemp -d)"
    trap 'rm -rf "$root"' EXIT
    chmod 0755 "$root"  # mktemp makes it 0700: the image's / would shut out non-root users
    echo "build-image.sh: debootstrap $suite from $mirror"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        "$suite" "$root" "$mirror" >/dev/null
    tar -C "$root" -c . | docker import - "$base" >/dev/null
fi

python="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
# As a non-root user, as the services run: a base whose files only root can reach fails here.
image_py="$(docker run --rm --user 49999:49999 "$base" \
    python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')" || {
    echo "build-image.sh: $base does not run python3 as a non-root user; remove it" \
         "(docker rmi $base) and run this script again to rebuild it." >&2
    exit 1
}
host_py="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [ "$image_py" != "$host_py" ]; then
    echo "build-image.sh: the base image has Python $image_py but $python is $host_py; wheels" \
         "must match: set PYTHON to a Python $image_py." >&2
    exit 1
fi
echo "build-image.sh: wheelhouse deploy/wheels (pip download with $python)"
"$python" -m pip download --quiet --disable-pip-version-check -d deploy/wheels \
    "torch==2.13.0" setuptools wheel .
docker build --build-arg BASE="$base" -t "$tag" .
