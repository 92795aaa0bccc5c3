// Startup disk check: how long an fdatasync takes on the WAL's disk, measured
// once before the member serves. Raft's heartbeats wait on WAL fsyncs, so a
// disk whose sync latency approaches the heartbeat interval makes leaders
// look dead (etcd's "slow disk" warnings, reference §7 #8); saying so at
// start, with numbers, beats discovering it from election storms.
#pragma once

#include <string>

#include "src/common/status.h"

namespace engram::kv {

struct DiskCheckResult {
  int samples = 0;
  double p50_seconds = 0;
  double p99_seconds = 0;  // nearest rank: with 20 samples, the slowest one
  double max_seconds = 0;
  double total_seconds = 0;
};

// Writes a 4 KiB block and fdatasyncs it up to `samples` times (stopping early
// once `budget_ms` has been spent, after at least 3 samples) in a temporary
// file in dir, which it removes. The file is preallocated and synced first so
// each sample measures a data-only sync, as on a preallocated WAL segment.
Result<DiskCheckResult> MeasureFsyncLatency(const std::string& dir, int samples = 20, int budget_ms = 250);

}  // namespace engram::kv
