#!/usr/bin/env bash
# Installs what Engram needs to build and test, from Debian's packages.
# Idempotent: installs only what is missing; quiet (one dpkg-query) when
# nothing is. ENGRAM_TEST_DEPS=0 (start.sh) leaves out what only tests need.
# The e2e tests fail, never skip, when a tool below is missing.
set -euo pipefail

pkgs=(
  cmake g++ make pkg-config ccache git python3
  openssl libssl-dev libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  prometheus-cpp-dev libboost-dev liblmdb-dev lmdb-utils libyaml-cpp-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  # real peers for the tests: etcd/etcdctl 3.4 to compare with (every e2e test)
  etcd-server etcd-client
  # promtool for the alert-rule tests, Prometheus for the live scrape test,
  # curl for the raw gRPC e2e tests (test_kv, test_alarm, test_watch)
  prometheus curl
)
# commands the tests run, checked after installing
cmds=(etcd etcdctl curl prometheus promtool)
if [ "${ENGRAM_TEST_DEPS:-1}" = 1 ]; then
  # the clientv3 sources the load generator and etcd's e2e suite build against
  pkgs+=(golang-go golang-etcd-server-dev)
  # headless browser for the status page test (tests/e2e/test_status_page.py)
  pkgs+=(chromium)
  # real Python clients: python3-etcd3 (test_lease.py), python3-etcd3gw
  # (test_gateway.py), gRPC for the raw-gRPC helpers
  pkgs+=(python3-etcd3 python3-etcd3gw python3-grpcio)
  # strace: the induced-event test slows real etcd's fdatasync with it
  # (tests/e2e/test_signals.py)
  pkgs+=(strace)
  cmds+=(strace)
  cmds+=(chromium)
fi

# One dpkg-query for all (unknown packages print nothing and are "missing").
installed=$(dpkg-query -W -f='${Package} ${Status}\n' "${pkgs[@]}" 2>/dev/null |
            awk '/ install ok installed$/ { print $1 }' || true)
missing=()
for p in "${pkgs[@]}"; do
  grep -qxF -- "$p" <<<"$installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}" >&2
  if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

absent=()
for c in "${cmds[@]}"; do
  command -v "$c" >/dev/null || absent+=("$c")
done
if [ "${#absent[@]}" -gt 0 ]; then
  echo "install-deps: still not on PATH after installing: ${absent[*]}" >&2
  exit 1
fi
