#!/usr/bin/env bash
# Kubernetes on Engram (issue 14): builds what is missing and runs, side by side with etcd 3.7,
#   storage   k8s.io/apiserver's own storage suites (pkg/storage/etcd3 and pkg/storage/cacher)
#   scenario  a real kube-apiserver v1.37 driven by kubectl (tests/k8s/scenario.py)
#   bench     a client-go load mix through kube-apiserver (tests/k8s/bin/loaddriver)
#
# Usage: tests/k8s/run.sh [all|storage|scenario|bench|build]...   (default: all)
# Environment:
#   ENGRAM_BIN          the engram binary (default: build/engram)
#   ENGRAM_K8S_CACHE    Go modules, build cache, binaries (default: ~/.cache/engram-k8s)
#   K8S_OUT             results (default: build/k8s)
#   K8S_STORAGE_BACKENDS backends for the storage suites, the reference first
#                       (default: "etcd37 etcd34 engram"; etcd34 is Debian's etcd 3.4.23)
#   K8S_STORAGE_RUN     a -test.run pattern to run part of the storage suites
#   K8S_BENCH_ROUNDS    benchmark rounds; each runs every phase on both backends (default 5)
# Needs Go >= 1.26 and the Go module proxy; fails with a message naming what is missing.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CACHE="${ENGRAM_K8S_CACHE:-$HOME/.cache/engram-k8s}"
ENGRAM_BIN="$(realpath "${ENGRAM_BIN:-$ROOT/build/engram}")"
OUT="${K8S_OUT:-$ROOT/build/k8s}"
K8S_VERSION=v1.37.2
APISERVER_VERSION=v0.37.2
ETCD37_VERSION=v3.7.4
KUBE_BIN="$CACHE/k8s-$K8S_VERSION/bin"
ETCD37_BIN="$CACHE/etcd-$ETCD37_VERSION/etcd"
APISERVER_COPY="$CACHE/apiserver-$APISERVER_VERSION-engram"
TESTBIN="$CACHE/testbin-$APISERVER_VERSION"
export ENGRAM_BIN ETCD37_BIN

die() { echo "tests/k8s/run.sh: $*" >&2; exit 2; }
log() { echo "[k8s $(date +%H:%M:%S)] $*"; }

# ---- Go and the module proxy ----------------------------------------------------------
GO=""
for g in "${K8S_GO:-}" /usr/local/go/bin/go "$(command -v go || true)"; do
  [ -n "$g" ] && [ -x "$g" ] || continue
  v="$("$g" env GOVERSION 2>/dev/null | sed 's/^go//')"
  major="${v%%.*}"; rest="${v#*.}"; minor="${rest%%.*}"
  if [ "${major:-0}" -gt 1 ] || { [ "${major:-0}" -eq 1 ] && [ "${minor:-0}" -ge 26 ]; }; then GO="$g"; break; fi
done
[ -n "$GO" ] || die "needs Go >= 1.26 (Kubernetes v1.37 and etcd 3.7 require it): install it at /usr/local/go (https://go.dev/dl/) or put it first in PATH, or set K8S_GO"
export GOMODCACHE="$CACHE/gomod" GOCACHE="$CACHE/gocache" GOFLAGS=-modcacherw GOTOOLCHAIN=local
export GOPROXY="${GOPROXY:-$("$GO" env GOPROXY)}"
mkdir -p "$CACHE" "$OUT"
[ -x "$ENGRAM_BIN" ] || die "no engram binary at $ENGRAM_BIN: build it first (scripts/build.sh) or set ENGRAM_BIN"
command -v etcdctl >/dev/null || die "needs etcdctl (apt-get install etcd-client)"
command -v openssl >/dev/null || die "needs openssl (apt-get install openssl)"

# ---- builds (each skipped when its output is current) -------------------------------------
build_failed() {
  die "building $1 failed (output above). If a module could not be downloaded, check access to the Go module proxy ($GOPROXY) or set GOPROXY; the cache is $CACHE"
}

# current OUTPUT INPUT... : true when OUTPUT exists and was built from these exact inputs (a hash of
# their contents in OUTPUT.inputs; file times are useless in a fresh clone).
inputs_hash() { cat "$@" | sha256sum | cut -d' ' -f1; }
current() {
  local o="$1"; shift
  [ -e "$o" ] && [ -f "$o.inputs" ] && [ "$(cat "$o.inputs")" = "$(inputs_hash "$@")" ]
}
stamp() { local o="$1"; shift; inputs_hash "$@" > "$o.inputs"; }

