#!/usr/bin/env bash
# readsnap: does a read's header revision match the revision its data was read
# at (issue 15)? Builds bench/readsnap (Go, GOPATH mode, offline, against
# Debian's golang-etcd-server-dev clientv3, the same way as
# ../shared/tools/loadgen/run) and runs it against each server in turn.
#
#   bench/readsnap/run.sh [NAME=BINARY ...]   default: etcd=/usr/bin/etcd engram=build/engram
#   bench/readsnap/run.sh tool [readsnap flags]   just build and run the tool (one endpoint)
#
# Environment: REPS (3), DURATION (8s), OUT (results file, appended to;
# default bench/results/readsnap-<UTC date>.jsonl), READSNAP_BIN
# (/tmp/readsnap-bin/readsnap).
#
# Each binary is copied first (a build directory may change underneath). For
# every repetition the servers run one after the other, one at a time, each on
# fresh free loopback ports with a fresh temp data dir and the same etcd flags
# (--name, --data-dir, --listen-client-urls, --advertise-client-urls,
# --listen-peer-urls, --initial-advertise-peer-urls, --initial-cluster,
# --listen-metrics-urls). One JSON line per run is appended to OUT; MISMATCH
# lines go to stderr; a markdown table of medians is printed at the end.
# Mismatches never fail the script (it is a measurement); a server that does
# not start does.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
bin="${READSNAP_BIN:-/tmp/readsnap-bin/readsnap}"
. "$repo/bench/lib/go-tool.sh"
build_go_tool "$here" "$bin" readsnap/run.sh

if [ "${1:-}" = tool ]; then
    shift
    exec "$bin" "$@"
fi

REPS="${REPS:-3}"
DURATION="${DURATION:-8s}"
OUT="${OUT:-$repo/bench/results/readsnap-$(date -u +%F).jsonl}"
[ "$#" -gt 0 ] || set -- "etcd=/usr/bin/etcd" "engram=$repo/build/engram"
mkdir -p "$(dirname "$OUT")"
work="$(mktemp -d /tmp/readsnap.XXXXXX)"
mkdir -p "$work/bin" "$work/logs"
echo "readsnap/run.sh: work dir $work, results appended to $OUT" >&2

names=() bins=() shas=() vers=()
for spec in "$@"; do
    name="${spec%%=*}" src="${spec#*=}"
    if [ "$name" = "$spec" ] || [ ! -x "$src" ]; then
        echo "readsnap/run.sh: want NAME=EXECUTABLE, got '$spec'" >&2
        exit 2
    fi
    cp "$src" "$work/bin/$name"
    names+=("$name")
    bins+=("$src")
    shas+=("$(sha256sum "$work/bin/$name" | cut -d' ' -f1)")
    vers+=("$("$work/bin/$name" --version 2>&1 | paste -sd';' - || true)")
done

PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; true; }
trap cleanup EXIT

: >"$work/runs.jsonl"
for r in $(seq "$REPS"); do
    for i in "${!names[@]}"; do
        name="${names[$i]}"
        mapfile -t ports < <("$bin" freeports 3)
        c="http://127.0.0.1:${ports[0]}" p="http://127.0.0.1:${ports[1]}" m="http://127.0.0.1:${ports[2]}"
        data="$work/data-$name-$r"
        log="$work/logs/$name-$r.log"
        echo "[$(date +%T)] rep $r $name on $c" >&2
        "$work/bin/$name" --name s1 --data-dir "$data" \
            --listen-client-urls "$c" --advertise-client-urls "$c" \
            --listen-peer-urls "$p" --initial-advertise-peer-urls "$p" --initial-cluster "s1=$p" \
            --listen-metrics-urls "$m" >"$log" 2>&1 &
        PID=$!
        rc=0
        "$bin" --endpoint "127.0.0.1:${ports[0]}" --server "$name" --rep "$r" --duration "$DURATION" \
            --binary "${bins[$i]}" --binary-sha256 "${shas[$i]}" --server-version "${vers[$i]}" \
            >>"$work/runs.jsonl" || rc=$?
        if ! kill -0 "$PID" 2>/dev/null || [ "$rc" -ne 0 ]; then
            echo "readsnap/run.sh: $name failed (tool exit $rc); server log:" >&2
            tail -20 "$log" >&2
            exit 1
        fi
        kill "$PID"
        wait "$PID" 2>/dev/null || true
        PID=
        rm -rf "$data"
    done
done
cat "$work/runs.jsonl" >>"$OUT"
"$bin" summarize <"$work/runs.jsonl"
