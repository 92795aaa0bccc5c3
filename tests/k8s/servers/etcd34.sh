#!/usr/bin/env bash
# Launcher for k8s.io/apiserver's storage tests: one fresh etcd 3.4 member (Debian's /usr/bin/etcd).
# Args: <client-url> <peer-url> <metrics-url> <data-dir>.
set -euo pipefail
args=(--name default --data-dir "$4" --log-level error --logger zap
      --listen-client-urls "$1" --advertise-client-urls "$1"
      --listen-peer-urls "$2" --initial-advertise-peer-urls "$2" --initial-cluster "default=$2"
      --listen-metrics-urls "$3")
[ "${K8S_WATCH_PROGRESS_NOTIFY_INTERVAL:-0}" != 0 ] && args+=(--experimental-watch-progress-notify-interval "${K8S_WATCH_PROGRESS_NOTIFY_INTERVAL}s")
[ "${K8S_QUOTA_BACKEND_BYTES:-0}" != 0 ] && args+=(--quota-backend-bytes "$K8S_QUOTA_BACKEND_BYTES")
exec "${ETCD34_BIN:-/usr/bin/etcd}" "${args[@]}"
