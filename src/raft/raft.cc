#include "src/raft/raft.h"

#include <algorithm>
#include <utility>

#include "src/common/log.h"

namespace engram::raft {

namespace {

MessageType VoteRespType(MessageType t) {
  switch (t) {
    case MessageType::kVote:
      return MessageType::kVoteResp;
    case MessageType::kPreVote:
      return MessageType::kPreVoteResp;
    default:
      ENGRAM_PANIC("raft: not a vote message", {{"type", MessageTypeName(t)}});
  }
}

bool IsVoteType(MessageType t) {
  return t == MessageType::kVote || t == MessageType::kPreVote || t == MessageType::kVoteResp ||
         t == MessageType::kPreVoteResp;
}

}  // namespace

// ---- ReadOnly ----

bool ReadOnly::AddRequest(uint64_t index, const Message& m) {
  if (pending_.count(m.context) != 0) return false;
  pending_.emplace(m.context, Status{m, index, {}});
  queue_.push_back(m.context);
  return true;
}

const std::set<uint64_t>* ReadOnly::RecvAck(uint64_t id, const std::string& ctx) {
  auto it = pending_.find(ctx);
  if (it == pending_.end()) return nullptr;
  it->second.acks.insert(id);
  return &it->second.acks;
}

std::vector<ReadOnly::Status> ReadOnly::Advance(const std::string& ctx) {
  std::vector<Status> out;
  auto pos = std::find(queue_.begin(), queue_.end(), ctx);
  if (pos == queue_.end()) return out;
  const size_t n = static_cast<size_t>(pos - queue_.begin()) + 1;
  for (size_t i = 0; i < n; i++) {
    auto it = pending_.find(queue_.front());
    if (it == pending_.end()) ENGRAM_PANIC("raft: cannot find corresponding read state from pending map");
    out.push_back(std::move(it->second));
    pending_.erase(it);
    queue_.pop_front();
  }
  return out;
}

// ---- construction ----

Raft::Raft(const Config& c)
    : id_(c.id),
      log_(c.storage, c.max_committed_size_per_ready),
      tracker_(c.max_inflight_msgs),
      max_msg_size_(c.max_size_per_msg),
      check_quorum_(c.check_quorum),
      pre_vote_(c.pre_vote),
      election_timeout_(c.election_tick),
      heartbeat_timeout_(c.heartbeat_tick),
      rand_(c.rand),
      rand_state_(c.id * 0x9E3779B97F4A7C15ULL + 1),
      probe_(c.probe) {}

Result<std::unique_ptr<Raft>> Raft::Create(const Config& c) {
  if (c.id == kNone) return engram::Status::InvalidArgument("raft: cannot use none as id");
  if (c.storage == nullptr) return engram::Status::InvalidArgument("raft: storage cannot be nil");
  if (c.heartbeat_tick <= 0) return engram::Status::InvalidArgument("raft: heartbeat tick must be greater than 0");
  if (c.election_tick <= c.heartbeat_tick) {
    return engram::Status::InvalidArgument("raft: election tick must be greater than heartbeat tick");
  }
  if (c.max_inflight_msgs == 0) return engram::Status::InvalidArgument("raft: max inflight messages must be greater than 0");
  if (c.max_committed_size_per_ready == 0) {
    return engram::Status::InvalidArgument("raft: max committed size per ready must be greater than 0");
  }

  auto [hs, cs] = c.storage->InitialState();
  if (cs.voters.empty() && cs.learners.empty()) cs.voters = c.voters;
  if (cs.voters.empty()) return engram::Status::InvalidArgument("raft: no voters (Config.voters or storage ConfState)");
  for (uint64_t v : cs.voters) {
    if (v == kNone) return engram::Status::InvalidArgument("raft: voter id 0");
    if (std::count(cs.learners.begin(), cs.learners.end(), v) != 0) {
      return engram::Status::InvalidArgument("raft: node is both voter and learner");
    }
  }

  std::unique_ptr<Raft> r(new Raft(c));
  for (uint64_t v : cs.voters) r->tracker_.AddVoter(v, 1);
  for (uint64_t l : cs.learners) r->tracker_.AddLearner(l, 1);

  if (!hs.Empty()) {
    if (hs.commit < r->log_.committed() || hs.commit > r->log_.LastIndex()) {
      return engram::Status::Corruption("raft: hard state commit " + std::to_string(hs.commit) +
                                        " is out of range [" + std::to_string(r->log_.committed()) + ", " +
                                        std::to_string(r->log_.LastIndex()) + "]");
    }
    if (hs.vote != kNone && hs.term == 0) return engram::Status::Corruption("raft: hard state has a vote at term 0");
    r->term_ = hs.term;
    r->vote_ = hs.vote;
    r->log_.CommitTo(hs.commit);
  }
  if (c.applied > 0) {
    if (c.applied > r->log_.committed()) {
      return engram::Status::Corruption("raft: applied index " + std::to_string(c.applied) +
                                        " is beyond the commit index " + std::to_string(r->log_.committed()));
    }
    if (c.applied < r->log_.applied()) {
      return engram::Status::Corruption("raft: applied index " + std::to_string(c.applied) +
                                        " is below the compacted log prefix " + std::to_string(r->log_.applied()));
    }
    r->log_.AppliedTo(c.applied);
  }
  r->BecomeFollower(r->term_, kNone);

  LOG_INFO("raft: new node", {{"id", r->id_}, {"term", r->term_}, {"commit", r->log_.committed()},
                              {"applied", r->log_.applied()}, {"last-index", r->log_.LastIndex()},
                              {"last-term", r->log_.LastTerm()}, {"voters", cs.voters.size()}});
  return r;
}

uint64_t Raft::NextRand() {
  if (rand_) return rand_();
  // splitmix64
  uint64_t z = (rand_state_ += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

void Raft::ResetRandomizedElectionTimeout() {
  randomized_election_timeout_ =
      election_timeout_ + static_cast<int>(NextRand() % static_cast<uint64_t>(election_timeout_));
}

// ---- state transitions ----

void Raft::Reset(uint64_t term) {
  if (term_ != term) {
    term_ = term;
    vote_ = kNone;
  }
  lead_ = kNone;
  election_elapsed_ = 0;
  heartbeat_elapsed_ = 0;
  ResetRandomizedElectionTimeout();
  AbortLeaderTransfer();
  tracker_.ResetVotes();
  const uint64_t next = log_.LastIndex() + 1;
  for (auto& [id, pr] : tracker_.progress()) {
    pr.BecomeProbe();
    pr.sent_commit = 0;
    pr.warned_compacted = false;
    pr.match = 0;
    pr.next = next;
    pr.recent_active = false;
    if (id == id_) pr.match = log_.StableLastIndex();
  }
  pending_conf_index_ = 0;
  bcast_append_pending_ = false;
  bcast_commit_pending_ = false;
  if (read_only_.Pending() > 0 || !pending_read_index_.empty()) {
    if (probe_ != nullptr) probe_->read_indexes_failed.Inc(read_only_.Pending() + pending_read_index_.size());
    read_only_.Clear();
    pending_read_index_.clear();
  }
}

void Raft::BecomeFollower(uint64_t term, uint64_t lead) {
  Reset(term);
  lead_ = lead;
  state_ = StateType::kFollower;
  LOG_INFO("raft: became follower", {{"id", id_}, {"term", term_}, {"lead", lead_}});
}

void Raft::BecomeCandidate() {
  if (state_ == StateType::kLeader) ENGRAM_PANIC("raft: invalid transition [leader -> candidate]");
  Reset(term_ + 1);
  vote_ = id_;
  state_ = StateType::kCandidate;
  LOG_INFO("raft: became candidate", {{"id", id_}, {"term", term_}});
}

void Raft::BecomePreCandidate() {
  if (state_ == StateType::kLeader) ENGRAM_PANIC("raft: invalid transition [leader -> pre-candidate]");
  // Changes neither the term nor the vote: a pre-candidate that loses leaves no trace.
  tracker_.ResetVotes();
  lead_ = kNone;
  state_ = StateType::kPreCandidate;
  LOG_INFO("raft: became pre-candidate", {{"id", id_}, {"term", term_}});
}

void Raft::BecomeLeader() {
  if (state_ == StateType::kFollower) ENGRAM_PANIC("raft: invalid transition [follower -> leader]");
  Reset(term_);
  lead_ = id_;
  state_ = StateType::kLeader;
  if (Progress* self = tracker_.Get(id_); self != nullptr) {
    self->BecomeReplicate();
    self->match = log_.StableLastIndex();
    self->next = log_.LastIndex() + 1;
    self->recent_active = true;
  }
  // Conf changes proposed by an earlier leader may be uncommitted in our log:
  // no new one until everything up to here is applied.
  pending_conf_index_ = log_.LastIndex();
  // The empty entry of the new term: committing it commits everything before it.
  AppendEntries(std::vector<Entry>(1));
  LOG_INFO("raft: became leader", {{"id", id_}, {"term", term_}});
}

// ---- ticks ----

void Raft::Tick() {
  if (state_ == StateType::kLeader) {
    TickHeartbeat();
  } else {
    TickElection();
  }
}

void Raft::TickElection() {
  election_elapsed_++;
  if (Promotable() && PastElectionTimeout()) {
    election_elapsed_ = 0;
    (void)Step(Message{.type = MessageType::kHup, .from = id_});
  }
}

void Raft::TickHeartbeat() {
  heartbeat_elapsed_++;
  election_elapsed_++;
  if (election_elapsed_ >= election_timeout_) {
    election_elapsed_ = 0;
    if (check_quorum_) {
      if (!tracker_.QuorumActive(id_)) {
        LOG_WARN("raft: stepped down to follower since quorum is not active", {{"id", id_}, {"term", term_}});
        BecomeFollower(term_, kNone);
        return;
      }
      for (auto& [id, pr] : tracker_.progress()) {
        if (id != id_) pr.recent_active = false;
      }
    }
    // A transfer that did not finish within an election timeout is abandoned.
    if (lead_transferee_ != kNone) AbortLeaderTransfer();
  }
  if (heartbeat_elapsed_ >= heartbeat_timeout_) {
    heartbeat_elapsed_ = 0;
    (void)Step(Message{.type = MessageType::kBeat, .from = id_});
  }
}

// ---- elections ----

void Raft::Hup(CampaignType t) {
  if (state_ == StateType::kLeader) {
    LOG_DEBUG("raft: ignoring campaign: already leader", {{"id", id_}});
    return;
  }
  if (!Promotable()) {
    LOG_WARN("raft: is unpromotable and can not campaign", {{"id", id_}});
    return;
  }
  if (HasUnappliedConfChanges()) {
    LOG_WARN("raft: cannot campaign: there are unapplied conf changes", {{"id", id_}, {"term", term_}});
    return;
  }
  LOG_INFO("raft: starting a new election", {{"id", id_}, {"term", term_}});
  Campaign(t);
}

bool Raft::HasUnappliedConfChanges() const {
  uint64_t lo = log_.applied() + 1;
  const uint64_t hi = log_.committed() + 1;
  while (lo < hi) {
    auto ents = log_.Slice(lo, hi, max_msg_size_);
    if (!ents.ok()) {
      ENGRAM_PANIC("raft: error scanning unapplied entries", {{"lo", lo}, {"error", ents.status().ToString()}});
    }
    for (const Entry& e : *ents) {
      if (e.type == EntryType::kConfChange) return true;
    }
    lo += ents->size();
  }
  return false;
}

void Raft::Campaign(CampaignType t) {
  if (!Promotable()) {
    LOG_WARN("raft: is unpromotable; campaign() should have been called", {{"id", id_}});
    return;
  }
  if (probe_ != nullptr) probe_->elections_started.Inc();
  MessageType vote_msg;
  uint64_t term;
  if (t == CampaignType::kPreElection) {
    BecomePreCandidate();
    vote_msg = MessageType::kPreVote;
    term = term_ + 1;  // the term we would campaign in; ours is not bumped yet
  } else {
    BecomeCandidate();
    vote_msg = MessageType::kVote;
    term = term_;
  }
  // Our own vote counts at once: it is persisted with the Ready that carries
  // the vote requests, before they are sent.
  if (Poll(id_, VoteRespType(vote_msg), true) == VoteResult::kWon) {
    if (t == CampaignType::kPreElection) {
      Campaign(CampaignType::kElection);
    } else {
      BecomeLeader();
    }
    return;
  }
  const uint64_t last_index = log_.LastIndex();
  const uint64_t last_term = log_.LastTerm();
  for (uint64_t id : tracker_.voters()) {
    if (id == id_) continue;
    Message m{.type = vote_msg, .to = id, .term = term, .log_term = last_term, .index = last_index};
    if (t == CampaignType::kTransfer) m.context = kCampaignTransfer;
    LOG_INFO("raft: sent vote request",
             {{"id", id_}, {"to", id}, {"type", MessageTypeName(vote_msg)}, {"term", term}});
    Send(std::move(m));
  }
}

VoteResult Raft::Poll(uint64_t id, MessageType t, bool granted) {
  LOG_INFO(granted ? "raft: received vote" : "raft: received vote rejection",
           {{"id", id_}, {"from", id}, {"type", MessageTypeName(t)}, {"term", term_}});
  return tracker_.RecordVote(id, granted);
}

void Raft::HandleVoteRequest(const Message& m) {
  const MessageType resp = VoteRespType(m.type);
  // We can vote for m.from if we already did (a retransmission), if we have
  // neither voted nor heard from a leader in this term, or (pre-vote) if the
  // request is for a future term.
  const bool can_vote = vote_ == m.from || (vote_ == kNone && lead_ == kNone) ||
                        (m.type == MessageType::kPreVote && m.term > term_);
  if (can_vote && log_.IsUpToDate(m.index, m.log_term)) {
    LOG_INFO("raft: cast vote", {{"id", id_}, {"for", m.from}, {"type", MessageTypeName(m.type)},
                                 {"term", m.term}, {"last-index", log_.LastIndex()}});
    // The response carries the request's term: for a pre-vote that is the
    // future term, which the pre-candidate recognises.
    Send(Message{.type = resp, .to = m.from, .term = m.term});
    if (m.type == MessageType::kVote) {
      election_elapsed_ = 0;
      vote_ = m.from;
    }
  } else {
    LOG_INFO("raft: rejected vote", {{"id", id_}, {"for", m.from}, {"type", MessageTypeName(m.type)},
                                     {"term", m.term}, {"vote", vote_}, {"last-index", log_.LastIndex()},
                                     {"last-term", log_.LastTerm()}});
    Send(Message{.type = resp, .to = m.from, .term = term_, .reject = true});
  }
}

// ---- Step ----

engram::Status Raft::Step(Message m) {
  if (m.term == 0) {
    // Local message (or a forwarded proposal / read index).
  } else if (m.term > term_) {
    if (m.type == MessageType::kVote || m.type == MessageType::kPreVote) {
      const bool force = m.context == kCampaignTransfer;
      // We heard from a leader within the minimum election timeout: do not let
      // a partitioned node with a higher term disrupt it. etcd applies this
      // lease only with check-quorum; we also apply it to pre-votes always,
      // as the Raft thesis (9.6) defines pre-vote, so that pre-vote alone
      // keeps a rejoining node from deposing a healthy leader.
      const bool in_lease = (check_quorum_ || m.type == MessageType::kPreVote) && lead_ != kNone &&
                            election_elapsed_ < election_timeout_;
      if (!force && in_lease) {
        LOG_INFO("raft: ignored vote request: lease is not expired",
                 {{"id", id_}, {"from", m.from}, {"term", term_}, {"msg-term", m.term}, {"lead", lead_}});
        return engram::Status::OK();
      }
    }
    if (m.type == MessageType::kPreVote) {
      // Never change our term on a pre-vote.
    } else if (m.type == MessageType::kPreVoteResp && !m.reject) {
      // A granted pre-vote carries the term we will campaign in; it is bumped
      // when the pre-vote is won.
    } else {
      LOG_INFO("raft: received a message with higher term",
               {{"id", id_}, {"term", term_}, {"msg-term", m.term}, {"from", m.from},
                {"type", MessageTypeName(m.type)}});
      if (m.type == MessageType::kApp || m.type == MessageType::kHeartbeat) {
        BecomeFollower(m.term, m.from);
      } else {
        BecomeFollower(m.term, kNone);
      }
    }
  } else if (m.term < term_) {
    if ((check_quorum_ || pre_vote_) && (m.type == MessageType::kHeartbeat || m.type == MessageType::kApp)) {
      // A leader cut off from us kept its old term. With check-quorum or
      // pre-vote our higher term may never reach it through votes, so tell it
      // now: the append response makes it step down.
      Send(Message{.type = MessageType::kAppResp, .to = m.from});
    } else if (m.type == MessageType::kPreVote) {
      Send(Message{.type = MessageType::kPreVoteResp, .to = m.from, .term = term_, .reject = true});
    } else {
      LOG_DEBUG("raft: ignored a message with lower term",
                {{"id", id_}, {"term", term_}, {"msg-term", m.term}, {"from", m.from},
                 {"type", MessageTypeName(m.type)}});
    }
    return engram::Status::OK();
  }

  switch (m.type) {
    case MessageType::kHup:
      Hup(pre_vote_ ? CampaignType::kPreElection : CampaignType::kElection);
      return engram::Status::OK();
    case MessageType::kVote:
    case MessageType::kPreVote:
      HandleVoteRequest(m);
      return engram::Status::OK();
    default:
      break;
  }
  switch (state_) {
    case StateType::kLeader:
      return StepLeader(m);
    case StateType::kCandidate:
    case StateType::kPreCandidate:
      return StepCandidate(m);
    case StateType::kFollower:
      return StepFollower(m);
  }
  return engram::Status::OK();
}

engram::Status Raft::StepLeader(Message& m) {
  switch (m.type) {
    case MessageType::kBeat:
      BcastHeartbeat();
      return engram::Status::OK();
    case MessageType::kProp:
      return Propose(std::move(m.entries));
    case MessageType::kReadIndex:
      HandleReadIndex(m);
      return engram::Status::OK();
    default:
      break;
  }
  Progress* pr = tracker_.Get(m.from);
  if (pr == nullptr) {
    LOG_DEBUG("raft: no progress available", {{"id", id_}, {"from", m.from}});
    return engram::Status::OK();
  }
  switch (m.type) {
    case MessageType::kAppResp:
      HandleAppResp(m, pr);
      break;
    case MessageType::kHeartbeatResp:
      HandleHeartbeatResp(m, pr);
      break;
    case MessageType::kTransferLeader:
      HandleTransferLeader(m, pr);
      break;
    default:
      break;
  }
  return engram::Status::OK();
}

engram::Status Raft::StepCandidate(Message& m) {
  // Only the responses to our own kind of request count: a pre-candidate may
  // still get late kVoteResp from an earlier election, and vice versa.
  const MessageType my_resp =
      state_ == StateType::kPreCandidate ? MessageType::kPreVoteResp : MessageType::kVoteResp;
  switch (m.type) {
    case MessageType::kProp:
      LOG_DEBUG("raft: no leader; dropping proposal", {{"id", id_}, {"term", term_}});
      return engram::Status::FailedPrecondition(kErrProposalDropped);
    case MessageType::kApp:
      BecomeFollower(m.term, m.from);  // someone else won this term
      HandleAppendEntries(m);
      break;
    case MessageType::kHeartbeat:
      BecomeFollower(m.term, m.from);
      HandleHeartbeat(m);
      break;
    case MessageType::kReadIndex:
      DropReadIndex("no leader");
      break;
    case MessageType::kTimeoutNow:
      LOG_DEBUG("raft: ignored timeout-now as a candidate", {{"id", id_}, {"from", m.from}});
      break;
    default:
      if (m.type == my_resp) {
        switch (Poll(m.from, m.type, !m.reject)) {
          case VoteResult::kWon:
            if (state_ == StateType::kPreCandidate) {
              Campaign(CampaignType::kElection);
            } else {
              BecomeLeader();
            }
            break;
          case VoteResult::kLost:
            // A rejected pre-vote or vote with a higher term made us a follower
            // in Step already; this is a lost election at our term.
            BecomeFollower(term_, kNone);
            break;
          case VoteResult::kPending:
            break;
        }
      }
      break;
  }
  return engram::Status::OK();
}

engram::Status Raft::StepFollower(Message& m) {
  switch (m.type) {
    case MessageType::kProp:
      LOG_DEBUG("raft: not leader; dropping proposal", {{"id", id_}, {"term", term_}, {"lead", lead_}});
      return engram::Status::FailedPrecondition(kErrProposalDropped);
    case MessageType::kApp:
      election_elapsed_ = 0;
      lead_ = m.from;
      HandleAppendEntries(m);
      break;
    case MessageType::kHeartbeat:
      election_elapsed_ = 0;
      lead_ = m.from;
      HandleHeartbeat(m);
      break;
    case MessageType::kTransferLeader:
      if (lead_ == kNone) {
        LOG_INFO("raft: no leader; dropping leader transfer", {{"id", id_}, {"term", term_}});
        break;
      }
      m.to = lead_;
      m.term = 0;  // re-stamped by Send (it may already carry a term if it was forwarded to us)
      Send(std::move(m));
      break;
    case MessageType::kTimeoutNow:
      LOG_INFO("raft: received timeout-now; campaigning to take leadership",
               {{"id", id_}, {"term", term_}, {"from", m.from}});
      // Leadership transfer never uses pre-vote: the leader asked for it.
      Hup(CampaignType::kTransfer);
      break;
    case MessageType::kReadIndex:
      if (lead_ == kNone) {
        DropReadIndex("no leader");
        break;
      }
      m.to = lead_;
      m.term = 0;  // forwarded as a local message
      Send(std::move(m));
      break;
    case MessageType::kReadIndexResp:
      read_states_.push_back(ReadState{m.index, std::move(m.context)});
      break;
    default:
      break;
  }
  return engram::Status::OK();
}

// ---- follower side of replication ----

void Raft::HandleAppendEntries(const Message& m) {
  if (m.index < log_.committed()) {
    // Everything up to our commit index already matches: say so.
    Send(Message{.type = MessageType::kAppResp, .to = m.from, .index = log_.committed()});
    return;
  }
  uint64_t last_new = 0;
  if (log_.MaybeAppend(m.index, m.log_term, m.commit, m.entries, &last_new)) {
    Send(Message{.type = MessageType::kAppResp, .to = m.from, .index = last_new});
    return;
  }
  // Our log does not hold (m.index, m.log_term). Hint the leader at the last
  // index where we might agree: the largest index <= m.index whose term is
  // <= m.log_term (all entries above it are certain mismatches).
  const uint64_t hint_index = std::min(m.index, log_.LastIndex());
  auto [index, term] = log_.FindConflictByTerm(hint_index, m.log_term);
  LOG_DEBUG("raft: rejected append", {{"id", id_}, {"index", m.index}, {"log-term", m.log_term},
                                      {"hint-index", index}, {"hint-term", term}});
  Send(Message{.type = MessageType::kAppResp, .to = m.from, .log_term = term, .index = m.index,
               .reject = true, .reject_hint = index});
}

void Raft::HandleHeartbeat(const Message& m) {
  log_.CommitTo(m.commit);
  Send(Message{.type = MessageType::kHeartbeatResp, .to = m.from, .context = m.context});
}

// ---- leader side of replication ----

void Raft::Send(Message m) {
  if (m.from == kNone) m.from = id_;
  if (IsVoteType(m.type)) {
    if (m.term == 0) ENGRAM_PANIC("raft: term should be set when sending a vote message", {{"type", MessageTypeName(m.type)}});
  } else {
    if (m.term != 0) {
      ENGRAM_PANIC("raft: term should not be set when sending a message",
                   {{"type", MessageTypeName(m.type)}, {"term", m.term}});
    }
    // Proposals and read-index requests are forwarded as local messages.
    if (m.type != MessageType::kProp && m.type != MessageType::kReadIndex) m.term = term_;
  }
  msgs_.push_back(std::move(m));
}

bool Raft::SendAppend(uint64_t to, bool send_if_empty) {
  Progress* pr = tracker_.Get(to);
  if (pr == nullptr || to == id_ || pr->IsPaused()) return false;
  const uint64_t prev_index = pr->next - 1;
  // Compacted entries: only a snapshot could bring this peer up to date, and
  // snapshots are not supported yet. Say so once per peer and term.
  auto compacted = [&](const engram::Status& s) {
    if (!pr->warned_compacted) {
      pr->warned_compacted = true;
      LOG_WARN("raft: cannot replicate to peer: the entries it needs are compacted (snapshots not supported)",
               {{"id", id_}, {"to", to}, {"next", pr->next}, {"error", s.ToString()}});
    }
    return false;
  };
  auto prev_term = log_.Term(prev_index);
  if (!prev_term.ok()) return compacted(prev_term.status());
  std::vector<Entry> ents;
  if (pr->state != ProgressState::kReplicate || !pr->inflights.Full()) {
    auto got = log_.EntriesFrom(pr->next, max_msg_size_);
    if (!got.ok()) return compacted(got.status());
    ents = std::move(got).value();
  }
  if (ents.empty() && !send_if_empty) return false;
  const size_t n = ents.size();
  const uint64_t last = n == 0 ? prev_index : ents.back().index;
  Send(Message{.type = MessageType::kApp, .to = to, .log_term = *prev_term, .index = prev_index,
               .commit = log_.committed(), .entries = std::move(ents)});
  pr->SentEntries(n, last);
  pr->sent_commit = std::max(pr->sent_commit, log_.committed());
  return true;
}

void Raft::SendHeartbeat(uint64_t to, const std::string& ctx) {
  Progress* pr = tracker_.Get(to);
  if (pr == nullptr) return;
  // Never tell a follower to commit beyond what it is known to hold: its log
  // may still be behind (or diverging from) ours.
  const uint64_t commit = std::min(pr->match, log_.committed());
  Send(Message{.type = MessageType::kHeartbeat, .to = to, .commit = commit, .context = ctx});
  pr->sent_commit = std::max(pr->sent_commit, commit);
}

void Raft::BcastHeartbeat() {
  const std::string ctx = read_only_.LastPendingRequestCtx();
  for (const auto& [id, pr] : tracker_.progress()) {
    if (id != id_) SendHeartbeat(id, ctx);
  }
}

bool Raft::HasPendingBroadcast() const {
  if (state_ != StateType::kLeader || !(bcast_append_pending_ || bcast_commit_pending_)) return false;
  for (const auto& [id, pr] : tracker_.progress()) {
    if (id != id_) return true;
  }
  return false;
}

void Raft::FlushBroadcast() {
  if (state_ != StateType::kLeader) {
    bcast_append_pending_ = bcast_commit_pending_ = false;
    return;
  }
  if (!bcast_append_pending_ && !bcast_commit_pending_) return;
  const bool commit_moved = bcast_commit_pending_;
  bcast_append_pending_ = bcast_commit_pending_ = false;
  for (const auto& [id, pr] : tracker_.progress()) {
    if (id == id_) continue;
    // An empty append only to carry a commit index the peer was not sent yet.
    const bool send_if_empty = commit_moved && pr.sent_commit < log_.committed();
    if (!SendAppend(id, send_if_empty)) continue;
    // Pipeline the rest to followers in replicate state (up to the inflight limit).
    while (SendAppend(id, false)) {
    }
  }
}

void Raft::AppendEntries(std::vector<Entry> ents) {
  const uint64_t li = log_.LastIndex();
  for (size_t i = 0; i < ents.size(); i++) {
    ents[i].term = term_;
    ents[i].index = li + 1 + i;
  }
  log_.Append(std::move(ents));
  // Our own copy counts towards the quorum only once it is durable
  // (OnPersisted), never here.
  bcast_append_pending_ = true;
}

engram::Status Raft::Propose(std::vector<Entry> ents) {
  if (state_ != StateType::kLeader) {
    LOG_DEBUG("raft: not leader; dropping proposal", {{"id", id_}, {"term", term_}, {"lead", lead_}});
    return engram::Status::FailedPrecondition(kErrProposalDropped);
  }
  if (ents.empty()) return engram::Status::InvalidArgument("raft: empty proposal");
  if (tracker_.Get(id_) == nullptr) {
    // We were removed from the configuration while leading.
    return engram::Status::FailedPrecondition(kErrProposalDropped);
  }
  if (lead_transferee_ != kNone) {
    LOG_DEBUG("raft: leader transfer in progress; dropping proposal", {{"id", id_}, {"transferee", lead_transferee_}});
    return engram::Status::FailedPrecondition(kErrProposalDropped);
  }
  const uint64_t li = log_.LastIndex();
  uint64_t conf_index = 0;
  for (size_t i = 0; i < ents.size(); i++) {
    if (ents[i].type != EntryType::kConfChange) continue;
    if (pending_conf_index_ > log_.applied() || conf_index != 0) {
      LOG_INFO("raft: dropping conf change: an earlier one is not applied yet",
               {{"id", id_}, {"pending", pending_conf_index_}, {"applied", log_.applied()}});
      return engram::Status::FailedPrecondition(
          "raft proposal dropped: a previous conf change is not applied yet");
    }
    conf_index = li + 1 + i;
  }
  if (conf_index != 0) pending_conf_index_ = conf_index;
  AppendEntries(std::move(ents));
  return engram::Status::OK();
}

bool Raft::MaybeCommit() { return log_.MaybeCommit(tracker_.CommittedIndex(), term_); }

void Raft::OnCommitAdvanced() {
  bcast_commit_pending_ = true;  // tell followers (empty appends carry the commit index)
  ReleasePendingReadIndexMessages();
}

void Raft::OnPersisted() {
  if (state_ != StateType::kLeader) return;
  Progress* self = tracker_.Get(id_);
  if (self == nullptr) return;
  if (self->MaybeUpdate(log_.StableLastIndex()) && MaybeCommit()) OnCommitAdvanced();
}

void Raft::HandleAppResp(const Message& m, Progress* pr) {
  pr->recent_active = true;
  if (m.reject) {
    LOG_DEBUG("raft: received append rejection",
              {{"id", id_}, {"from", m.from}, {"index", m.index}, {"hint", m.reject_hint}, {"log-term", m.log_term}});
    // The follower's hint is (index, term) with everything above index a
    // certain mismatch. Skip our own entries with terms above that term too:
    // the largest index <= hint in our log with term <= the follower's term.
    uint64_t next_probe = m.reject_hint;
    if (m.log_term > 0) next_probe = log_.FindConflictByTerm(m.reject_hint, m.log_term).first;
    if (pr->MaybeDecrTo(m.index, next_probe)) {
      if (pr->state == ProgressState::kReplicate) pr->BecomeProbe();
      SendAppend(m.from, true);
    }
    return;
  }
  if (m.index > log_.LastIndex()) {
    LOG_WARN("raft: ignoring an acknowledgement beyond our log", {{"id", id_}, {"from", m.from}, {"index", m.index}});
    return;
  }
  const bool old_paused = pr->IsPaused();
  if (pr->MaybeUpdate(m.index) || (pr->match == m.index && pr->state == ProgressState::kProbe)) {
    if (pr->state == ProgressState::kProbe) {
      pr->BecomeReplicate();
    } else {
      pr->inflights.FreeLE(m.index);
    }
    if (MaybeCommit()) {
      OnCommitAdvanced();
    } else if (old_paused && pr->sent_commit < log_.committed()) {
      // Commit updates skipped it while it was paused: bring it up to date.
      SendAppend(m.from, true);
    }
    while (SendAppend(m.from, false)) {
    }
    if (m.from == lead_transferee_ && pr->match == log_.LastIndex()) {
      LOG_INFO("raft: transferee is up to date; sending timeout-now", {{"id", id_}, {"to", m.from}});
      SendTimeoutNow(m.from);
    }
  }
}

void Raft::HandleHeartbeatResp(const Message& m, Progress* pr) {
  pr->recent_active = true;
  pr->msg_app_paused = false;
  // Appends may have been lost: free one slot of a full window so that
  // replication makes progress (a gap makes the follower reject, and the
  // rejection puts it back in probe state).
  if (pr->state == ProgressState::kReplicate && pr->inflights.Full()) pr->inflights.FreeFirstOne();
  if (pr->match < log_.LastIndex() || pr->state == ProgressState::kProbe) SendAppend(m.from, true);
  if (m.context.empty()) return;
  const std::set<uint64_t>* acks = read_only_.RecvAck(m.from, m.context);
  if (acks == nullptr || tracker_.Result(*acks) != VoteResult::kWon) return;
  for (ReadOnly::Status& rs : read_only_.Advance(m.context)) RespondToReadIndexReq(rs.req, rs.index);
}

void Raft::HandleTransferLeader(const Message& m, Progress* pr) {
  if (pr->is_learner) {
    LOG_DEBUG("raft: ignored leader transfer to a learner", {{"id", id_}, {"to", m.from}});
    return;
  }
  const uint64_t transferee = m.from;
  if (lead_transferee_ != kNone) {
    if (lead_transferee_ == transferee) return;  // already in progress
    AbortLeaderTransfer();
  }
  if (transferee == id_) return;  // already leader
  LOG_INFO("raft: starting leader transfer", {{"id", id_}, {"term", term_}, {"to", transferee}});
  // It must finish within an election timeout (TickHeartbeat aborts it).
  election_elapsed_ = 0;
  lead_transferee_ = transferee;
  if (pr->match == log_.LastIndex()) {
    SendTimeoutNow(transferee);
  } else {
    SendAppend(transferee, true);
  }
}

void Raft::ReportUnreachable(uint64_t id) {
  if (state_ != StateType::kLeader) return;
  Progress* pr = tracker_.Get(id);
  if (pr != nullptr && pr->state == ProgressState::kReplicate) pr->BecomeProbe();
}

// ---- read index ----

void Raft::DropReadIndex(const char* why) {
  LOG_DEBUG("raft: dropping read index request", {{"id", id_}, {"term", term_}, {"reason", why}});
  if (probe_ != nullptr) probe_->read_indexes_failed.Inc();
}

void Raft::HandleReadIndex(const Message& m) {
  if (tracker_.IsSingleton()) {
    // Nobody else can have been elected: the commit index is linearizable.
    RespondToReadIndexReq(m, log_.committed());
    return;
  }
  // Until an entry of our term is committed we may not know the true commit
  // index (entries of earlier terms may be committed without our knowing).
  if (!CommittedEntryInCurrentTerm()) {
    pending_read_index_.push_back(m);
    return;
  }
  SendReadIndexResponse(m);
}

void Raft::SendReadIndexResponse(const Message& m) {
  // Leadership is confirmed by a quorum answering a heartbeat that carries ctx.
  if (!read_only_.AddRequest(log_.committed(), m)) {
    DropReadIndex("duplicate request context");
    return;
  }
  const std::set<uint64_t>* acks = read_only_.RecvAck(id_, m.context);
  if (acks != nullptr && tracker_.Result(*acks) == VoteResult::kWon) {
    for (ReadOnly::Status& rs : read_only_.Advance(m.context)) RespondToReadIndexReq(rs.req, rs.index);
    return;
  }
  for (const auto& [id, pr] : tracker_.progress()) {
    if (id != id_) SendHeartbeat(id, m.context);
  }
}

void Raft::RespondToReadIndexReq(const Message& req, uint64_t read_index) {
  if (req.from == kNone || req.from == id_) {
    read_states_.push_back(ReadState{read_index, req.context});
    return;
  }
  Send(Message{.type = MessageType::kReadIndexResp, .to = req.from, .index = read_index, .context = req.context});
}

void Raft::ReleasePendingReadIndexMessages() {
  if (pending_read_index_.empty() || !CommittedEntryInCurrentTerm()) return;
  std::vector<Message> pending = std::move(pending_read_index_);
  pending_read_index_.clear();
  for (const Message& m : pending) SendReadIndexResponse(m);
}

// ---- membership ----

ConfState Raft::ApplyConfChange(const ConfChange& cc) {
  const uint64_t next = log_.LastIndex() + 1;
  switch (cc.type) {
    case ConfChangeType::kAddNode:
      tracker_.AddVoter(cc.node_id, next);
      break;
    case ConfChangeType::kAddLearnerNode:
      if (tracker_.IsVoter(cc.node_id)) {
        LOG_WARN("raft: ignoring demotion of a voter to learner (needs joint consensus)",
                 {{"id", id_}, {"node", cc.node_id}});
      } else {
        tracker_.AddLearner(cc.node_id, next);
      }
      break;
    case ConfChangeType::kRemoveNode:
      tracker_.Remove(cc.node_id);
      break;
  }
  LOG_INFO("raft: applied conf change", {{"id", id_}, {"type", static_cast<int>(cc.type)},
                                         {"node", cc.node_id}, {"voters", tracker_.voters().size()},
                                         {"learners", tracker_.learners().size()}});
  if (state_ == StateType::kLeader) {
    if (!tracker_.IsVoter(id_)) {
      // Removed (the entry is committed, so the rest of the cluster knows):
      // stop leading and let the remaining voters elect a leader.
      BecomeFollower(term_, kNone);
    } else {
      if (lead_transferee_ != kNone && tracker_.Get(lead_transferee_) == nullptr) AbortLeaderTransfer();
      // The quorum changed: removing a slow voter may commit entries.
      if (MaybeCommit()) OnCommitAdvanced();
      bcast_append_pending_ = true;  // start replicating to new peers
    }
  }
  return tracker_.GetConfState();
}

}  // namespace engram::raft
