# Sourced by the launchers in this folder (engram.sh, etcd37.sh, etcd34.sh): k8s.io/apiserver's
# storage tests (tests/k8s/external.go.in) and scenario.py start one fresh single member with
#   <launcher> <client-url> <peer-url> <metrics-url> <data-dir>
# and, in the environment, K8S_WATCH_PROGRESS_NOTIFY_INTERVAL (seconds) and K8S_QUOTA_BACKEND_BYTES
# (0 or unset: the server's default).
# launch BINARY PROGRESS-FLAG [EXTRA-FLAG...] "$@": execs BINARY with etcd's flags for that member.
launch() {
  local bin="$1" progress_flag="$2"; shift 2
  local extra=()
  while [ $# -gt 4 ]; do extra+=("$1"); shift; done
  local args=(--name default --data-dir "$4" "${extra[@]}"
              --listen-client-urls "$1" --advertise-client-urls "$1"
              --listen-peer-urls "$2" --initial-advertise-peer-urls "$2" --initial-cluster "default=$2"
              --listen-metrics-urls "$3")
  [ "${K8S_WATCH_PROGRESS_NOTIFY_INTERVAL:-0}" != 0 ] && args+=("$progress_flag" "${K8S_WATCH_PROGRESS_NOTIFY_INTERVAL}s")
  [ "${K8S_QUOTA_BACKEND_BYTES:-0}" != 0 ] && args+=(--quota-backend-bytes "$K8S_QUOTA_BACKEND_BYTES")
  exec "$bin" "${args[@]}"
}