build_etcd37() {
  local in=("$HERE/etcd37/main.go" "$HERE/etcd37/go.mod" "$HERE/etcd37/go.sum")
  current "$ETCD37_BIN" "${in[@]}" && return 0
  log "building etcd $ETCD37_VERSION (go.etcd.io/etcd/server/v3 etcdmain)"
  mkdir -p "$(dirname "$ETCD37_BIN")"
  (cd "$HERE/etcd37" && CGO_ENABLED=0 "$GO" build -trimpath -o "$ETCD37_BIN" .) || build_failed "etcd $ETCD37_VERSION"
  stamp "$ETCD37_BIN" "${in[@]}"
}

build_kube() {
  local ld="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37 -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
  mkdir -p "$KUBE_BIN"
  local mods=("$HERE/bin/go.mod" "$HERE/bin/go.sum")
  if ! current "$KUBE_BIN/kube-apiserver" "${mods[@]}" || ! current "$KUBE_BIN/kubectl" "${mods[@]}"; then
    log "building kube-apiserver and kubectl $K8S_VERSION through the module proxy (cold: about 10 min on 2 cores)"
    (cd "$HERE/bin" && CGO_ENABLED=0 "$GO" build -trimpath -ldflags "$ld" -o "$KUBE_BIN/" \
        k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl) || build_failed "kube-apiserver $K8S_VERSION"
    stamp "$KUBE_BIN/kube-apiserver" "${mods[@]}"; stamp "$KUBE_BIN/kubectl" "${mods[@]}"
  fi
  if ! current "$KUBE_BIN/loaddriver" "$HERE/bin/loaddriver/main.go" "${mods[@]}"; then
    log "building the client-go load driver"
    (cd "$HERE/bin" && CGO_ENABLED=0 "$GO" build -trimpath -o "$KUBE_BIN/loaddriver" ./loaddriver) || build_failed "the load driver"
    stamp "$KUBE_BIN/loaddriver" "$HERE/bin/loaddriver/main.go" "${mods[@]}"
  fi
}

# A copy of k8s.io/apiserver with one line added to testserver.RunEtcd (our external.go.in
# starts the launcher named by K8S_TEST_SERVER). No Kubernetes code is kept in this repository.
prepare_apiserver() {
  local ext="$APISERVER_COPY/pkg/storage/etcd3/testserver/external.go"
  if [ ! -f "$APISERVER_COPY/.engram-patched" ] || ! cmp -s "$HERE/external.go.in" "$ext"; then
    log "preparing $APISERVER_COPY"
    local src="$GOMODCACHE/k8s.io/apiserver@$APISERVER_VERSION"
    if [ ! -d "$src" ]; then
      (cd "$CACHE" && "$GO" mod download "k8s.io/apiserver@$APISERVER_VERSION") ||
        die "cannot fetch k8s.io/apiserver@$APISERVER_VERSION through the Go module proxy ($GOPROXY): check network access or set GOPROXY"
    fi
    rm -rf "$APISERVER_COPY"; cp -r "$src" "$APISERVER_COPY"; chmod -R u+w "$APISERVER_COPY"
    cp "$HERE/external.go.in" "$ext"
    local f="$APISERVER_COPY/pkg/storage/etcd3/testserver/test_server.go"
    sed -i '0,/^\tt.Helper()$/s//\tt.Helper()\n\tif c := runExternal(t, cfg); c != nil {\n\t\treturn c\n\t}/' "$f"
    [ "$(grep -c 'runExternal(t, cfg)' "$f")" = 1 ] ||
      die "could not patch RunEtcd in k8s.io/apiserver@$APISERVER_VERSION ($f changed shape)"
    echo "$APISERVER_VERSION" > "$APISERVER_COPY/.engram-patched"
  fi
  ln -sfn "$APISERVER_COPY" "$HERE/storage/.apiserver"
}

build_testbins() {
  prepare_apiserver
  local in=("$APISERVER_COPY/.engram-patched" "$HERE/external.go.in" "$HERE/storage/go.mod" "$HERE/storage/go.sum")
  if current "$TESTBIN/etcd3.test" "${in[@]}" && current "$TESTBIN/cacher.test" "${in[@]}"; then return 0; fi
  log "building the storage test binaries (k8s.io/apiserver $APISERVER_VERSION pkg/storage/etcd3, cacher)"
  mkdir -p "$TESTBIN"
  (cd "$HERE/storage" && "$GO" test -c -o "$TESTBIN/" k8s.io/apiserver/pkg/storage/etcd3 k8s.io/apiserver/pkg/storage/cacher) ||
    build_failed "the storage test binaries"
  stamp "$TESTBIN/etcd3.test" "${in[@]}"; stamp "$TESTBIN/cacher.test" "${in[@]}"
}

# ---- parts ------------------------------------------------------------------------------
STATUS=0
SUMMARY=()

