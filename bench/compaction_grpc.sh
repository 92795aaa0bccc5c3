#!/usr/bin/env bash
# Put latency over gRPC (real clientv3, ../shared/tools/loadgen) while a
# compaction of many revisions runs, for etcd and Engram in the same run.
# Per server: preload N revisions over 1000 keys; a steady put run; then the
# same put run with `etcdctl compaction --physical <rev>` fired 0.3 s in. The
# second run's p99 against the first is what issue 12 asks (at most 2x).
#
#   bench/compaction_grpc.sh [REVISIONS=1000000] [SECONDS=6]
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LG="${LG:-$here/../shared/tools/loadgen/run}"
N="${1:-1000000}"
SECS="${2:-6}"
OUT="${OUT:-/tmp/engram-compaction-grpc}"
ENGRAM="${ENGRAM:-$here/build/engram}"
ETCD="${ETCD:-/usr/bin/etcd}"
PORT="${PORT:-15379}"
mkdir -p "$OUT/logs"
RES="$OUT/results.jsonl"
: >"$RES"
ec() { ETCDCTL_API=3 etcdctl --endpoints "127.0.0.1:$PORT" "$@"; }

for s in etcd engram; do
  data="$OUT/data-$s" c="http://127.0.0.1:$PORT" p="http://127.0.0.1:$((PORT + 1))"
  rm -rf "$data"
  bin=$ETCD
  [ "$s" = engram ] && bin=$ENGRAM
  "$bin" --name s1 --data-dir "$data" --listen-client-urls "$c" --advertise-client-urls "$c" \
    --listen-peer-urls "$p" --initial-advertise-peer-urls "$p" --initial-cluster "s1=$p" \
    --listen-metrics-urls "http://127.0.0.1:$((PORT + 2))" >"$OUT/logs/$s.log" 2>&1 &
  PID=$!
  for _ in $(seq 200); do ec --command-timeout=1s endpoint health >/dev/null 2>&1 && break; sleep 0.05; done
  echo "[$(date +%T)] $s: preload $N revisions" >&2
  "$LG" put --endpoints "127.0.0.1:$PORT" --conns 10 --clients 100 --total "$N" --key-space 1000 \
    --tag "preload@$s" >>"$RES" 2>>"$OUT/logs/loadgen.err"
  rev=$(ec get x -w json | sed -n 's/.*"revision":\([0-9]*\).*/\1/p')
  "$LG" put --endpoints "127.0.0.1:$PORT" --conns 10 --clients 100 --duration "${SECS}s" --key-space 1000 --key-size 16 \
    --key-prefix steady --server-pid "$PID" --tag "steady@$s" >>"$RES" 2>>"$OUT/logs/loadgen.err"
  (sleep 0.3; t0=$(date +%s.%N); ec --command-timeout=60s compaction --physical "$rev" >/dev/null; t1=$(date +%s.%N);
   echo "{\"workload\":\"compaction\",\"tag\":\"compaction@$s\",\"ok\":true,\"revision\":$rev,\"seconds\":$(echo "$t1 - $t0" | bc)}" >>"$RES") &
  cpid=$!
  "$LG" put --endpoints "127.0.0.1:$PORT" --conns 10 --clients 100 --duration "${SECS}s" --key-space 1000 --key-size 16 \
    --key-prefix during --server-pid "$PID" --tag "during@$s" >>"$RES" 2>>"$OUT/logs/loadgen.err"
  wait "$cpid"
  kill "$PID"; wait "$PID" 2>/dev/null
done
"$LG" summarize --fields ops_per_sec,p50_ms,p99_ms <"$RES"
grep '"compaction"' "$RES"
