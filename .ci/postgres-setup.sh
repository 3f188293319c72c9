#!/usr/bin/env bash
# The PostgreSQL server binaries (initdb, pg_ctl) the store tests start a server from, in a
# temporary directory as a non-root user. Idempotent: does nothing when they are installed.
set -euo pipefail
if compgen -G "/usr/lib/postgresql/*/bin/initdb" > /dev/null || command -v initdb > /dev/null; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq postgresql > /dev/null
# The Debian package starts a cluster of its own; the tests do not use it.
if command -v pg_lsclusters > /dev/null; then
    pg_lsclusters --no-header | while read -r version name _; do
        pg_ctlcluster "$version" "$name" stop || true
    done
fi
