#!/usr/bin/env bash
# One fresh etcd 3.7 member (ETCD37_BIN, built by run.sh) for the Kubernetes tests; arguments in launch.sh.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/launch.sh"
launch "${ETCD37_BIN:?ETCD37_BIN must name the etcd 3.7 binary}" --watch-progress-notify-interval --log-level error "$@"
