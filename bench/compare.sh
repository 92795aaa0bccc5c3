#!/usr/bin/env bash
# Side-by-side benchmark: real etcd 3.4 and Engram, interleaved in the same
# run (the host is shared and drifts, so only ratios within one run mean
# anything). Uses ../shared/tools/loadgen (Go, real clientv3).
#
#   bench/compare.sh [REPS]          results: $OUT/results.jsonl and a table on stdout
#
# Workloads (the issue's): put 1 client / 1 conn; put 100 clients / 10 conns;
# after a 100k-key preload: range linearizable and serializable, 1 client and
# 100 clients / 10 conns. Memory: VmHWM and VmRSS after the range runs.
# ONLY_PUTS=1 runs the two put workloads only.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LG="${LG:-$here/../shared/tools/loadgen/run}"
REPS="${1:-${REPS:-3}}"
OUT="${OUT:-/tmp/engram-bench}"
ENGRAM="${ENGRAM:-$here/build/engram}"
ETCD="${ETCD:-/usr/bin/etcd}"
PORT="${PORT:-14379}"
mkdir -p "$OUT/logs"
RES="$OUT/results.jsonl"
: >"$RES"

start() { # $1 = etcd|engram ; sets PID
    local name=$1 data="$OUT/data-$1" c="http://127.0.0.1:$PORT" p="http://127.0.0.1:$((PORT + 1))"
    rm -rf "$data"
    local bin=$ETCD
    [ "$name" = engram ] && bin=$ENGRAM
    "$bin" --name s1 --data-dir "$data" --listen-client-urls "$c" --advertise-client-urls "$c" \
        --listen-peer-urls "$p" --initial-advertise-peer-urls "$p" --initial-cluster "s1=$p" \
        >"$OUT/logs/$name.log" 2>&1 &
    PID=$!
    for _ in $(seq 200); do
        ETCDCTL_API=3 etcdctl --endpoints "127.0.0.1:$PORT" --command-timeout=1s endpoint health >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "server $name did not start" >&2
    tail -20 "$OUT/logs/$name.log" >&2
    return 1
}
stop() { kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; }
run() { # tag args...
    local tag=$1
    shift
    "$LG" "$@" --endpoints "127.0.0.1:$PORT" --server-pid "$PID" --tag "$tag" >>"$RES" 2>>"$OUT/logs/loadgen.err"
}
mem() { # tag
    awk -v tag="$1" '/VmHWM/{h=$2} /VmRSS/{r=$2} END{printf "{\"workload\":\"memory\",\"tag\":\"%s\",\"ok\":true,\"vmhwm_mb\":%.1f,\"vmrss_mb\":%.1f}\n", tag, h/1024, r/1024}' "/proc/$PID/status" >>"$RES"
}

for r in $(seq "$REPS"); do
    for s in etcd engram; do
        echo "[$(date +%T)] rep $r $s" >&2
        start $s || exit 1
        run "put_1c_1cl@$s" put --conns 1 --clients 1 --total 10000
        stop
        start $s || exit 1
        run "put_10c_100cl@$s" put --conns 10 --clients 100 --total 100000
        stop
        [ "${ONLY_PUTS:-0}" = 1 ] && continue
        start $s || exit 1
        run "preload_100k_seq@$s" put --conns 10 --clients 100 --total 100000 --key-space 100000 --key-order seq
        run "range_l_1c_1cl@$s" range --consistency l --conns 1 --clients 1 --total 20000 --key-space 100000
        run "range_s_1c_1cl@$s" range --consistency s --conns 1 --clients 1 --total 20000 --key-space 100000
        run "range_l_10c_100cl@$s" range --consistency l --conns 10 --clients 100 --total 100000 --key-space 100000
        run "range_s_10c_100cl@$s" range --consistency s --conns 10 --clients 100 --total 100000 --key-space 100000
        mem "memory_100k@$s"
        stop
    done
done
"$LG" summarize --fields ops_per_sec,p50_ms,p99_ms,cpu.server_us_per_op <"$RES"
"$LG" summarize --tags memory --fields vmhwm_mb,vmrss_mb <"$RES" 2>/dev/null || grep memory "$RES"
