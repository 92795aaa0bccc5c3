#!/usr/bin/env bash
# Runs the named tests of etcd 3.4.23's e2e suite against engram.
#   run-etcd-e2e.sh <path to run-etcd-e2e> <path to engram> <test name>...
# Passes only if every named test ran and passed: a name the suite does not
# have (misspelt, or renamed upstream) fails, and so does a skipped test.
# Fails (never skips) when the suite is missing: these tests are part of
# what "done" means.
set -euo pipefail
tool=$1 engram=$2
shift 2
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  echo "run-etcd-e2e.sh: no test names given" >&2
  exit 1
fi
for n in "${names[@]}"; do
  if ! [[ $n =~ ^Test[A-Za-z0-9_]+$ ]]; then
    echo "run-etcd-e2e.sh: '$n' is not a Go test name (list names, not patterns)" >&2
    exit 1
  fi
done
dups=$(printf '%s\n' "${names[@]}" | sort | uniq -d)
if [ -n "$dups" ]; then
  echo "run-etcd-e2e.sh: listed more than once: $dups" >&2
  exit 1
fi
if [ ! -x "$tool" ]; then
  echo "etcd e2e suite not found at $tool (it lives in ../shared/tools/etcd-e2e beside the repo)" >&2
  exit 1
fi
regex="^($(IFS='|'; echo "${names[*]}"))\$"

bin=$(mktemp -d /tmp/engram-e2e-bin.XXXXXX)
logs=$(mktemp -d /tmp/engram-e2e-logs.XXXXXX)
trap 'rm -rf "$bin"' EXIT
ln -s "$engram" "$bin/etcd"
# The suite hard-codes etcd 3.4.23 strings (/metrics versions, /health body).
export ENGRAM_EMULATE_ETCD_VERSION=3.4.23
ln -s /usr/bin/etcdctl "$bin/etcdctl"
out=$("$tool" -test-timeout 60 -log-dir "$logs" -run "$regex" "$bin" 2>&1) || true
echo "$out"

# Every name must have a PASS row in the tool's results.tsv (name, result,
# seconds, why); a name the suite does not know has no row at all.
bad=0
for n in "${names[@]}"; do
  res=$(awk -F'\t' -v n="$n" '$1 == n { r = $2 } END { print r }' "$logs/results.tsv" 2>/dev/null || true)
  case "$res" in
    PASS) ;;
    "") echo "etcd e2e: $n did not run: no such test in the suite (misspelt or renamed?)" >&2; bad=1 ;;
    *) echo "etcd e2e: $n: $res" >&2; bad=1 ;;
  esac
done
# And the tool's own summary must say exactly that many passed.
want="${#names[@]} passed, 0 failed"
last=$(echo "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed' | tail -1 || true)
if [ "$last" != "$want" ]; then
  echo "etcd e2e: summary '${last:-(none)}', expected '$want' (${#names[@]} tests listed)" >&2
  bad=1
fi
if [ "$bad" = 0 ]; then
  echo "etcd e2e: all ${#names[@]} listed tests passed"
  rm -rf "$logs"
  exit 0
fi
echo "etcd e2e: not every listed test passed; logs kept in $logs" >&2
exit 1
