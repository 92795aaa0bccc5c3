// Raft: the consensus state machine behind RawNode (internal to src/raft).
// Terms, votes, elections (optionally with pre-vote), log replication, commit,
// check-quorum, read index, leadership transfer and simple membership changes,
// after etcd-io/raft's raft.go. RawNode wraps it into the Ready/Advance
// protocol; see raw_node.h for the contract. Not thread-safe.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "src/common/status.h"
#include "src/raft/progress.h"
#include "src/raft/raft_log.h"
#include "src/raft/raw_node.h"

namespace engram::raft {

inline constexpr const char* kErrProposalDropped = "raft proposal dropped";
inline constexpr const char* kCampaignTransfer = "CampaignTransfer";

enum class CampaignType { kPreElection, kElection, kTransfer };

// Read-index requests waiting for a quorum of heartbeat acknowledgements
// (etcd's readOnly, ReadOnlySafe only).
class ReadOnly {
 public:
  struct Status {
    Message req;
    uint64_t index = 0;
    std::set<uint64_t> acks;
  };
  // False if a request with the same context is already pending.
  bool AddRequest(uint64_t index, const Message& m);
  // Records an ack for ctx; null if no such request is pending.
  const std::set<uint64_t>* RecvAck(uint64_t id, const std::string& ctx);
  // Removes and returns every request up to and including ctx's.
  std::vector<Status> Advance(const std::string& ctx);
  std::string LastPendingRequestCtx() const { return queue_.empty() ? std::string() : queue_.back(); }
  size_t Pending() const { return queue_.size(); }
  void Clear() {
    pending_.clear();
    queue_.clear();
  }

 private:
  std::map<std::string, Status> pending_;
  std::deque<std::string> queue_;
};

class Raft {
 public:
  static Result<std::unique_ptr<Raft>> Create(const Config& c);

  engram::Status Step(Message m);
  void Tick();
  // Leader only: appends entries (type and data set; term and index are filled in).
  engram::Status Propose(std::vector<Entry> ents);
  ConfState ApplyConfChange(const ConfChange& cc);
  void ReportUnreachable(uint64_t id);

  // After Advance(): entries up to the log's stable last index are durable.
  // The leader counts its own copy now, which may commit entries.
  void OnPersisted();
  // Sends the appends that proposals / a commit advance left pending.
  void FlushBroadcast();
  bool HasPendingBroadcast() const;

  uint64_t id() const { return id_; }
  uint64_t term() const { return term_; }
  uint64_t lead() const { return lead_; }
  StateType state() const { return state_; }
  // The leader may answer read indexes once an entry of its term is committed.
  bool CommittedEntryInCurrentTerm() const { return log_.ZeroTermOnError(log_.committed()) == term_; }
  bool Promotable() const { return tracker_.IsVoter(id_); }
  // Committed but not yet applied entries include a conf change.
  bool HasUnappliedConfChanges() const;
  SoftState soft_state() const { return SoftState{lead_, state_}; }
  HardState hard_state() const { return HardState{term_, vote_, log_.committed()}; }
  RaftLog& log() { return log_; }
  const RaftLog& log() const { return log_; }
  const ProgressTracker& tracker() const { return tracker_; }
  std::vector<Message>& msgs() { return msgs_; }
  const std::vector<Message>& msgs() const { return msgs_; }
  std::vector<ReadState>& read_states() { return read_states_; }
  const std::vector<ReadState>& read_states() const { return read_states_; }
  RaftProbe* probe() const { return probe_; }

 private:
  explicit Raft(const Config& c);

  // State transitions.
  void BecomeFollower(uint64_t term, uint64_t lead);
  void BecomeCandidate();
  void BecomePreCandidate();
  void BecomeLeader();
  void Reset(uint64_t term);
  void ResetRandomizedElectionTimeout();
  uint64_t NextRand();

  void TickElection();
  void TickHeartbeat();
  bool PastElectionTimeout() const { return election_elapsed_ >= randomized_election_timeout_; }

  void Hup(CampaignType t);
  void Campaign(CampaignType t);
  VoteResult Poll(uint64_t id, MessageType t, bool granted);
  void HandleVoteRequest(const Message& m);

  engram::Status StepLeader(Message& m);
  engram::Status StepCandidate(Message& m);
  engram::Status StepFollower(Message& m);
  void HandleAppendEntries(const Message& m);
  void HandleHeartbeat(const Message& m);
  void HandleAppResp(const Message& m, Progress* pr);
  void HandleHeartbeatResp(const Message& m, Progress* pr);
  void HandleTransferLeader(const Message& m, Progress* pr);

  void Send(Message m);
  // Sends an append to `to` if it is not paused; with send_if_empty false only
  // when there are entries to send. Returns whether a message went out.
  bool SendAppend(uint64_t to, bool send_if_empty);
  void SendHeartbeat(uint64_t to, const std::string& ctx);
  void BcastHeartbeat();
  void SendTimeoutNow(uint64_t to) { Send(Message{.type = MessageType::kTimeoutNow, .to = to}); }
  void AppendEntries(std::vector<Entry> ents);
  bool MaybeCommit();
  void OnCommitAdvanced();
  void AbortLeaderTransfer() { lead_transferee_ = kNone; }

  void HandleReadIndex(const Message& m);
  void SendReadIndexResponse(const Message& m);
  void RespondToReadIndexReq(const Message& req, uint64_t read_index);
  void ReleasePendingReadIndexMessages();
  void DropReadIndex(const char* why);

  uint64_t id_;
  uint64_t term_ = 0;
  uint64_t vote_ = kNone;
  uint64_t lead_ = kNone;
  StateType state_ = StateType::kFollower;
  RaftLog log_;
  ProgressTracker tracker_;
  std::vector<Message> msgs_;
  std::vector<ReadState> read_states_;

  uint64_t max_msg_size_;
  bool check_quorum_;
  bool pre_vote_;
  int election_timeout_;
  int heartbeat_timeout_;
  int election_elapsed_ = 0;   // ticks since the last election timeout reset (leader: since last check-quorum)
  int heartbeat_elapsed_ = 0;  // leader only
  int randomized_election_timeout_ = 0;
  std::function<uint64_t()> rand_;
  uint64_t rand_state_;  // default generator (splitmix64) when no rand is injected

  uint64_t lead_transferee_ = kNone;
  // Index of the last conf change proposed; a new one waits until it is applied.
  uint64_t pending_conf_index_ = 0;

  ReadOnly read_only_;
  std::vector<Message> pending_read_index_;  // until the leader commits in its term

  // Leader: proposals appended entries / the commit index moved; the appends
  // go out in FlushBroadcast (once per Ready, not once per proposal).
  bool bcast_append_pending_ = false;
  bool bcast_commit_pending_ = false;

  RaftProbe* probe_;
};

}  // namespace engram::raft
