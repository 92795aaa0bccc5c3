// Collector: the one prometheus::Collectable of Engram's registry. On each
// Collect() (a scrape) it reads the probes (plain atomics, STYLE practice 10)
// and builds the metric families with etcd's exact names, types, label names
// and buckets, plus process_* and Engram's own engram_* families. No second
// copy of any number is kept here.
//
// What Collect() touches beyond atomics, all short and none held by the write
// path across I/O: KvServer::Members() (members mutex), ActiveAlarms() (the
// alarm store's mutex), PrefixStats::Snapshot() (its own small mutex, taken by
// the apply thread once per commit), /proc reads and mallinfo2 (per-arena
// malloc locks, briefly). It opens no LMDB transaction (a defragmentation
// holds the environment for its whole run).
//
// Families and their sources: docs/metrics.md. etcd families Engram has no
// source for (peer network, snapshots, leases, auth, v2 store, proxies, go_*)
// are not exported; tests/e2e/test_metrics_compat.py lists them.
//
// Thread-safety: Collect() may run on several threads at once.
#pragma once

#include <atomic>
#include <memory>
#include <vector>

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

#include "exporter/health_probe.h"
#include "src/kv/rpc_probe.h"
#include "src/kv/server.h"

namespace engram::exporter {

struct CollectorOptions {
  // --metrics=extensive. Engram exports grpc_server_handling_seconds in both
  // modes (etcd only with extensive), so this changes nothing today.
  bool extensive = false;
  // Scrapes being served right now (promhttp_metric_handler_requests_in_flight);
  // may be null.
  const std::atomic<int64_t>* in_flight = nullptr;
};

class Collector : public prometheus::Collectable {
 public:
  // Any of the pointers may be null (its families are then left out); they
  // must outlive the collector.
  Collector(kv::KvServer* kv, kv::RpcProbe* rpc, HealthProbe* health, CollectorOptions opts = {});

  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  kv::KvServer* const kv_;
  kv::RpcProbe* const rpc_;
  HealthProbe* const health_;
  const CollectorOptions opts_;
};

}  // namespace engram::exporter
