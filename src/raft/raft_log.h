// RaftLog: the log as the raft state machine sees it (internal to src/raft).
//
// It is the durable part in Storage, [storage.FirstIndex(), unstable.offset),
// followed by the unstable part: entries raft appended that the server has
// not yet persisted (handed out in Ready.entries, dropped from here on
// Advance). Unstable entries starting at or below storage's last index shadow
// the stored ones (a follower's log being overwritten; the server's
// MemoryStorage::Append truncates them in turn).
//
//   committed: highest index known committed (never decreases)
//   applied:   highest index the server applied (<= committed)
//
// Not thread-safe; owned by Raft.
#pragma once

#include <cstdint>
#include <vector>

#include "src/common/status.h"
#include "src/raft/storage.h"
#include "src/raft/types.h"

namespace engram::raft {

class Unstable {
 public:
  uint64_t offset = 0;          // index of entries[0] (or where the next one goes)
  std::vector<Entry> entries;

  bool MaybeLastIndex(uint64_t* out) const;
  bool MaybeTerm(uint64_t i, uint64_t* out) const;
  // Drops entries up to i, if entry i is still there with term t.
  bool StableTo(uint64_t i, uint64_t t);
  void TruncateAndAppend(std::vector<Entry> ents);
  // Entries [lo, hi); both inside [offset, offset + entries.size()].
  std::vector<Entry> Slice(uint64_t lo, uint64_t hi) const;
};

class RaftLog {
 public:
  RaftLog(Storage* storage, uint64_t max_applying_bytes);

  uint64_t FirstIndex() const;
  uint64_t LastIndex() const;
  uint64_t LastTerm() const;
  // Highest index known durable: below the unstable part.
  uint64_t StableLastIndex() const;
  // Term of i, for i in [FirstIndex() - 1, LastIndex()]; OutOfRange otherwise.
  Result<uint64_t> Term(uint64_t i) const;
  // Term of i, or 0 if it is compacted or beyond the log (a mismatch for all callers).
  uint64_t ZeroTermOnError(uint64_t i) const;
  bool MatchTerm(uint64_t i, uint64_t t) const;
  bool IsUpToDate(uint64_t last_index, uint64_t term) const;

  // Follower append (AppendEntries consistency check + conflict resolution).
  // If the entry at `index` has term `log_term`, appends ents (dropping any
  // conflicting suffix; panics if that would cut committed entries), commits up
  // to min(committed, last new index) and returns true with *last_new.
  bool MaybeAppend(uint64_t index, uint64_t log_term, uint64_t committed, const std::vector<Entry>& ents,
                   uint64_t* last_new);
  // Appends after a truncation at ents[0].index. Returns the new last index.
  uint64_t Append(std::vector<Entry> ents);
  // First index among ents whose term conflicts with (or is missing from) the log, 0 if none.
  uint64_t FindConflict(const std::vector<Entry>& ents) const;
  // Largest index <= index whose term is <= term (for fast log backtracking),
  // and that term (0 if unknown).
  std::pair<uint64_t, uint64_t> FindConflictByTerm(uint64_t index, uint64_t term) const;

  // Entries [lo, hi), at most max_bytes (at least one). OutOfRange if compacted.
  Result<std::vector<Entry>> Slice(uint64_t lo, uint64_t hi, uint64_t max_bytes) const;
  // Entries from i to the end, at most max_bytes.
  Result<std::vector<Entry>> EntriesFrom(uint64_t i, uint64_t max_bytes) const;
  const std::vector<Entry>& UnstableEntries() const { return unstable_.entries; }

  void CommitTo(uint64_t to);
  bool MaybeCommit(uint64_t max_index, uint64_t term);
  void AppliedTo(uint64_t i);
  bool StableTo(uint64_t i, uint64_t t) { return unstable_.StableTo(i, t); }

  // Highest index that may be handed out for applying: committed and durable.
  uint64_t MaxAppliableIndex() const;
  bool HasNextCommittedEnts(uint64_t applying) const { return applying < MaxAppliableIndex(); }
  // Committed, durable entries after `applying`, at most max_applying_bytes.
  std::vector<Entry> NextCommittedEnts(uint64_t applying) const;

  uint64_t committed() const { return committed_; }
  uint64_t applied() const { return applied_; }
  Storage* storage() const { return storage_; }

 private:
  Storage* storage_;
  Unstable unstable_;
  uint64_t committed_ = 0;
  uint64_t applied_ = 0;
  uint64_t max_applying_bytes_;
};

}  // namespace engram::raft
