#!/usr/bin/env bash
# One fresh etcd 3.4 member (Debian's /usr/bin/etcd, or ETCD34_BIN) for the Kubernetes tests;
# arguments in launch.sh. 3.4 names the progress flag --experimental-.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/launch.sh"
launch "${ETCD34_BIN:-/usr/bin/etcd}" --experimental-watch-progress-notify-interval --log-level error --logger zap "$@"
