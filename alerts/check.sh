#!/bin/sh
# Validates the Prometheus alert rules and runs their unit tests.
#   alerts/check.sh            (from anywhere)
#   PROMTOOL=/path/to/promtool alerts/check.sh
# Exit status: 0 = both passed, 1 = a check or test failed,
# 77 = promtool not found (register with ctest SKIP_RETURN_CODE 77 to skip).
set -u
here=$(cd "$(dirname "$0")" && pwd)
promtool=${PROMTOOL:-$(command -v promtool || true)}
if [ -z "$promtool" ] || [ ! -x "$promtool" ]; then
  echo "check.sh: promtool not found (set PROMTOOL or install prometheus)" >&2
  exit 77
fi

status=0
"$promtool" check rules "$here/engram-rules.yaml" || status=1
# rule_files in the test file are relative to the test file's directory.
"$promtool" test rules "$here/engram-rules.test.yaml" || status=1

if [ "$status" -ne 0 ]; then
  echo "check.sh: FAILED" >&2
else
  echo "check.sh: OK"
fi
exit "$status"
