// Helpers shared by the files that implement KvServer (server.cc: open,
// requests, status; server_raft.cc: the raft, timeout and syncer threads;
// server_apply.cc: the apply thread). Not for use outside src/kv.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "engrampb/internal.pb.h"
#include "src/kv/server.h"

namespace engram::kv::internal {

// Meta names of lease records: "lease/" + the ID in 16 hex digits
// (src/mvcc/FORMAT.md); the value is the granted TTL, 8 bytes big-endian,
// followed by the checkpointed remaining TTL (8 bytes big-endian) when one
// was recorded (lease checkpointing).
inline constexpr const char* kLeaseMetaPrefix = "lease/";
inline std::string EncodeLeaseRecord(int64_t ttl, int64_t remaining) {
  std::string v(remaining > 0 ? 16 : 8, '\0');
  for (int i = 0; i < 8; ++i) v[i] = static_cast<char>(static_cast<uint64_t>(ttl) >> (56 - 8 * i));
  if (remaining > 0)
    for (int i = 0; i < 8; ++i) v[8 + i] = static_cast<char>(static_cast<uint64_t>(remaining) >> (56 - 8 * i));
  return v;
}
inline std::string LeaseMetaKey(int64_t id) {
  char b[32];
  std::snprintf(b, sizeof b, "lease/%016lx", static_cast<unsigned long>(id));
  return b;
}

// etcd's way of printing ids in logs: lower-case hex, no padding.
inline std::string Hex(uint64_t v) {
  char b[17];
  std::snprintf(b, sizeof b, "%lx", static_cast<unsigned long>(v));
  return b;
}

// The member list as stored under the "members" meta key (length-prefixed
// engrampb.Member records).
std::string EncodeMembers(const std::vector<MemberInfo>& ms);

// Raft's membership from the persisted member list (voters and learners);
// a store without one (a fresh member, before the bootstrap conf change is
// applied) has just self as voter.
inline raft::ConfState ConfStateFromMembers(const std::vector<MemberInfo>& members, uint64_t self) {
  raft::ConfState cs;
  for (const auto& m : members) (m.is_learner ? cs.learners : cs.voters).push_back(m.id);
  if (cs.voters.empty()) cs.voters = {self};
  return cs;
}

// metrics: the op label of etcd_server_apply_duration_seconds.
ApplyOp ApplyOpOf(engrampb::InternalRequest::RequestCase kind);

}  // namespace engram::kv::internal
