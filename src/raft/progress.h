// Replication progress the leader keeps per peer, and the quorum arithmetic
// (after etcd-io/raft's tracker/ and quorum/ packages, reduced to a single
// majority configuration: no joint consensus). Internal to src/raft; not
// thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <set>
#include <vector>

#include "src/raft/types.h"

namespace engram::raft {

// The last index of each append message in flight to one follower, oldest first.
class Inflights {
 public:
  explicit Inflights(size_t cap) : cap_(cap) {}
  void Add(uint64_t last_index) { q_.push_back(last_index); }
  // Frees every message whose last index is <= to (acknowledged).
  void FreeLE(uint64_t to) {
    while (!q_.empty() && q_.front() <= to) q_.pop_front();
  }
  void FreeFirstOne() {
    if (!q_.empty()) q_.pop_front();
  }
  bool Full() const { return q_.size() >= cap_; }
  size_t Count() const { return q_.size(); }
  void Reset() { q_.clear(); }

 private:
  size_t cap_;
  std::deque<uint64_t> q_;
};

enum class ProgressState {
  kProbe,      // next is a guess: one append at a time until one is accepted
  kReplicate,  // next is known: appends are pipelined, up to the inflight limit
};

struct Progress {
  explicit Progress(size_t max_inflight) : inflights(max_inflight) {}

  uint64_t match = 0;  // highest index known replicated (and durable) there
  uint64_t next = 1;   // next index to send
  ProgressState state = ProgressState::kProbe;
  // Probe state: an append was sent and is not answered yet (cleared by any
  // response, including a heartbeat response).
  bool msg_app_paused = false;
  bool recent_active = false;  // heard from since the last check-quorum round
  uint64_t sent_commit = 0;    // highest commit index sent to it (appends and heartbeats)
  bool warned_compacted = false;  // logged once that it needs compacted entries
  bool is_learner = false;
  Inflights inflights;

  void BecomeProbe();
  void BecomeReplicate();
  // An acknowledgement of index n. Returns true if match moved.
  bool MaybeUpdate(uint64_t n);
  // A rejection of the append at `rejected`; match_hint is the follower's guess
  // of where the logs agree. Returns false if the rejection is stale.
  bool MaybeDecrTo(uint64_t rejected, uint64_t match_hint);
  // An append carrying entries up to last_index (n entries) was sent.
  void SentEntries(size_t n, uint64_t last_index);
  bool IsPaused() const;
};

enum class VoteResult { kPending, kLost, kWon };

// Membership (one majority config of voters, plus learners), per-peer
// progress, and the votes of the current election.
class ProgressTracker {
 public:
  explicit ProgressTracker(size_t max_inflight) : max_inflight_(max_inflight) {}

  const std::set<uint64_t>& voters() const { return voters_; }
  const std::set<uint64_t>& learners() const { return learners_; }
  std::map<uint64_t, Progress>& progress() { return progress_; }
  const std::map<uint64_t, Progress>& progress() const { return progress_; }
  Progress* Get(uint64_t id);
  const Progress* Get(uint64_t id) const;
  bool IsVoter(uint64_t id) const { return voters_.count(id) != 0; }
  // Exactly one voter (learners aside).
  bool IsSingleton() const { return voters_.size() == 1; }
  size_t Quorum() const { return voters_.size() / 2 + 1; }

  // Membership changes. A new peer starts in probe state at next = next_index.
  void AddVoter(uint64_t id, uint64_t next_index);
  void AddLearner(uint64_t id, uint64_t next_index);
  void Remove(uint64_t id);
  ConfState GetConfState() const;

  // Highest index a quorum of voters has (0 with no voters).
  uint64_t CommittedIndex() const;
  // A quorum of voters is recently active (self counts as active).
  bool QuorumActive(uint64_t self) const;
  VoteResult Result(const std::set<uint64_t>& acks) const;

  void ResetVotes() { votes_.clear(); }
  // Records a vote (the first one from id counts) and returns the tally.
  VoteResult RecordVote(uint64_t id, bool granted);
  void TallyVotes(size_t* granted, size_t* rejected) const;

 private:
  size_t max_inflight_;
  std::set<uint64_t> voters_;
  std::set<uint64_t> learners_;
  std::map<uint64_t, Progress> progress_;
  std::map<uint64_t, bool> votes_;
};

}  // namespace engram::raft
