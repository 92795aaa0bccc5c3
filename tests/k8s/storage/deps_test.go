// The storage test module has no code of its own: it runs k8s.io/apiserver's own storage
// tests (pkg/storage/etcd3, pkg/storage/cacher) against an external server through the
// patched copy of k8s.io/apiserver that tests/k8s/run.sh prepares in ./.apiserver.
// This file keeps those packages' test-only dependencies in go.mod and go.sum.
package storage

import (
	_ "k8s.io/apiserver/pkg/storage/cacher"
	_ "k8s.io/apiserver/pkg/storage/etcd3"
)
