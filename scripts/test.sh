#!/usr/bin/env bash
# Installs what is missing, builds everything, and runs every test (unit
# tests, end-to-end tests against real etcdctl and etcd, the crash test).
# Ends with ctest's summary line.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$here/scripts/install-deps.sh"
"$here/scripts/build.sh"
cd "${BUILD_DIR:-$here/build}"
ctest --output-on-failure -j"${TEST_JOBS:-2}" "$@"
