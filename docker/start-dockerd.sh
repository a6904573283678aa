#!/usr/bin/env bash
# Start a Docker daemon suitable for pytest-mxfp4 on a machine without one.
#
# Idempotent: installs docker.io only if `dockerd` is missing, starts dockerd
# only if `docker info` does not already answer, then waits until it does.
#
# The daemon runs without a bridge, iptables rules or masquerading: every
# pytest-mxfp4 container uses host networking and is reached on 127.0.0.1.
#
#   docker/start-dockerd.sh            # log: /var/log/dockerd-pytest-mxfp4.log
#   DOCKERD_LOG=/tmp/d.log docker/start-dockerd.sh
set -euo pipefail

LOG="${DOCKERD_LOG:-/var/log/dockerd-pytest-mxfp4.log}"
WAIT_S="${DOCKERD_WAIT_S:-60}"

if docker info >/dev/null 2>&1; then
    echo "dockerd: already running ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'))"
    exit 0
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

if ! command -v dockerd >/dev/null 2>&1; then
    echo "dockerd: not installed; installing docker.io with apt-get"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq docker.io >/dev/null
fi

if ! pgrep -x dockerd >/dev/null 2>&1; then
    echo "dockerd: starting (log: $LOG)"
    # setsid + nohup: the daemon outlives this script and its terminal.
    $SUDO setsid nohup dockerd --bridge=none --iptables=false --ip-masq=false \
        >>"$LOG" 2>&1 </dev/null &
fi

t0=$(date +%s)
until docker info >/dev/null 2>&1; do
    if [ $(( $(date +%s) - t0 )) -ge "$WAIT_S" ]; then
        echo "dockerd: not answering after ${WAIT_S}s; last log lines:" >&2
        tail -n 20 "$LOG" >&2 || true
        exit 1
    fi
    sleep 0.5
done
echo "dockerd: ready after $(( $(date +%s) - t0 ))s ($(docker version --format '{{.Server.Version}}'))"
