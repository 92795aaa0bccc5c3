// Storage: raft's read-only view of the durable log (after etcd-io/raft's
// Storage interface), and MemoryStorage, the in-memory copy of it the server
// keeps in front of the WAL.
//
// Index layout. A Storage holds the entries [FirstIndex(), LastIndex()]. The
// entry just before FirstIndex() has been compacted away, but its term is still
// known: Term(FirstIndex() - 1) succeeds (the "dummy" entry, etcd's snapshot
// metadata). A fresh log has FirstIndex() == 1, LastIndex() == 0 and
// Term(0) == 0.
//
// Who writes it: only the server, between GetReady() and Advance() (append the
// Ready's entries after they are in the WAL, set the hard state), and at
// startup while replaying the WAL. Raft itself never writes to it.
#pragma once

#include <cstdint>
#include <limits>
#include <mutex>
#include <utility>
#include <vector>

#include "src/common/status.h"
#include "src/raft/types.h"

namespace engram::raft {

inline constexpr uint64_t kNoLimit = std::numeric_limits<uint64_t>::max();

// Status messages of the expected failures (etcd's ErrCompacted/ErrUnavailable).
inline constexpr const char* kErrCompacted = "requested index is unavailable due to compaction";
inline constexpr const char* kErrUnavailable = "requested entry at index is unavailable";

class Storage {
 public:
  virtual ~Storage() = default;
  // The persisted hard state and membership. An empty ConfState means "none
  // recorded yet": raft then takes the voters from Config.
  virtual std::pair<HardState, ConfState> InitialState() const = 0;
  // Entries [lo, hi), at least one if lo < hi, then as many as fit in max_bytes
  // (data size plus a small per-entry overhead). OutOfRange(kErrCompacted) if
  // lo < FirstIndex(); OutOfRange if hi > LastIndex() + 1.
  virtual Result<std::vector<Entry>> Entries(uint64_t lo, uint64_t hi, uint64_t max_bytes) const = 0;
  // Term of entry i, for i in [FirstIndex() - 1, LastIndex()]. OutOfRange with
  // kErrCompacted below that range, kErrUnavailable above it.
  virtual Result<uint64_t> Term(uint64_t i) const = 0;
  virtual uint64_t LastIndex() const = 0;
  virtual uint64_t FirstIndex() const = 0;
};

// The size Entries() charges for one entry (same measure raft uses for
// max_size_per_msg and max_committed_size_per_ready).
inline uint64_t EntrySize(const Entry& e) { return e.data.size() + 24; }

// Thread-safe: every method takes mu_, so the server may read it from other
// threads while the raft loop appends. mu_ guards ents_, hard_state_, conf_state_.
class MemoryStorage : public Storage {
 public:
  MemoryStorage();

  std::pair<HardState, ConfState> InitialState() const override;
  Result<std::vector<Entry>> Entries(uint64_t lo, uint64_t hi, uint64_t max_bytes) const override;
  Result<uint64_t> Term(uint64_t i) const override;
  uint64_t LastIndex() const override;
  uint64_t FirstIndex() const override;

  void SetHardState(const HardState& hs);
  void SetConfState(const ConfState& cs);
  HardState hard_state() const;
  ConfState conf_state() const;

  // Appends entries that follow on from (or overlap) the log, as etcd's
  // MemoryStorage.Append: entries already compacted are skipped, and entries
  // from the first one's index on replace what the log held there (a
  // follower's log being overwritten by a new leader). OutOfRange if the
  // entries would leave a gap after LastIndex(); InvalidArgument if their
  // indexes are not consecutive.
  Status Append(const std::vector<Entry>& entries);

  // Drops the entries up to and including index; index becomes the dummy entry
  // (its term is kept). OutOfRange(kErrCompacted) if index <= FirstIndex() - 1,
  // OutOfRange if index > LastIndex().
  Status Compact(uint64_t index);

  // For a WAL replay whose first entry is not index 1: discards every entry and
  // makes the log empty right after a compacted prefix ending at (index, term),
  // so FirstIndex() == index + 1 and Term(index) == term. The next Append must
  // start at index + 1 or earlier. Keeps the hard state and conf state.
  void ResetCompacted(uint64_t index, uint64_t term);

 private:
  uint64_t FirstIndexLocked() const { return ents_.front().index + 1; }
  uint64_t LastIndexLocked() const { return ents_.front().index + ents_.size() - 1; }

  mutable std::mutex mu_;
  std::vector<Entry> ents_;  // ents_[0] is the dummy entry (compacted prefix end)
  HardState hard_state_;
  ConfState conf_state_;
};

}  // namespace engram::raft
