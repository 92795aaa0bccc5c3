#!/usr/bin/env bash
# Kubernetes on Engram: builds what is missing (engram; etcd 3.7, kube-apiserver and kubectl
# v1.37 and k8s.io/apiserver's storage tests through the Go module proxy, cached in
# ~/.cache/engram-k8s) and runs, side by side with etcd 3.7: Kubernetes' own storage suites,
# a kube-apiserver scenario driven by kubectl, and a client-go benchmark.
# Needs Go >= 1.26 (/usr/local/go or PATH) and the Go module proxy.
# Arguments: the parts to run (storage, scenario, bench; default all). See docs/kubernetes.md.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$here/scripts/install-deps.sh"
"$here/scripts/build.sh"
exec "$here/tests/k8s/run.sh" "$@"
