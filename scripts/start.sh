#!/usr/bin/env bash
# Quick start: installs what is missing, builds, and starts a single-member
# Engram on its embedded defaults (client 127.0.0.1:2379, peer 127.0.0.1:2380,
# metrics 127.0.0.1:2381, data dir ./default.engram). Extra arguments go to engram (etcd's flags).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ENGRAM_TEST_DEPS=0 "$here/scripts/install-deps.sh"
"$here/scripts/build.sh" --target engram
cat >&2 <<'TXT'

Engram is starting (Ctrl-C stops it). In another shell:
  export ETCDCTL_API=3
  etcdctl --endpoints=127.0.0.1:2379 put greeting hello
  etcdctl --endpoints=127.0.0.1:2379 get greeting
  etcdctl --endpoints=127.0.0.1:2379 endpoint status -w table
  curl -s http://127.0.0.1:2381/metrics | grep ^etcd_server_has_leader
  curl -s http://127.0.0.1:2381/health      # status page: http://127.0.0.1:2381/

TXT
exec "$here/build/engram" "$@"
