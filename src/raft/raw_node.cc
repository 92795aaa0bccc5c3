#include "src/raft/raw_node.h"

#include <utility>

#include "src/common/log.h"
#include "src/raft/raft.h"

namespace engram::raft {

const char* MessageTypeName(MessageType t) {
  switch (t) {
    case MessageType::kHup: return "MsgHup";
    case MessageType::kBeat: return "MsgBeat";
    case MessageType::kProp: return "MsgProp";
    case MessageType::kApp: return "MsgApp";
    case MessageType::kAppResp: return "MsgAppResp";
    case MessageType::kVote: return "MsgVote";
    case MessageType::kVoteResp: return "MsgVoteResp";
    case MessageType::kPreVote: return "MsgPreVote";
    case MessageType::kPreVoteResp: return "MsgPreVoteResp";
    case MessageType::kHeartbeat: return "MsgHeartbeat";
    case MessageType::kHeartbeatResp: return "MsgHeartbeatResp";
    case MessageType::kReadIndex: return "MsgReadIndex";
    case MessageType::kReadIndexResp: return "MsgReadIndexResp";
    case MessageType::kTimeoutNow: return "MsgTimeoutNow";
    case MessageType::kTransferLeader: return "MsgTransferLeader";
  }
  return "MsgUnknown";
}

const char* StateTypeName(StateType s) {
  switch (s) {
    case StateType::kFollower: return "StateFollower";
    case StateType::kCandidate: return "StateCandidate";
    case StateType::kLeader: return "StateLeader";
    case StateType::kPreCandidate: return "StatePreCandidate";
  }
  return "StateUnknown";
}

namespace {

bool IsResponse(MessageType t) {
  return t == MessageType::kAppResp || t == MessageType::kVoteResp || t == MessageType::kPreVoteResp ||
         t == MessageType::kHeartbeatResp;
}

}  // namespace

RawNode::RawNode(std::unique_ptr<Raft> raft) : raft_(std::move(raft)) {
  prev_soft_ = raft_->soft_state();
  prev_hard_ = raft_->hard_state();
}

RawNode::~RawNode() = default;

Result<std::unique_ptr<RawNode>> RawNode::Create(const Config& config) {
  auto r = Raft::Create(config);
  if (!r.ok()) return r.status();
  std::unique_ptr<RawNode> node(new RawNode(std::move(r).value()));
  if (config.probe != nullptr) config.probe->term.Set(static_cast<int64_t>(node->prev_hard_.term));
  return node;
}

void RawNode::Tick() { raft_->Tick(); }

engram::Status RawNode::Campaign() {
  if (raft_->state() == StateType::kLeader) return engram::Status::OK();
  if (!raft_->Promotable()) return engram::Status::FailedPrecondition("raft: this node is not a voter");
  if (raft_->HasUnappliedConfChanges()) {
    return engram::Status::FailedPrecondition("raft: cannot campaign: there are unapplied conf changes");
  }
  return raft_->Step(Message{.type = MessageType::kHup});
}

engram::Status RawNode::Propose(std::string data) {
  std::vector<Entry> ents(1);
  ents[0].data = std::move(data);
  engram::Status s = raft_->Propose(std::move(ents));
  if (!s.ok() && raft_->probe() != nullptr) raft_->probe()->proposals_failed.Inc();
  return s;
}

engram::Status RawNode::ProposeBatch(std::vector<std::string> datas) {
  if (datas.empty()) return engram::Status::OK();
  std::vector<Entry> ents(datas.size());
  for (size_t i = 0; i < datas.size(); i++) ents[i].data = std::move(datas[i]);
  engram::Status s = raft_->Propose(std::move(ents));
  if (!s.ok() && raft_->probe() != nullptr) raft_->probe()->proposals_failed.Inc(datas.size());
  return s;
}

engram::Status RawNode::ProposeConfChange(const ConfChange& cc) { return ProposeConfChange(cc, EncodeConfChange(cc)); }

engram::Status RawNode::ProposeConfChange(const ConfChange& cc, std::string data) {
  engram::Status s;
  const ProgressTracker& tr = raft_->tracker();
  if (cc.node_id == kNone) {
    s = engram::Status::InvalidArgument("raft: conf change for node id 0");
  } else if (cc.type == ConfChangeType::kRemoveNode && tr.IsVoter(cc.node_id) && tr.voters().size() == 1) {
    s = engram::Status::InvalidArgument("raft: removing the last voter");
  } else if (cc.type == ConfChangeType::kAddLearnerNode && tr.IsVoter(cc.node_id)) {
    s = engram::Status::InvalidArgument("raft: demoting a voter to learner is not supported");
  } else {
    std::vector<Entry> ents(1);
    ents[0].type = EntryType::kConfChange;
    ents[0].data = std::move(data);
    s = raft_->Propose(std::move(ents));
  }
  if (!s.ok() && raft_->probe() != nullptr) raft_->probe()->proposals_failed.Inc();
  return s;
}

ConfState RawNode::ApplyConfChange(const ConfChange& cc) { return raft_->ApplyConfChange(cc); }

engram::Status RawNode::Step(const Message& m) {
  if (m.type == MessageType::kHup || m.type == MessageType::kBeat) {
    return engram::Status::InvalidArgument("raft: cannot step raft local message");
  }
  if (m.to != raft_->id()) {
    return engram::Status::InvalidArgument("raft: message to " + std::to_string(m.to) + " stepped into node " +
                                           std::to_string(raft_->id()));
  }
  if (IsResponse(m.type) && raft_->tracker().Get(m.from) == nullptr) {
    return engram::Status::NotFound("raft: cannot step as peer not found");
  }
  if (m.type == MessageType::kApp) {
    for (size_t i = 0; i < m.entries.size(); i++) {
      if (m.entries[i].index != m.index + 1 + i || m.entries[i].term == 0 || m.entries[i].term > m.term) {
        return engram::Status::InvalidArgument("raft: malformed append message from " + std::to_string(m.from));
      }
    }
  }
  engram::Status s = raft_->Step(m);
  if (!s.ok() && m.type == MessageType::kProp && raft_->probe() != nullptr) raft_->probe()->proposals_failed.Inc();
  return s;
}

void RawNode::ReadIndex(std::string ctx) {
  (void)raft_->Step(Message{.type = MessageType::kReadIndex, .context = std::move(ctx)});
}

uint64_t RawNode::LocalReadIndex() const {
  const Raft& r = *raft_;
  if (r.state() != StateType::kLeader || !r.tracker().IsSingleton() || !r.CommittedEntryInCurrentTerm()) return 0;
  return r.log().committed();
}

void RawNode::TransferLeader(uint64_t transferee) {
  (void)raft_->Step(Message{.type = MessageType::kTransferLeader, .from = transferee});
}

void RawNode::ReportUnreachable(uint64_t id) { raft_->ReportUnreachable(id); }

bool RawNode::HasReady() const {
  if (ready_outstanding_) return false;
  const Raft& r = *raft_;
  if (r.soft_state() != prev_soft_) return true;
  const HardState hs = r.hard_state();
  if (!hs.Empty() && hs != prev_hard_) return true;
  if (!r.log().UnstableEntries().empty()) return true;
  if (!r.msgs().empty() || !r.read_states().empty()) return true;
  if (r.log().HasNextCommittedEnts(r.log().applied())) return true;
  return r.HasPendingBroadcast();
}

Ready RawNode::GetReady() {
  if (ready_outstanding_) ENGRAM_PANIC("raft: GetReady() called again before Advance()");
  raft_->FlushBroadcast();
  Ready rd;
  RaftProbe* probe = raft_->probe();

  const SoftState ss = raft_->soft_state();
  if (ss != prev_soft_) {
    rd.soft_state = ss;
    if (probe != nullptr) {
      if (ss.lead != kNone && ss.lead != prev_soft_.lead) probe->leader_changes_seen.Inc();
      probe->has_leader.Set(ss.lead != kNone ? 1 : 0);
      probe->is_leader.Set(ss.state == StateType::kLeader ? 1 : 0);
    }
    prev_soft_ = ss;
  }

  rd.entries = raft_->log().UnstableEntries();
  const HardState hs = raft_->hard_state();
  if (!hs.Empty() && hs != prev_hard_) {
    if (hs.commit < prev_hard_.commit || hs.term < prev_hard_.term) {
      ENGRAM_PANIC("raft: hard state went backwards", {{"term", hs.term}, {"prev-term", prev_hard_.term},
                                                       {"commit", hs.commit}, {"prev-commit", prev_hard_.commit}});
    }
    rd.hard_state = hs;
    rd.must_sync = hs.term != prev_hard_.term || hs.vote != prev_hard_.vote;
    if (probe != nullptr) probe->term.Set(static_cast<int64_t>(hs.term));
    prev_hard_ = hs;
  }
  if (!rd.entries.empty()) rd.must_sync = true;

  rd.committed_entries = raft_->log().NextCommittedEnts(raft_->log().applied());
  ready_applying_ = rd.committed_entries.empty() ? raft_->log().applied() : rd.committed_entries.back().index;

  rd.messages = std::move(raft_->msgs());
  raft_->msgs().clear();
  rd.read_states = std::move(raft_->read_states());
  raft_->read_states().clear();
  ready_outstanding_ = true;
  return rd;
}

void RawNode::Advance(const Ready& rd) {
  if (!ready_outstanding_) ENGRAM_PANIC("raft: Advance() called without an outstanding Ready");
  RaftLog& log = raft_->log();
  if (!rd.committed_entries.empty()) {
    if (rd.committed_entries.back().index != ready_applying_) {
      ENGRAM_PANIC("raft: Advance() with committed entries that GetReady() did not hand out",
                   {{"last", rd.committed_entries.back().index}, {"expected", ready_applying_}});
    }
    log.AppliedTo(ready_applying_);
  }
  if (!rd.entries.empty()) {
    const Entry& last = rd.entries.back();
    // If the entry is no longer unstable with that term, a newer leader's
    // entries replaced it after GetReady(): they stay unstable for the next Ready.
    if (log.StableTo(last.index, last.term)) {
      auto t = log.storage()->Term(last.index);
      if (!t.ok() || *t != last.term) {
        ENGRAM_PANIC("raft: log mismatch in Advance(): Storage does not hold the Ready's entries "
                     "(append them to MemoryStorage before Advance)",
                     {{"index", last.index}, {"term", last.term},
                      {"storage-term", t.ok() ? *t : 0}, {"storage-last", log.storage()->LastIndex()}});
      }
    }
  }
  raft_->OnPersisted();
  if (!rd.hard_state.Empty() && raft_->probe() != nullptr) {
    raft_->probe()->proposals_committed.Set(static_cast<int64_t>(rd.hard_state.commit));
  }
  ready_outstanding_ = false;
}

RawNode::BasicStatus RawNode::Status() const {
  return BasicStatus{raft_->id(), raft_->lead(), raft_->term(), raft_->log().committed(), raft_->log().applied(),
                     raft_->state()};
}

HardState RawNode::hard_state() const { return raft_->hard_state(); }

ConfState RawNode::conf_state() const { return raft_->tracker().GetConfState(); }

}  // namespace engram::raft
