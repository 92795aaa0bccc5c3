// Raft log and message types, shared by the consensus core (src/raft) and its
// durable log (src/wal). Plain structs: the WAL defines their on-disk encoding
// (src/wal/FORMAT.md), the peer transport will define their wire encoding.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "src/common/status.h"

namespace engram::raft {

enum class EntryType : uint8_t {
  kNormal = 0,      // data is an engrampb.InternalRequest (or empty: a new leader's entry)
  kConfChange = 1,  // a membership change; raft never reads data (EncodeConfChange's
                    // encoding, or the caller's own, e.g. an engrampb.ConfChange)
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

// One membership change, proposed with RawNode::ProposeConfChange and applied with
// RawNode::ApplyConfChange once its entry is committed. Changes are simple (one
// member at a time, no joint consensus). Numbering follows etcd's raftpb.
enum class ConfChangeType : uint8_t {
  kAddNode = 0,         // add a voter, or promote a learner to voter
  kRemoveNode = 1,      // remove a voter or a learner
  kAddLearnerNode = 3,  // add a learner (a voter cannot be demoted this way)
};

struct ConfChange {
  ConfChangeType type = ConfChangeType::kAddNode;
  uint64_t node_id = 0;
  std::string context;  // opaque to raft (the server puts the member's URLs here)
  bool operator==(const ConfChange&) const = default;
};

// Entry data written by RawNode::ProposeConfChange(cc): byte 1 (version), byte
// type, fixed64 node_id (little-endian), then the context bytes to the end.
std::string EncodeConfChange(const ConfChange& cc);
Result<ConfChange> DecodeConfChange(std::string_view data);

}  // namespace engram::raft
