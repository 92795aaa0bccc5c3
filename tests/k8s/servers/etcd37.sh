#!/usr/bin/env bash
# Launcher for k8s.io/apiserver's storage tests: one fresh etcd 3.7 member (built by run.sh).
# Args: <client-url> <peer-url> <metrics-url> <data-dir>; ETCD37_BIN names the binary.
set -euo pipefail
args=(--name default --data-dir "$4" --log-level error
      --listen-client-urls "$1" --advertise-client-urls "$1"
      --listen-peer-urls "$2" --initial-advertise-peer-urls "$2" --initial-cluster "default=$2"
      --listen-metrics-urls "$3")
[ "${K8S_WATCH_PROGRESS_NOTIFY_INTERVAL:-0}" != 0 ] && args+=(--watch-progress-notify-interval "${K8S_WATCH_PROGRESS_NOTIFY_INTERVAL}s")
[ "${K8S_QUOTA_BACKEND_BYTES:-0}" != 0 ] && args+=(--quota-backend-bytes "$K8S_QUOTA_BACKEND_BYTES")
exec "${ETCD37_BIN:?ETCD37_BIN must name the etcd 3.7 binary}" "${args[@]}"
