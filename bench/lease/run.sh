#!/usr/bin/env bash
# Lease benchmarks, real etcd 3.4 and Engram side by side in the same run.
# Builds bench/lease (Go, GOPATH mode, offline, against Debian's
# golang-etcd-server-dev clientv3, like ../../../shared/tools/loadgen/run) into
# /tmp and runs, for every repetition and every benchmark, each server in turn
# on a fresh data dir and fresh loopback ports, with the same parameters:
#
#   (1) lease      loadgen's lease workload: Grant + Put(WithLease) + one
#                  keepalive on a long-lived stream, 10 conns / 100 clients, 10k ops
#   (2) keepalive  10k leases granted, then kept alive over 100 LeaseKeepAlive
#                  streams: paced (1000/s, clientv3's TTL/3 schedule for TTL 30 s)
#                  for 10 s, then closed loop for 8 s; server CPU and VmRSS
#   (3) expiry     1000 leases (TTL 5 s, one key each) granted together and left
#                  to expire while 10 clients put at 1000/s in all: put p99 steady
#                  vs during the expiry burst; time until every key is gone
#   (4) revoke     one lease with 10k keys revoked while the same puts run: revoke
#                  latency, put p99 steady vs around the revoke
#
#   bench/lease/run.sh [NAME=BINARY ...]   default: etcd=/usr/bin/etcd engram=/tmp/engram-snap/engram
#
# Environment: REPS (1), BENCHES ("lease keepalive expiry revoke"), OUT
# (results file, appended to; default bench/lease/results/<UTC date>.jsonl),
# QUIET_WAIT (seconds to wait before each run for the host to be below 0.5
# busy cores; 10), LEASEBENCH_BIN (/tmp/leasebench-bin/leasebench), LG
# (loadgen's run script). A markdown table (median per server, Engram/etcd
# ratios) is printed at the end. Server logs stay in the work dir (printed).
# About 2 minutes per repetition on this machine.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
bin="${LEASEBENCH_BIN:-/tmp/leasebench-bin/leasebench}"
LG="${LG:-$repo/../shared/tools/loadgen/run}"
[ -x "$LG" ] || LG=/work/shared/tools/loadgen/run
. "$repo/bench/lib/go-tool.sh"
build_go_tool "$here" "$bin" lease/run.sh
"$LG" --help >/dev/null 2>&1 || true # builds loadgen if needed

REPS="${REPS:-1}"
BENCHES="${BENCHES:-lease keepalive expiry revoke}"
QUIET_WAIT="${QUIET_WAIT:-10}"
OUT="${OUT:-$here/results/$(date -u +%F).jsonl}"
[ "$#" -gt 0 ] || set -- "etcd=/usr/bin/etcd" "engram=/tmp/engram-snap/engram"
mkdir -p "$(dirname "$OUT")"
work="$(mktemp -d /tmp/leasebench.XXXXXX)"
mkdir -p "$work/bin" "$work/logs"
echo "lease/run.sh: work dir $work, results appended to $OUT" >&2

names=() bins=() shas=()
for spec in "$@"; do
    name="${spec%%=*}" src="${spec#*=}"
    if [ "$name" = "$spec" ] || [ ! -x "$src" ]; then
        echo "lease/run.sh: want NAME=EXECUTABLE, got '$spec'" >&2
        exit 2
    fi
    cp "$src" "$work/bin/$name"
    names+=("$name")
    bins+=("$src")
    shas+=("$(sha256sum "$work/bin/$name" | cut -d' ' -f1)")
    echo "lease/run.sh: $name = $src sha256 ${shas[-1]:0:12} ($("$work/bin/$name" --version 2>&1 | paste -sd' ' - | cut -c1-100))" >&2
done

