// Store::CompactJob: the state of a compaction whose index compaction and
// revision removal run in steps (src/mvcc/compaction.cc). Private to the
// store's implementation files.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "src/mvcc/store.h"

namespace engram::mvcc {

struct Store::CompactJob {
  int64_t rev = 0;
  bool at_open = false;
  bool index_started = false, index_done = false;
  std::string next_key;            // where the index compaction goes on
  std::vector<Revision> garbage;   // revisions to remove: one sorted run per index step
  std::vector<std::pair<size_t, size_t>> runs;  // [begin, end) of each sorted run; begin advances as removed
  std::vector<size_t> heap;        // run indexes, a min-heap on their next revision (merge order)
  size_t done = 0;                 // garbage removed so far
  double index_ms = 0;             // index compaction time (sum of its steps)
  std::chrono::steady_clock::time_point start;
};

}  // namespace engram::mvcc
