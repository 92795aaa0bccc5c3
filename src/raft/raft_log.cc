#include "src/raft/raft_log.h"

#include <algorithm>
#include <string>

#include "src/common/log.h"

namespace engram::raft {

namespace {

// Keeps at least one entry, then as many as fit in max_bytes.
void LimitSize(std::vector<Entry>* ents, uint64_t max_bytes) {
  if (ents->empty() || max_bytes == kNoLimit) return;
  uint64_t size = EntrySize((*ents)[0]);
  size_t n = 1;
  for (; n < ents->size(); n++) {
    size += EntrySize((*ents)[n]);
    if (size > max_bytes) break;
  }
  ents->resize(n);
}

bool IsCompacted(const Status& s) { return s.message() == kErrCompacted; }

}  // namespace

// ---- Unstable ----

bool Unstable::MaybeLastIndex(uint64_t* out) const {
  if (entries.empty()) return false;
  *out = offset + entries.size() - 1;
  return true;
}

bool Unstable::MaybeTerm(uint64_t i, uint64_t* out) const {
  if (i < offset || i - offset >= entries.size()) return false;
  *out = entries[i - offset].term;
  return true;
}

bool Unstable::StableTo(uint64_t i, uint64_t t) {
  uint64_t gt = 0;
  if (!MaybeTerm(i, &gt) || gt != t) return false;  // replaced meanwhile: keep it unstable
  entries.erase(entries.begin(), entries.begin() + static_cast<std::ptrdiff_t>(i - offset + 1));
  offset = i + 1;
  return true;
}

void Unstable::TruncateAndAppend(std::vector<Entry> ents) {
  if (ents.empty()) return;
  const uint64_t after = ents.front().index;
  if (after <= offset) {
    // Replaces the whole unstable part (and shadows stored entries from `after` on).
    offset = after;
    entries = std::move(ents);
    return;
  }
  if (after < offset + entries.size()) entries.resize(after - offset);  // drop the conflicting suffix
  if (after != offset + entries.size()) {
    ENGRAM_PANIC("raft: unstable append leaves a gap", {{"after", after}, {"offset", offset}, {"len", entries.size()}});
  }
  entries.insert(entries.end(), std::make_move_iterator(ents.begin()), std::make_move_iterator(ents.end()));
}

std::vector<Entry> Unstable::Slice(uint64_t lo, uint64_t hi) const {
  if (lo > hi || lo < offset || hi > offset + entries.size()) {
    ENGRAM_PANIC("raft: unstable slice out of bound",
                 {{"lo", lo}, {"hi", hi}, {"offset", offset}, {"len", entries.size()}});
  }
  return std::vector<Entry>(entries.begin() + static_cast<std::ptrdiff_t>(lo - offset),
                            entries.begin() + static_cast<std::ptrdiff_t>(hi - offset));
}

// ---- RaftLog ----

RaftLog::RaftLog(Storage* storage, uint64_t max_applying_bytes)
    : storage_(storage), max_applying_bytes_(max_applying_bytes) {
  const uint64_t first = storage_->FirstIndex();
  unstable_.offset = storage_->LastIndex() + 1;
  committed_ = first - 1;
  applied_ = first - 1;
}

uint64_t RaftLog::FirstIndex() const { return storage_->FirstIndex(); }

uint64_t RaftLog::LastIndex() const {
  uint64_t i = 0;
  if (unstable_.MaybeLastIndex(&i)) return i;
  return storage_->LastIndex();
}

uint64_t RaftLog::StableLastIndex() const {
  if (!unstable_.entries.empty()) return unstable_.offset - 1;
  return storage_->LastIndex();
}

uint64_t RaftLog::LastTerm() const {
  auto t = Term(LastIndex());
  if (!t.ok()) ENGRAM_PANIC("raft: unexpected error getting the last term", {{"error", t.status().ToString()}});
  return *t;
}

Result<uint64_t> RaftLog::Term(uint64_t i) const {
  const uint64_t dummy = FirstIndex() - 1;
  if (i < dummy) return Status::OutOfRange(kErrCompacted);
  if (i > LastIndex()) return Status::OutOfRange(kErrUnavailable);
  uint64_t t = 0;
  if (unstable_.MaybeTerm(i, &t)) return t;
  return storage_->Term(i);
}

uint64_t RaftLog::ZeroTermOnError(uint64_t i) const {
  auto t = Term(i);
  return t.ok() ? *t : 0;
}

bool RaftLog::MatchTerm(uint64_t i, uint64_t t) const {
  auto got = Term(i);
  return got.ok() && *got == t;
}

bool RaftLog::IsUpToDate(uint64_t last_index, uint64_t term) const {
  const uint64_t lt = LastTerm();
  return term > lt || (term == lt && last_index >= LastIndex());
}

bool RaftLog::MaybeAppend(uint64_t index, uint64_t log_term, uint64_t committed, const std::vector<Entry>& ents,
                          uint64_t* last_new) {
  if (!MatchTerm(index, log_term)) return false;
  const uint64_t lastnewi = index + ents.size();
  const uint64_t ci = FindConflict(ents);
  if (ci != 0) {
    if (ci <= committed_) {
      ENGRAM_PANIC("raft: entry conflicts with a committed entry",
                   {{"conflict", ci}, {"committed", committed_}});
    }
    const uint64_t off = index + 1;
    if (ci - off > ents.size()) ENGRAM_PANIC("raft: conflict index out of range", {{"conflict", ci}});
    Append(std::vector<Entry>(ents.begin() + static_cast<std::ptrdiff_t>(ci - off), ents.end()));
  }
  CommitTo(std::min(committed, lastnewi));
  *last_new = lastnewi;
  return true;
}

uint64_t RaftLog::Append(std::vector<Entry> ents) {
  if (ents.empty()) return LastIndex();
  const uint64_t after = ents.front().index - 1;
  if (after < committed_) {
    ENGRAM_PANIC("raft: append would overwrite committed entries", {{"after", after}, {"committed", committed_}});
  }
  if (after > LastIndex()) ENGRAM_PANIC("raft: append leaves a gap", {{"after", after}, {"last", LastIndex()}});
  unstable_.TruncateAndAppend(std::move(ents));
  return LastIndex();
}

uint64_t RaftLog::FindConflict(const std::vector<Entry>& ents) const {
  for (const Entry& e : ents) {
    if (!MatchTerm(e.index, e.term)) {
      if (e.index <= LastIndex()) {
        LOG_DEBUG("raft: found conflict", {{"index", e.index}, {"term", e.term},
                                           {"existing-term", ZeroTermOnError(e.index)}});
      }
      return e.index;
    }
  }
  return 0;
}

std::pair<uint64_t, uint64_t> RaftLog::FindConflictByTerm(uint64_t index, uint64_t term) const {
  for (; index > 0; index--) {
    auto our = Term(index);
    if (!our.ok()) return {index, 0};
    if (*our <= term) return {index, *our};
  }
  return {0, 0};
}

Result<std::vector<Entry>> RaftLog::Slice(uint64_t lo, uint64_t hi, uint64_t max_bytes) const {
  if (lo > hi) ENGRAM_PANIC("raft: invalid slice", {{"lo", lo}, {"hi", hi}});
  if (lo < FirstIndex()) return Status::OutOfRange(kErrCompacted);
  if (hi > LastIndex() + 1) {
    ENGRAM_PANIC("raft: slice out of bound", {{"lo", lo}, {"hi", hi}, {"last", LastIndex()}});
  }
  std::vector<Entry> ents;
  if (lo == hi) return ents;
  if (lo < unstable_.offset) {
    const uint64_t shi = std::min(hi, unstable_.offset);
    auto stored = storage_->Entries(lo, shi, max_bytes);
    if (!stored.ok()) {
      if (IsCompacted(stored.status())) return stored.status();
      ENGRAM_PANIC("raft: storage lost entries raft relies on",
                    {{"lo", lo}, {"hi", shi}, {"error", stored.status().ToString()}});
    }
    ents = std::move(stored).value();
    if (ents.size() < shi - lo) return ents;  // size limit reached
  }
  if (hi > unstable_.offset) {
    std::vector<Entry> u = unstable_.Slice(std::max(lo, unstable_.offset), hi);
    if (ents.empty()) {
      ents = std::move(u);
    } else {
      ents.insert(ents.end(), std::make_move_iterator(u.begin()), std::make_move_iterator(u.end()));
    }
  }
  LimitSize(&ents, max_bytes);
  return ents;
}

Result<std::vector<Entry>> RaftLog::EntriesFrom(uint64_t i, uint64_t max_bytes) const {
  if (i > LastIndex()) return std::vector<Entry>{};
  return Slice(i, LastIndex() + 1, max_bytes);
}

void RaftLog::CommitTo(uint64_t to) {
  if (to <= committed_) return;  // never decrease
  if (to > LastIndex()) {
    ENGRAM_PANIC("raft: commit index is out of range (log corrupted, truncated or lost?)",
                 {{"to", to}, {"last", LastIndex()}});
  }
  committed_ = to;
}

bool RaftLog::MaybeCommit(uint64_t max_index, uint64_t term) {
  if (max_index > committed_ && ZeroTermOnError(max_index) == term) {
    CommitTo(max_index);
    return true;
  }
  return false;
}

void RaftLog::AppliedTo(uint64_t i) {
  if (i == 0) return;
  if (committed_ < i || i < applied_) {
    ENGRAM_PANIC("raft: applied index out of range",
                 {{"applied", i}, {"prev-applied", applied_}, {"committed", committed_}});
  }
  applied_ = i;
}

uint64_t RaftLog::MaxAppliableIndex() const { return std::min(committed_, StableLastIndex()); }

std::vector<Entry> RaftLog::NextCommittedEnts(uint64_t applying) const {
  const uint64_t lo = std::max(applying, applied_) + 1;
  const uint64_t hi = MaxAppliableIndex() + 1;
  if (lo >= hi) return {};
  auto ents = Slice(lo, hi, max_applying_bytes_);
  if (!ents.ok()) {
    ENGRAM_PANIC("raft: unexpected error getting unapplied entries", {{"error", ents.status().ToString()}});
  }
  return std::move(ents).value();
}

}  // namespace engram::raft
