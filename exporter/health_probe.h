// What the health endpoints count (published by the collector under etcd's
// names). Filled by exporter/endpoints.cc; read at scrape time.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>

#include "src/common/probe.h"

namespace engram::exporter {

struct HealthProbe {
  Counter health_success;   // etcd_server_health_success: /health answered healthy
  Counter health_failures;  // etcd_server_health_failures: /health answered unhealthy
  // etcd_server_healthcheck{type,name} and etcd_server_healthchecks_total{type,name,status}
  // for type in {livez, readyz} x name in kCheckNames. A check that never ran
  // has ran == false and is not exported (etcd creates series on first use).
  static constexpr const char* kCheckNames[] = {"serializable_read", "linearizable_read", "data_corruption",
                                                "non_learner"};
  static constexpr int kChecks = 4;
  struct Check {
    std::atomic<bool> ran{false};
    Gauge passed;      // 1 if the last run passed
    Counter success;   // runs that passed
    Counter error;     // runs that failed
  };
  std::array<Check, kChecks> livez;
  std::array<Check, kChecks> readyz;
  Counter scrapes;  // /metrics requests served (promhttp_metric_handler_requests_total{code="200"})
};

}  // namespace engram::exporter