busy_cores() { # host busy cores over 1 s
    local a b
    a=$(head -1 /proc/stat)
    sleep 1
    b=$(head -1 /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN{split(a,x," "); split(b,y," "); s=0; for(i=2;i<=4;i++) s+=y[i]-x[i]; s+=y[7]-x[7]+y[8]-x[8]; printf "%.2f", s/100}'
}
wait_quiet() {
    local t=0 c
    while :; do
        c=$(busy_cores)
        t=$((t + 1))
        if awk -v c="$c" 'BEGIN{exit !(c < 0.5)}' || [ "$t" -ge "$QUIET_WAIT" ]; then
            echo "  host busy ${c} cores (waited ${t} s)" >&2
            return
        fi
    done
}

PID=
stop_server() {
    [ -n "$PID" ] || return 0
    local t0=$SECONDS
    kill "$PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$PID" 2>/dev/null; then
        echo "  WARNING: $1 did not stop within 10 s of SIGTERM; SIGKILL" >&2
        kill -9 "$PID" 2>/dev/null || true
    fi
    wait "$PID" 2>/dev/null || true
    [ $((SECONDS - t0)) -ge 3 ] && echo "  note: $1 took $((SECONDS - t0)) s to stop" >&2
    PID=
}
trap 'stop_server cleanup' EXIT

: >"$work/runs.jsonl"
for r in $(seq "$REPS"); do
    for b in $BENCHES; do
        for i in "${!names[@]}"; do
            name="${names[$i]}"
            mapfile -t ports < <("$bin" freeports 3)
            c="http://127.0.0.1:${ports[0]}" p="http://127.0.0.1:${ports[1]}" m="http://127.0.0.1:${ports[2]}"
            ep="127.0.0.1:${ports[0]}"
            data="$work/data-$name-$b-$r"
            log="$work/logs/$name-$b-$r.log"
            echo "[$(date +%T)] rep $r $b $name on $c" >&2
            wait_quiet
            "$work/bin/$name" --name s1 --data-dir "$data" \
                --listen-client-urls "$c" --advertise-client-urls "$c" \
                --listen-peer-urls "$p" --initial-advertise-peer-urls "$p" --initial-cluster "s1=$p" \
                --listen-metrics-urls "$m" >"$log" 2>&1 &
            PID=$!
            if ! "$bin" ready --endpoint "$ep"; then
                echo "lease/run.sh: $name did not start; log:" >&2
                tail -20 "$log" >&2
                exit 1
            fi
            common=(--endpoint "$ep" --server "$name" --server-pid "$PID" --rep "$r" --binary "${bins[$i]}" --binary-sha256 "${shas[$i]}")
            rc=0
            case "$b" in
            lease)
                "$LG" lease --endpoints "$ep" --conns 10 --clients 100 --total 10000 --ttl 60 \
                    --server-pid "$PID" --tag "lease_10k_10c_100cl@$name" >>"$work/runs.jsonl" || rc=$?
                ;;
            keepalive) "$bin" keepalive "${common[@]}" --leases 10000 --ttl 30 --streams 100 --conns 10 >>"$work/runs.jsonl" || rc=$? ;;
            expiry) "$bin" expiry "${common[@]}" --leases 1000 --ttl 5 --put-clients 10 --put-rate 1000 >>"$work/runs.jsonl" || rc=$? ;;
            revoke) "$bin" revoke "${common[@]}" --keys 10000 --put-clients 10 --put-rate 1000 >>"$work/runs.jsonl" || rc=$? ;;
            *) echo "unknown benchmark $b" >&2; exit 2 ;;
            esac
            tail -1 "$work/runs.jsonl" | cut -c1-400 >&2
            if ! kill -0 "$PID" 2>/dev/null; then
                echo "lease/run.sh: $name DIED during $b (tool exit $rc); log tail:" >&2
                tail -20 "$log" >&2
                PID=
            else
                [ "$rc" -ne 0 ] && echo "  note: $b against $name exited $rc" >&2
                stop_server "$name"
            fi
            rm -rf "$data"
        done
    done
done
cat "$work/runs.jsonl" >>"$OUT"
rm -rf "$work/bin"
echo "lease/run.sh: $(wc -l <"$work/runs.jsonl") lines appended to $OUT; logs in $work/logs" >&2
"$bin" summarize <"$work/runs.jsonl"
