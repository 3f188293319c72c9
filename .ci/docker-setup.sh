#!/usr/bin/env bash
# Make a Docker engine answer on this machine, idempotently.
#
# - installs docker.io when dockerd is missing (Debian, no recommends);
# - removes stale pid files that a killed daemon leaves behind (/run is on disk here, and a
#   stale pid file stops the next start);
# - starts dockerd detached without a bridge (the VM has no iptables/bridge support);
# - waits a bounded time for `docker version` to answer.
#
# Exit 0 when an engine answers, 1 otherwise (with the tail of the daemon's log).
set -euo pipefail

LOG=${DOCKERD_LOG:-/var/log/nimflow-dockerd.log}
WAIT_SECONDS=${DOCKERD_WAIT_SECONDS:-60}

answers() {
    timeout 10 docker version >/dev/null 2>&1
}

if answers; then
    echo "docker-setup: an engine already answers"
    exit 0
fi

SUDO=""
if [ "$(id -u)" != "0" ]; then
    SUDO="sudo"
fi

if ! command -v dockerd >/dev/null 2>&1; then
    echo "docker-setup: installing docker.io"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends docker.io >/dev/null
fi

# A pid file whose process is gone blocks the daemon ("pid file found" / containerd timeout).
for pidfile in /var/run/docker.pid /var/run/docker/containerd/containerd.pid; do
    if [ -f "$pidfile" ]; then
        pid=$(cat "$pidfile" 2>/dev/null || true)
        if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
            echo "docker-setup: removing stale $pidfile"
            $SUDO rm -f "$pidfile"
        fi
    fi
done

# Only start a daemon when none is running (one may be alive but still starting up).
if [ -f /var/run/docker.pid ] && kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
    echo "docker-setup: dockerd (pid $(cat /var/run/docker.pid)) is running; waiting for it"
else
    echo "docker-setup: starting dockerd (log: $LOG)"
    $SUDO setsid nohup dockerd --bridge=none --iptables=false --ip-masq=false >>"$LOG" 2>&1 </dev/null &
fi

deadline=$((SECONDS + WAIT_SECONDS))
while [ "$SECONDS" -lt "$deadline" ]; do
    if answers; then
        echo "docker-setup: engine answers ($(docker version --format '{{.Server.Version}}' 2>/dev/null))"
        exit 0
    fi
    sleep 0.5
done

echo "docker-setup: no engine answered within ${WAIT_SECONDS}s; last lines of $LOG:" >&2
tail -n 30 "$LOG" >&2 || true
exit 1
