#!/usr/bin/env bash
# Runs etcd 3.4.23's e2e tests (selected by a regex) against engram.
#   run-etcd-e2e.sh <path to run-etcd-e2e> <path to engram> <regex>
# Fails (never skips) when the suite is missing: these tests are part of
# what "done" means.
set -euo pipefail
tool=$1 engram=$2 regex=$3
if [ ! -x "$tool" ]; then
  echo "etcd e2e suite not found at $tool (it lives in ../shared/tools/etcd-e2e beside the repo)" >&2
  exit 1
fi
bin=$(mktemp -d /tmp/engram-e2e-bin.XXXXXX)
logs=$(mktemp -d /tmp/engram-e2e-logs.XXXXXX)
trap 'rm -rf "$bin"' EXIT
ln -s "$engram" "$bin/etcd"
# The suite hard-codes etcd 3.4.23 strings (/metrics versions, /health body).
export ENGRAM_EMULATE_ETCD_VERSION=3.4.23
ln -s /usr/bin/etcdctl "$bin/etcdctl"
out=$("$tool" -test-timeout 60 -log-dir "$logs" -run "$regex" "$bin" 2>&1) || true
echo "$out"
last=$(echo "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed' | tail -1)
passed=$(echo "$last" | awk '{print $1}')
case "$last" in
  *" 0 failed"*)
    if [ "${passed:-0}" -gt 0 ]; then rm -rf "$logs"; exit 0; fi ;;
esac
echo "etcd e2e: not every selected test passed (or none ran); logs kept in $logs" >&2
exit 1