run_storage() {
  build_etcd37; build_testbins
  local backends="${K8S_STORAGE_BACKENDS:-etcd37 etcd34 engram}" files=() b pkg
  for b in $backends; do
    local json="$OUT/storage-$b.json"; : > "$json"
    for pkg in etcd3 cacher; do
      log "storage suites: $pkg on $b"
      local tmp="/dev/shm/engram-k8s-tests-$b"; rm -rf "$tmp"; mkdir -p "$tmp"
      (cd "$APISERVER_COPY/pkg/storage/$pkg" &&
        TMPDIR="$tmp" K8S_TEST_SERVER="$HERE/servers/$b.sh" \
        "$GO" tool test2json -t -p "k8s.io/apiserver/pkg/storage/$pkg" "$TESTBIN/$pkg.test" \
          -test.v=test2json -test.count=1 -test.timeout=40m ${K8S_STORAGE_RUN:+-test.run "$K8S_STORAGE_RUN"} \
          >> "$json" 2>&1) || true
      rm -rf "$tmp"
    done
    local name="$b"; [ "$b" = engram ] && name=ENGRAM
    files+=("$name=$json")
  done
  if python3 "$HERE/compare.py" "${files[@]}" --known "$HERE/known-differences.txt" | tee "$OUT/storage-summary.txt"; then
    SUMMARY+=("storage: $(tail -1 "$OUT/storage-summary.txt")")
  else
    STATUS=1; SUMMARY+=("storage: FAILED: $(tail -1 "$OUT/storage-summary.txt")")
  fi
}

run_scenario() {
  build_etcd37; build_kube
  local b ok=1
  for b in etcd37 engram; do
    log "kube-apiserver scenario on $b"
    if ! python3 "$HERE/scenario.py" --name "$b" --launcher "$HERE/servers/$b.sh" --kube-bin "$KUBE_BIN" \
         --work "/dev/shm/engram-k8s-scenario-$b" --out "$OUT/scenario-$b.json" | tee "$OUT/scenario-$b.txt"; then ok=0; fi
  done
  if python3 "$HERE/scenario_compare.py" "$OUT/scenario-etcd37.json" "$OUT/scenario-engram.json" | tee "$OUT/scenario-summary.txt" && [ $ok = 1 ]; then
    SUMMARY+=("scenario: $(tail -1 "$OUT/scenario-summary.txt")")
  else
    STATUS=1; SUMMARY+=("scenario: FAILED: $(tail -1 "$OUT/scenario-summary.txt")")
  fi
}

run_bench() {
  build_etcd37; build_kube
  local rounds="${K8S_BENCH_ROUNDS:-5}" r ref="" eng=""
  log "client-go load through kube-apiserver on etcd37 and on engram, both up, phases interleaved ($rounds rounds)"
  rm -f "$OUT"/bench-etcd37-*.json "$OUT"/bench-engram-*.json
  python3 "$HERE/scenario.py" --bench --name etcd37,engram \
    --launcher "$HERE/servers/etcd37.sh,$HERE/servers/engram.sh" --kube-bin "$KUBE_BIN" \
    --work /dev/shm/engram-k8s-bench --out "$OUT" --rounds "$rounds" | tail -4 || STATUS=1
  rm -rf /dev/shm/engram-k8s-bench
  for r in $(seq 1 "$rounds"); do
    ref="$ref${ref:+,}$OUT/bench-etcd37-$r.json"; eng="$eng${eng:+,}$OUT/bench-engram-$r.json"
  done
  if python3 "$HERE/bench_report.py" "etcd37=$ref" "engram=$eng" | tee "$OUT/bench-summary.txt"; then
    SUMMARY+=("bench: $(tail -1 "$OUT/bench-summary.txt")")
  else
    STATUS=1; SUMMARY+=("bench: FAILED: $(tail -1 "$OUT/bench-summary.txt")")
  fi
}

parts=("$@"); [ ${#parts[@]} -gt 0 ] || parts=(all)
for p in "${parts[@]}"; do
  case "$p" in
    build) build_etcd37; build_kube; build_testbins ;;
    storage) run_storage ;;
    scenario) run_scenario ;;
    bench) run_bench ;;
    all) run_storage; run_scenario; run_bench ;;
    *) die "unknown part '$p' (all, storage, scenario, bench, build)" ;;
  esac
done
echo
passed=0; failed=0
for s in "${SUMMARY[@]}"; do
  echo "$s"
  case "$s" in *FAILED*) failed=$((failed + 1)) ;; *) passed=$((passed + 1)) ;; esac
done
echo "Kubernetes on Engram: $passed passed, $failed failed"
exit $STATUS
