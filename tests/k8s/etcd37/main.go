// etcd 3.7 as a reference server for the Kubernetes storage tests and scenario
// (tests/k8s/run.sh builds it through the Go module proxy; test-only, never shipped).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
