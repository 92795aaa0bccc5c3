#!/usr/bin/env bash
# concprobe: v3lock / v3election / Maintenance (Hash, HashKV, MoveLeader,
# Status) answers of each server, one JSON line per case, then a diff against
# the first server (etcd by default). See main.go for the cases and
# docs/design/concurrency.md, docs/design/maintenance.md for what they show.
#
#   tests/e2e/concprobe/run.sh [NAME=BINARY ...]   default: etcd=/usr/bin/etcd engram=build/engram
#   tests/e2e/concprobe/run.sh tool [concprobe flags]   just build and run the tool against one endpoint
#
# Builds main.go in GOPATH mode, offline, against Debian's golang-etcd-server-dev
# (as bench/readsnap/run.sh does; installs golang-go / golang-etcd-server-dev
# with apt-get if absent). Each server runs once, on fresh loopback ports with
# a fresh temp data dir (about 25 s each). Outputs go to the work dir printed
# first; the exit status is 1 when any server's answers differ from the first
# one's (code, message or detail), 0 otherwise, 2 when a server did not start.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
bin="${CONCPROBE_BIN:-/tmp/concprobe-bin/concprobe}"
. "$repo/bench/lib/go-tool.sh"
build_go_tool "$here" "$bin" concprobe/run.sh

if [ "${1:-}" = tool ]; then
    shift
    exec "$bin" "$@"
fi

[ "$#" -gt 0 ] || set -- "etcd=/usr/bin/etcd" "engram=$repo/build/engram"
work="$(mktemp -d /tmp/concprobe.XXXXXX)"
echo "concprobe/run.sh: work dir $work" >&2

PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; true; }
trap cleanup EXIT

names=()
for spec in "$@"; do
    name="${spec%%=*}" src="${spec#*=}"
    if [ "$name" = "$spec" ] || [ ! -x "$src" ]; then
        echo "concprobe/run.sh: want NAME=EXECUTABLE, got '$spec'" >&2
        exit 2
    fi
    cp "$src" "$work/$name.bin"
    mapfile -t ports < <("$bin" freeports 3)
    c="http://127.0.0.1:${ports[0]}" p="http://127.0.0.1:${ports[1]}" m="http://127.0.0.1:${ports[2]}"
    echo "[$(date +%T)] $name on $c" >&2
    "$work/$name.bin" --name s1 --data-dir "$work/data-$name" \
        --listen-client-urls "$c" --advertise-client-urls "$c" \
        --listen-peer-urls "$p" --initial-advertise-peer-urls "$p" --initial-cluster "s1=$p" \
        --listen-metrics-urls "$m" >"$work/$name.log" 2>&1 &
    PID=$!
    rc=0
    "$bin" --endpoint "127.0.0.1:${ports[0]}" >"$work/$name.jsonl" || rc=$?
    if ! kill -0 "$PID" 2>/dev/null || [ "$rc" -ne 0 ]; then
        echo "concprobe/run.sh: $name failed (probe exit $rc); server log:" >&2
        tail -20 "$work/$name.log" >&2
        exit 2
    fi
    kill "$PID"
    wait "$PID" 2>/dev/null || true
    PID=
    names+=("$name")
done

status=0
first="${names[0]}"
for name in "${names[@]:1}"; do
    if diff -u "$work/$first.jsonl" "$work/$name.jsonl" >"$work/$first-vs-$name.diff"; then
        echo "$name: same answers as $first" >&2
    else
        status=1
        echo "$name: differs from $first ($work/$first-vs-$name.diff):" >&2
        # One line per differing case: the case name and the two answers' codes.
        python3 - "$work/$first.jsonl" "$work/$name.jsonl" <<'EOF' >&2
import json, sys
def load(p):
    out = {}
    for line in open(p):
        try:
            r = json.loads(line)
        except ValueError:
            continue
        out[r["case"]] = r
    return out
a, b = load(sys.argv[1]), load(sys.argv[2])
for case in list(a) + [c for c in b if c not in a]:
    ra, rb = a.get(case), b.get(case)
    if ra != rb:
        fa = "missing" if ra is None else f'{ra["code"]} {ra["message"]!r}'
        fb = "missing" if rb is None else f'{rb["code"]} {rb["message"]!r}'
        print(f"  {case}: {fa}  vs  {fb}")
EOF
    fi
done
exit "$status"
