#!/usr/bin/env bash
# One fresh Engram member (ENGRAM_BIN) for the Kubernetes tests; arguments in launch.sh.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/launch.sh"
launch "${ENGRAM_BIN:?ENGRAM_BIN must name the engram binary}" --watch-progress-notify-interval "$@"
