#!/usr/bin/env bash
# Installs what Engram needs to build and test, from Debian's packages.
# Idempotent: installs only what is missing; quiet when nothing is.
set -euo pipefail

pkgs=(
  cmake g++ make pkg-config ccache git python3
  openssl libssl-dev libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  prometheus-cpp-dev libboost-dev liblmdb-dev lmdb-utils libyaml-cpp-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  # real peers for the tests: etcd/etcdctl 3.4 to compare with, and the clientv3
  # sources the load generator and etcd's e2e suite build against
  etcd-server etcd-client
  # promtool for the alert-rule tests, Prometheus for the live scrape test
  prometheus curl
)
if [ "${ENGRAM_TEST_DEPS:-1}" = 1 ]; then
  pkgs+=(golang-go golang-etcd-server-dev)
  # headless browser for the status page test (tests/e2e/test_status_page.py)
  pkgs+=(chromium)
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}" >&2
  if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
