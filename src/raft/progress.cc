#include "src/raft/progress.h"

#include <algorithm>
#include <functional>

namespace engram::raft {

void Progress::BecomeProbe() {
  state = ProgressState::kProbe;
  msg_app_paused = false;
  inflights.Reset();
  next = match + 1;
}

void Progress::BecomeReplicate() {
  state = ProgressState::kReplicate;
  msg_app_paused = false;
  inflights.Reset();
  next = match + 1;
}

bool Progress::MaybeUpdate(uint64_t n) {
  bool updated = false;
  if (match < n) {
    match = n;
    updated = true;
    msg_app_paused = false;
  }
  next = std::max(next, n + 1);
  return updated;
}

bool Progress::MaybeDecrTo(uint64_t rejected, uint64_t match_hint) {
  if (state == ProgressState::kReplicate) {
    // A rejection of something already acknowledged is stale.
    if (rejected <= match) return false;
    next = match + 1;
    return true;
  }
  // Probe state: only the rejection of the probe we sent last counts.
  if (next - 1 != rejected) return false;
  next = std::max(std::min(rejected, match_hint + 1), match + 1);
  msg_app_paused = false;
  return true;
}

void Progress::SentEntries(size_t n, uint64_t last_index) {
  if (state == ProgressState::kReplicate) {
    if (n > 0) {
      next = last_index + 1;
      inflights.Add(last_index);
    }
  } else {
    msg_app_paused = true;  // any append in probe state is a probe: wait for its answer
  }
}

bool Progress::IsPaused() const {
  return state == ProgressState::kProbe ? msg_app_paused : inflights.Full();
}

Progress* ProgressTracker::Get(uint64_t id) {
  auto it = progress_.find(id);
  return it == progress_.end() ? nullptr : &it->second;
}

const Progress* ProgressTracker::Get(uint64_t id) const {
  auto it = progress_.find(id);
  return it == progress_.end() ? nullptr : &it->second;
}

void ProgressTracker::AddVoter(uint64_t id, uint64_t next_index) {
  learners_.erase(id);
  voters_.insert(id);
  Progress* pr = Get(id);
  if (pr != nullptr) {
    pr->is_learner = false;  // promotion keeps the replication state
    return;
  }
  auto [it, _] = progress_.emplace(id, Progress(max_inflight_));
  it->second.next = next_index;
  it->second.recent_active = true;  // a new peer gets a full check-quorum round
}

void ProgressTracker::AddLearner(uint64_t id, uint64_t next_index) {
  if (voters_.count(id) != 0) return;  // demotion needs joint consensus: not supported
  learners_.insert(id);
  if (Get(id) != nullptr) return;
  auto [it, _] = progress_.emplace(id, Progress(max_inflight_));
  it->second.next = next_index;
  it->second.is_learner = true;
  it->second.recent_active = true;
}

void ProgressTracker::Remove(uint64_t id) {
  voters_.erase(id);
  learners_.erase(id);
  progress_.erase(id);
  votes_.erase(id);
}

ConfState ProgressTracker::GetConfState() const {
  ConfState cs;
  cs.voters.assign(voters_.begin(), voters_.end());
  cs.learners.assign(learners_.begin(), learners_.end());
  return cs;
}

uint64_t ProgressTracker::CommittedIndex() const {
  if (voters_.empty()) return 0;
  std::vector<uint64_t> matches;
  matches.reserve(voters_.size());
  for (uint64_t id : voters_) {
    const Progress* pr = Get(id);
    matches.push_back(pr == nullptr ? 0 : pr->match);
  }
  std::sort(matches.begin(), matches.end(), std::greater<>());
  return matches[Quorum() - 1];
}

bool ProgressTracker::QuorumActive(uint64_t self) const {
  size_t active = 0;
  for (uint64_t id : voters_) {
    const Progress* pr = Get(id);
    if (id == self || (pr != nullptr && pr->recent_active)) active++;
  }
  return active >= Quorum();
}

VoteResult ProgressTracker::Result(const std::set<uint64_t>& acks) const {
  size_t n = 0;
  for (uint64_t id : voters_) n += acks.count(id);
  return n >= Quorum() ? VoteResult::kWon : VoteResult::kPending;
}

void ProgressTracker::TallyVotes(size_t* granted, size_t* rejected) const {
  *granted = *rejected = 0;
  for (uint64_t id : voters_) {
    auto it = votes_.find(id);
    if (it == votes_.end()) continue;
    (it->second ? *granted : *rejected) += 1;
  }
}

VoteResult ProgressTracker::RecordVote(uint64_t id, bool granted) {
  votes_.emplace(id, granted);  // the first vote from id counts
  size_t g = 0, r = 0;
  TallyVotes(&g, &r);
  if (g >= Quorum()) return VoteResult::kWon;
  if (r > voters_.size() - Quorum()) return VoteResult::kLost;
  return VoteResult::kPending;
}

}  // namespace engram::raft
