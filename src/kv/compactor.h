// Auto compaction (--auto-compaction-mode / --auto-compaction-retention), with
// etcd's v3compactor rules:
//
// periodic, retention P: every R = min(P, 1h)/10 the current revision is
//   sampled into a window of P/R+1 samples; once P has passed since start (and
//   then every min(P, 1h) after a success) the oldest sample - the revision of
//   P ago - is compacted. A failure is retried after R.
// revision, retention N: every 5 minutes compact to (current revision - N),
//   unless that is <= 0 or the same revision as the last success.
// "etcdserver: mvcc: required revision has been compacted" counts as success.
//
// The policies are pure (time and revisions are inputs) so tests drive them
// deterministically; Compactor runs one on a thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "src/common/status.h"

namespace engram::kv {

using CompactClock = std::chrono::steady_clock;

class PeriodicPolicy {
 public:
  PeriodicPolicy(std::chrono::milliseconds period, CompactClock::time_point start);
  std::chrono::milliseconds TickInterval() const { return retry_; }
  // The loop: Record(current revision); wait TickInterval(); Due(now) says
  // which revision to compact, if one is due; OnResult after trying.
  void Record(int64_t rev);
  std::optional<int64_t> Due(CompactClock::time_point now);
  void OnResult(CompactClock::time_point now, bool ok);

 private:
  std::chrono::milliseconds period_, retry_, compact_interval_, base_interval_;
  size_t retentions_;
  std::deque<int64_t> revs_;
  CompactClock::time_point last_success_;
};

class RevisionPolicy {
 public:
  explicit RevisionPolicy(int64_t retention) : retention_(retention) {}
  static constexpr std::chrono::milliseconds kInterval{5 * 60 * 1000};
  std::optional<int64_t> OnTick(int64_t rev) const;
  void OnResult(int64_t rev, bool ok) {
    if (ok) prev_ = rev;
  }

 private:
  int64_t retention_;
  int64_t prev_ = 0;
};

// Parses mode + retention as etcd does: periodic takes a duration ("1h",
// "30m") or a whole number of hours; revision takes a whole number. Returns
// nullopt-like zero duration/count for "0" (disabled).
struct CompactionSpec {
  std::string mode;
  std::chrono::milliseconds period{0};
  int64_t revisions = 0;
  bool enabled() const { return period.count() > 0 || revisions > 0; }
};
Result<CompactionSpec> ParseCompaction(const std::string& mode, const std::string& retention);

// Runs a policy on its own thread; compact(rev) proposes a compaction and
// blocks until it is applied.
class Compactor {
 public:
  Compactor(CompactionSpec spec, std::function<int64_t()> current_rev, std::function<Status(int64_t)> compact);
  ~Compactor();
  void Stop();

 private:
  void Run();

  CompactionSpec spec_;
  std::function<int64_t()> current_rev_;
  std::function<Status(int64_t)> compact_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;  // guarded by mu_
  std::thread thread_;
};

}  // namespace engram::kv
