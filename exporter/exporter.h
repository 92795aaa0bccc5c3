// Exporter: Engram's metrics, as etcd exposes them (names, TYPE lines, label
// names, histogram buckets; ../shared/reference/etcd-observability.md §1-2),
// plus Engram's own engram_* families: one Collector (exporter/collector.h,
// a prometheus::Collectable) that reads the probes at scrape time, next to one
// prometheus::Registry for any family kept the usual prometheus-cpp way
// (prometheus-cpp 1.0.1's Registry holds only its own Families, so the
// Exporter collects both).
//
// RenderText() writes Prometheus text format 0.0.4 the way Go's client_golang
// (etcd's) does, not with prometheus::TextSerializer: Go prints numbers in
// their shortest round-trip form with e-notation from 1e6 on
// (le="1.048576e+06", 1.8446744073709552e+19), while prometheus-cpp prints
// 1048576 and rounds to 16 digits. Dashboards that pin an `le` value and
// tools that diff the two servers' output see the same strings. Families and
// series are sorted, label names too, as Go does.
//
// Thread-safety: RenderText() may be called from several threads at once.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include <prometheus/metric_family.h>
#include <prometheus/registry.h>

#include "exporter/collector.h"
#include "exporter/health_probe.h"
#include "src/kv/rpc_probe.h"
#include "src/kv/server.h"

namespace engram::exporter {

class Exporter {
 public:
  struct Options {
    // --metrics=extensive: accepted; Engram shows the gRPC latency histogram
    // in both modes, so it changes nothing.
    bool extensive = false;
  };

  // Pointers may be null (their families are left out) and must outlive the
  // exporter.
  Exporter(kv::KvServer* kv, kv::RpcProbe* rpc, HealthProbe* health, Options opts);
  Exporter(kv::KvServer* kv, kv::RpcProbe* rpc, HealthProbe* health) : Exporter(kv, rpc, health, Options{}) {}

  // Every metric family in Prometheus text format 0.0.4.
  std::string RenderText();

  // Every family, unsorted (what RenderText() prints).
  std::vector<prometheus::MetricFamily> Collect() const;

  prometheus::Registry& registry() { return *registry_; }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<Collector> collector_;
  std::atomic<int64_t> in_flight_{0};
};

// Text format 0.0.4 of families, as Go's expfmt writes it (see above). Families
// without series are left out.
std::string SerializeText(std::vector<prometheus::MetricFamily> families);

// A float as Go's strconv.FormatFloat(v, 'g', -1, 64) and client_golang print
// it: "0.001", "8.192", "1.048576e+06", "1.8446744073709552e+19", "+Inf", "NaN".
std::string FormatGoFloat(double v);

}  // namespace engram::exporter
