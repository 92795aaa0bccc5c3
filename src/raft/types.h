// Raft log and message types, shared by the consensus core (src/raft) and its
// durable log (src/wal). Plain structs: the WAL defines their on-disk encoding
// (src/wal/FORMAT.md), the peer transport will define their wire encoding.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace engram::raft {

enum class EntryType : uint8_t {
  kNormal = 0,      // data is an engrampb.InternalRequest (or empty: a new leader's entry)
  kConfChange = 1,  // data is an engrampb.ConfChange
};

struct Entry {
  uint64_t term = 0;
  uint64_t index = 0;
  EntryType type = EntryType::kNormal;
  std::string data;

  bool operator==(const Entry&) const = default;
};

// What raft must persist before it sends messages or acknowledges entries.
struct HardState {
  uint64_t term = 0;
  uint64_t vote = 0;
  uint64_t commit = 0;

  bool Empty() const { return term == 0 && vote == 0 && commit == 0; }
  bool operator==(const HardState&) const = default;
};

// Voting members (and learners, later) as of some log position.
struct ConfState {
  std::vector<uint64_t> voters;
  std::vector<uint64_t> learners;
  bool operator==(const ConfState&) const = default;
};

}  // namespace engram::raft
