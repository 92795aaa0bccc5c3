// PrefixStats: live keys and live bytes (key + value) per key prefix, for
// engram_mvcc_prefix_keys / engram_mvcc_prefix_bytes: which part of the
// keyspace (Kubernetes resource type, tenant...) fills the database.
//
// The prefix of a key (PrefixOf), with depth N >= 1:
//   - a key starting with '/': its first N '/'-separated directory segments,
//     i.e. the key up to (not including) the (N+1)-th '/', or up to its last
//     '/' if it has fewer: "/registry/pods/default/web-0" -> "/registry/pods"
//     (N = 2), "/registry/ranges" -> "/registry"; a key with no second '/'
//     ("/foo") -> "other";
//   - any other key: the text before its first '/' ("tenant1/a/b" -> "tenant1"),
//     or "other" if it has no '/'.
// Cardinality is bounded: the first kMaxPrefixes distinct prefixes get their
// own series; keys of any later prefix are counted under "other". A prefix
// keeps its slot until restart (even at zero keys), so a key is always
// subtracted from the series it was added to. Depth 0 disables the stats.
//
// Maintained by mvcc::Store on the apply path: each write batch accumulates a
// Delta (no lock), applied once at commit (PrefixStats::mu_, a few map
// updates); rebuilt from the key index at Open. Compaction does not change
// live totals. Snapshot() copies the small map under the same mutex, so a
// scrape never waits on the writer for long.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace engram::mvcc {

class PrefixStats {
 public:
  static constexpr size_t kMaxPrefixes = 256;
  static constexpr std::string_view kOther = "other";

  explicit PrefixStats(int depth) : depth_(depth < 0 ? 0 : depth) {}
  PrefixStats(const PrefixStats&) = delete;
  PrefixStats& operator=(const PrefixStats&) = delete;

  int depth() const { return depth_; }
  bool enabled() const { return depth_ > 0; }

  // The prefix key is counted under (before the cardinality bound).
  static std::string_view PrefixOf(std::string_view key, int depth);

  // Changes of one write batch. Writer thread only; not thread-safe.
  class Delta {
   public:
    void Add(std::string_view prefix, int64_t keys, int64_t bytes);
    bool empty() const { return d_.empty(); }
    void Clear() {
      d_.clear();
      last_ = 0;
    }

   private:
    friend class PrefixStats;
    struct Item {
      std::string prefix;
      int64_t keys = 0, bytes = 0;
    };
    std::vector<Item> d_;  // few distinct prefixes per batch: linear search
    size_t last_ = 0;      // last hit (consecutive writes often share a prefix)
  };
  // Convenience for the writer: key added (+1) or removed (-1) / value resized.
  void Count(Delta* d, std::string_view key, int64_t keys, int64_t bytes) const {
    if (enabled()) d->Add(PrefixOf(key, depth_), keys, bytes);
  }

  // Applies a batch's changes (takes mu_) and clears d.
  void Apply(Delta* d);
  // Forgets everything (before a rebuild).
  void Reset();

  struct Entry {
    std::string prefix;
    int64_t keys = 0;
    int64_t bytes = 0;
  };
  // Every tracked prefix (and "other" once used), sorted by prefix. Any thread.
  std::vector<Entry> Snapshot() const;

 private:
  struct Totals {
    int64_t keys = 0, bytes = 0;
  };
  const int depth_;
  mutable std::mutex mu_;
  std::map<std::string, Totals, std::less<>> m_;  // GUARDED_BY(mu_); "other" included
  size_t named_ = 0;                              // GUARDED_BY(mu_): entries other than "other"
};

}  // namespace engram::mvcc
