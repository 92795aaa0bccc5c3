#!/usr/bin/env bash
# Cost of being scraped: put throughput (100 clients / 10 conns) with real
# Prometheus scraping Engram's /metrics every second vs with no scraping,
# interleaved A/B within each repetition on fresh members.
#
#   bench/scrape_cost.sh [REPS]      -> table on stdout, raw lines in $OUT/results.jsonl
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LG="${LG:-$here/../shared/tools/loadgen/run}"
REPS="${1:-${REPS:-3}}"
OUT="${OUT:-/tmp/engram-scrape-bench}"
ENGRAM="${ENGRAM:-$here/build/engram}"
PORT="${PORT:-15379}" MPORT="${MPORT:-15381}" PPORT="${PPORT:-15390}"
mkdir -p "$OUT/logs"
RES="$OUT/results.jsonl"
: >"$RES"

start() {
    rm -rf "$OUT/data"
    local c="http://127.0.0.1:$PORT" p="http://127.0.0.1:$((PORT + 1))"
    "$ENGRAM" --name s1 --data-dir "$OUT/data" --listen-client-urls "$c" --advertise-client-urls "$c" \
        --listen-peer-urls "$p" --initial-advertise-peer-urls "$p" --initial-cluster "s1=$p" \
        --listen-metrics-urls "http://127.0.0.1:$MPORT" >"$OUT/logs/engram.log" 2>&1 &
    PID=$!
    for _ in $(seq 200); do
        curl -sf "http://127.0.0.1:$MPORT/health" >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "engram did not start" >&2
    return 1
}
stop() { kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; }
prom_start() {
    rm -rf "$OUT/tsdb"
    cat >"$OUT/prometheus.yml" <<YML
global: {scrape_interval: 1s}
scrape_configs:
  - job_name: etcd
    scrape_interval: 1s
    static_configs: [{targets: ["127.0.0.1:$MPORT"]}]
YML
    prometheus --config.file="$OUT/prometheus.yml" --storage.tsdb.path="$OUT/tsdb" \
        --web.listen-address="127.0.0.1:$PPORT" --log.level=warn >"$OUT/logs/prometheus.log" 2>&1 &
    PROM=$!
    sleep 3
}
prom_stop() { kill "$PROM" 2>/dev/null; wait "$PROM" 2>/dev/null; }

for r in $(seq "$REPS"); do
    for mode in noscrape scrape1s; do
        echo "[$(date +%T)] rep $r $mode" >&2
        start || exit 1
        [ $mode = scrape1s ] && prom_start
        "$LG" put --conns 10 --clients 100 --total "${TOTAL:-400000}" --endpoints "127.0.0.1:$PORT" --server-pid "$PID" \
            --tag "put_10c_100cl@$mode" >>"$RES" 2>>"$OUT/logs/loadgen.err"
        if [ $mode = scrape1s ]; then
            scrapes=$(curl -s "http://127.0.0.1:$MPORT/metrics" | awk '/^promhttp_metric_handler_requests_total\{code="200"\}/{print $2}')
            echo "{\"workload\":\"scrapes\",\"tag\":\"scrapes@$mode\",\"ok\":true,\"scrapes\":${scrapes:-0}}" >>"$RES"
            prom_stop
        fi
        stop
    done
done
"$LG" summarize --fields ops_per_sec,p50_ms,p99_ms,cpu.server_us_per_op <"$RES"
grep '"scrapes"' "$RES"
