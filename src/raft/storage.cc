#include "src/raft/storage.h"

#include <string>

namespace engram::raft {

MemoryStorage::MemoryStorage() { ents_.emplace_back(); }

std::pair<HardState, ConfState> MemoryStorage::InitialState() const {
  std::lock_guard<std::mutex> l(mu_);
  return {hard_state_, conf_state_};
}

Result<std::vector<Entry>> MemoryStorage::Entries(uint64_t lo, uint64_t hi, uint64_t max_bytes) const {
  std::lock_guard<std::mutex> l(mu_);
  const uint64_t offset = ents_.front().index;
  if (lo <= offset) return Status::OutOfRange(kErrCompacted);
  if (hi > LastIndexLocked() + 1) {
    return Status::OutOfRange("entries' hi(" + std::to_string(hi) + ") is out of bound lastindex(" +
                              std::to_string(LastIndexLocked()) + ")");
  }
  std::vector<Entry> out;
  uint64_t size = 0;
  for (uint64_t i = lo; i < hi; i++) {
    const Entry& e = ents_[i - offset];
    size += EntrySize(e);
    if (!out.empty() && size > max_bytes) break;
    out.push_back(e);
  }
  return out;
}

Result<uint64_t> MemoryStorage::Term(uint64_t i) const {
  std::lock_guard<std::mutex> l(mu_);
  const uint64_t offset = ents_.front().index;
  if (i < offset) return Status::OutOfRange(kErrCompacted);
  if (i - offset >= ents_.size()) return Status::OutOfRange(kErrUnavailable);
  return ents_[i - offset].term;
}

uint64_t MemoryStorage::LastIndex() const {
  std::lock_guard<std::mutex> l(mu_);
  return LastIndexLocked();
}

uint64_t MemoryStorage::FirstIndex() const {
  std::lock_guard<std::mutex> l(mu_);
  return FirstIndexLocked();
}

void MemoryStorage::SetHardState(const HardState& hs) {
  std::lock_guard<std::mutex> l(mu_);
  hard_state_ = hs;
}

void MemoryStorage::SetConfState(const ConfState& cs) {
  std::lock_guard<std::mutex> l(mu_);
  conf_state_ = cs;
}

HardState MemoryStorage::hard_state() const {
  std::lock_guard<std::mutex> l(mu_);
  return hard_state_;
}

ConfState MemoryStorage::conf_state() const {
  std::lock_guard<std::mutex> l(mu_);
  return conf_state_;
}

Status MemoryStorage::Append(const std::vector<Entry>& entries) {
  if (entries.empty()) return Status::OK();
  for (size_t i = 1; i < entries.size(); i++) {
    if (entries[i].index != entries[i - 1].index + 1) {
      return Status::InvalidArgument("raft: appended entries are not consecutive at index " +
                                     std::to_string(entries[i].index));
    }
  }
  std::lock_guard<std::mutex> l(mu_);
  const uint64_t first = FirstIndexLocked();
  const uint64_t last = entries.back().index;
  if (last < first) return Status::OK();  // all of it is compacted already
  size_t skip = 0;
  if (first > entries.front().index) skip = first - entries.front().index;
  const uint64_t start = entries[skip].index;
  const uint64_t offset = start - ents_.front().index;  // position of start in ents_
  if (offset > ents_.size()) {
    return Status::OutOfRange("raft: missing log entry [last: " + std::to_string(LastIndexLocked()) +
                              ", append at: " + std::to_string(start) + "]");
  }
  ents_.resize(offset);  // drops any conflicting suffix
  ents_.insert(ents_.end(), entries.begin() + static_cast<std::ptrdiff_t>(skip), entries.end());
  return Status::OK();
}

Status MemoryStorage::Compact(uint64_t index) {
  std::lock_guard<std::mutex> l(mu_);
  const uint64_t offset = ents_.front().index;
  if (index <= offset) return Status::OutOfRange(kErrCompacted);
  if (index > LastIndexLocked()) {
    return Status::OutOfRange("raft: compact " + std::to_string(index) + " is out of bound lastindex(" +
                              std::to_string(LastIndexLocked()) + ")");
  }
  const uint64_t i = index - offset;
  std::vector<Entry> kept;
  kept.reserve(ents_.size() - i);
  kept.push_back(Entry{ents_[i].term, ents_[i].index, EntryType::kNormal, {}});
  for (size_t j = i + 1; j < ents_.size(); j++) kept.push_back(std::move(ents_[j]));
  ents_ = std::move(kept);
  return Status::OK();
}

void MemoryStorage::ResetCompacted(uint64_t index, uint64_t term) {
  std::lock_guard<std::mutex> l(mu_);
  ents_.clear();
  ents_.push_back(Entry{term, index, EntryType::kNormal, {}});
}

}  // namespace engram::raft
