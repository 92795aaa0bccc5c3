// The single-voter cluster: the configuration the server runs in this release.
#include <gtest/gtest.h>

#include "src/raft/raft_test_util.h"
#include "src/raft/raw_node.h"

namespace engram::raft {
namespace {

using testing::MakeConfig;
using testing::QuietLogs;

class SingleNodeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    QuietLogs();
    config_ = MakeConfig(1, {1}, &storage_, 1);
    config_.probe = &probe_;
    auto n = RawNode::Create(config_);
    ASSERT_TRUE(n.ok()) << n.status().ToString();
    node_ = std::move(n).value();
  }

  // Persist and advance one Ready, as the server does.
  Ready Cycle() {
    EXPECT_TRUE(node_->HasReady());
    Ready rd = node_->GetReady();
    EXPECT_TRUE(storage_.Append(rd.entries).ok());
    if (!rd.hard_state.Empty()) storage_.SetHardState(rd.hard_state);
    EXPECT_TRUE(rd.messages.empty()) << "a single voter has nobody to talk to";
    node_->Advance(rd);
    return rd;
  }

  void BecomeLeader() {
    ASSERT_TRUE(node_->Campaign().ok());
    Cycle();  // persists term, vote and the empty entry
    Cycle();  // commits the empty entry
    ASSERT_FALSE(node_->HasReady());
  }

  MemoryStorage storage_;
  RaftProbe probe_;
  Config config_;
  std::unique_ptr<RawNode> node_;
};

TEST_F(SingleNodeTest, FreshNodeStartsFollowerWithNothingToDo) {
  auto st = node_->Status();
  EXPECT_EQ(st.id, 1u);
  EXPECT_EQ(st.term, 0u);
  EXPECT_EQ(st.lead, kNone);
  EXPECT_EQ(st.state, StateType::kFollower);
  EXPECT_FALSE(node_->HasReady());
}

TEST_F(SingleNodeTest, CampaignBecomesLeaderAtNextTerm) {
  ASSERT_TRUE(node_->Campaign().ok());
  auto st = node_->Status();
  EXPECT_EQ(st.state, StateType::kLeader);
  EXPECT_EQ(st.term, 1u);
  EXPECT_EQ(st.lead, 1u);

  ASSERT_TRUE(node_->HasReady());
  Ready rd = node_->GetReady();
  ASSERT_TRUE(rd.soft_state.has_value());
  EXPECT_EQ(*rd.soft_state, (SoftState{1, StateType::kLeader}));
  EXPECT_EQ(rd.hard_state, (HardState{1, 1, 0}));
  ASSERT_EQ(rd.entries.size(), 1u);  // the new leader's empty entry
  EXPECT_EQ(rd.entries[0], (Entry{1, 1, EntryType::kNormal, ""}));
  EXPECT_TRUE(rd.committed_entries.empty()) << "not durable yet, so not committed";
  EXPECT_TRUE(rd.must_sync);
  EXPECT_FALSE(node_->HasReady()) << "no new Ready while one is outstanding";
  ASSERT_TRUE(storage_.Append(rd.entries).ok());
  storage_.SetHardState(rd.hard_state);
  node_->Advance(rd);

  rd = Cycle();
  EXPECT_FALSE(rd.soft_state.has_value());
  EXPECT_EQ(rd.hard_state, (HardState{1, 1, 1}));
  EXPECT_TRUE(rd.entries.empty());
  ASSERT_EQ(rd.committed_entries.size(), 1u);
  EXPECT_EQ(rd.committed_entries[0].index, 1u);
  EXPECT_FALSE(rd.must_sync) << "a commit-only change needs no fsync";
  EXPECT_FALSE(node_->HasReady());

  EXPECT_EQ(probe_.is_leader.Value(), 1);
  EXPECT_EQ(probe_.has_leader.Value(), 1);
  EXPECT_EQ(probe_.leader_changes_seen.Value(), 1u);
  EXPECT_EQ(probe_.proposals_committed.Value(), 1);
  EXPECT_EQ(probe_.term.Value(), 1);
}

TEST_F(SingleNodeTest, CampaignWithPreVoteStillTakesOneTerm) {
  config_.pre_vote = true;
  MemoryStorage s;
  config_.storage = &s;
  auto n = RawNode::Create(config_);
  ASSERT_TRUE(n.ok());
  ASSERT_TRUE((*n)->Campaign().ok());
  EXPECT_EQ((*n)->Status().state, StateType::kLeader);
  EXPECT_EQ((*n)->Status().term, 1u);
}

TEST_F(SingleNodeTest, ElectionTimeoutMakesItLeaderWithoutCampaign) {
  for (int i = 0; i < 2 * config_.election_tick; i++) node_->Tick();
  EXPECT_EQ(node_->Status().state, StateType::kLeader);
  EXPECT_EQ(node_->Status().term, 1u);
}

TEST_F(SingleNodeTest, ProposalsArePersistedThenCommittedOnTheNextReady) {
  BecomeLeader();
  // A batch of clients: every proposal goes into one Ready (one fsync).
  for (int i = 0; i < 100; i++) ASSERT_TRUE(node_->Propose("v" + std::to_string(i)).ok());
  ASSERT_TRUE(node_->HasReady());
  Ready rd = node_->GetReady();
  ASSERT_EQ(rd.entries.size(), 100u);
  EXPECT_EQ(rd.entries.front().index, 2u);
  EXPECT_EQ(rd.entries.back().index, 101u);
  EXPECT_EQ(rd.entries.back().term, 1u);
  EXPECT_EQ(rd.entries.back().data, "v99");
  EXPECT_TRUE(rd.committed_entries.empty()) << "committing before persistence is forbidden";
  EXPECT_TRUE(rd.hard_state.Empty());
  EXPECT_TRUE(rd.must_sync);
  EXPECT_EQ(node_->Status().commit, 1u);
  ASSERT_TRUE(storage_.Append(rd.entries).ok());
  node_->Advance(rd);

  EXPECT_EQ(node_->Status().commit, 101u);
  rd = Cycle();
  EXPECT_EQ(rd.hard_state.commit, 101u);
  ASSERT_EQ(rd.committed_entries.size(), 100u);
  EXPECT_EQ(rd.committed_entries.front().data, "v0");
  EXPECT_EQ(rd.committed_entries.back().data, "v99");
  EXPECT_EQ(node_->Status().applied, 101u);
  EXPECT_FALSE(node_->HasReady());
}

TEST_F(SingleNodeTest, ProposeBatchKeepsOrderInOneReady) {
  BecomeLeader();
  ASSERT_TRUE(node_->ProposeBatch({"a", "b", "c"}).ok());
  ASSERT_TRUE(node_->Propose("d").ok());
  Ready rd = Cycle();
  ASSERT_EQ(rd.entries.size(), 4u);
  EXPECT_EQ(rd.entries[0].data, "a");
  EXPECT_EQ(rd.entries[3].data, "d");
  rd = Cycle();
  ASSERT_EQ(rd.committed_entries.size(), 4u);
  EXPECT_EQ(rd.committed_entries[2].data, "c");
}

TEST_F(SingleNodeTest, ProposalsDuringAnOutstandingReadyGoToTheNextOne) {
  BecomeLeader();
  ASSERT_TRUE(node_->Propose("a").ok());
  Ready rd = node_->GetReady();
  ASSERT_EQ(rd.entries.size(), 1u);
  ASSERT_TRUE(node_->Propose("b").ok());  // while "a" is being persisted
  ASSERT_TRUE(storage_.Append(rd.entries).ok());
  node_->Advance(rd);
  EXPECT_EQ(node_->Status().commit, 2u) << "only a is durable";
  rd = Cycle();
  ASSERT_EQ(rd.entries.size(), 1u);
  EXPECT_EQ(rd.entries[0].data, "b");
  ASSERT_EQ(rd.committed_entries.size(), 1u);
  EXPECT_EQ(rd.committed_entries[0].data, "a");
  rd = Cycle();
  ASSERT_EQ(rd.committed_entries.size(), 1u);
  EXPECT_EQ(rd.committed_entries[0].data, "b");
}

TEST_F(SingleNodeTest, ProposeWithoutLeadershipIsDropped) {
  Status s = node_->Propose("x");
  EXPECT_EQ(s.code(), Code::kFailedPrecondition);
  EXPECT_EQ(s.message(), "raft proposal dropped");
  EXPECT_EQ(probe_.proposals_failed.Value(), 1u);
  EXPECT_FALSE(node_->HasReady());
}

TEST_F(SingleNodeTest, CommittedEntriesAreLimitedPerReady) {
  config_.max_committed_size_per_ready = 3 * EntrySize(Entry{0, 0, EntryType::kNormal, "xxxxxxxx"});
  MemoryStorage s;
  config_.storage = &s;
  auto n = RawNode::Create(config_);
  ASSERT_TRUE(n.ok());
  RawNode& node = **n;
  ASSERT_TRUE(node.Campaign().ok());
  for (int i = 0; i < 10; i++) ASSERT_TRUE(node.Propose("xxxxxxxx").ok());
  std::vector<Entry> applied;
  int readies = 0;
  while (node.HasReady()) {
    Ready rd = node.GetReady();
    ASSERT_TRUE(s.Append(rd.entries).ok());
    if (!rd.hard_state.Empty()) s.SetHardState(rd.hard_state);
    EXPECT_LE(rd.committed_entries.size(), 3u);
    applied.insert(applied.end(), rd.committed_entries.begin(), rd.committed_entries.end());
    node.Advance(rd);
    readies++;
  }
  ASSERT_EQ(applied.size(), 11u);
  for (size_t i = 0; i < applied.size(); i++) EXPECT_EQ(applied[i].index, i + 1);
  EXPECT_GE(readies, 5);
}

TEST_F(SingleNodeTest, RestartContinuesTermCommitAndApplied) {
  BecomeLeader();
  for (int i = 0; i < 5; i++) ASSERT_TRUE(node_->Propose("v" + std::to_string(i)).ok());
  Cycle();
  Cycle();  // applied through 6
  ASSERT_TRUE(node_->Propose("unapplied").ok());
  Ready rd = node_->GetReady();  // persisted, but the process dies before the next Ready
  ASSERT_TRUE(storage_.Append(rd.entries).ok());
  node_->Advance(rd);
  ASSERT_EQ(storage_.LastIndex(), 7u);
  ASSERT_EQ(storage_.hard_state(), (HardState{1, 1, 6}));

  // Restart from the storage; the state machine applied 4 of them (say).
  config_.applied = 4;
  auto n = RawNode::Create(config_);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  node_ = std::move(n).value();
  auto st = node_->Status();
  EXPECT_EQ(st.state, StateType::kFollower);
  EXPECT_EQ(st.term, 1u);
  EXPECT_EQ(st.commit, 6u);
  EXPECT_EQ(st.applied, 4u);

  rd = Cycle();  // re-applies 5..6 (committed, not applied)
  EXPECT_TRUE(rd.hard_state.Empty()) << "the loaded hard state is not reported again";
  EXPECT_TRUE(rd.entries.empty());
  ASSERT_EQ(rd.committed_entries.size(), 2u);
  EXPECT_EQ(rd.committed_entries[0].index, 5u);
  EXPECT_EQ(rd.committed_entries[1].index, 6u);
  EXPECT_FALSE(node_->HasReady());

  ASSERT_TRUE(node_->Campaign().ok());
  EXPECT_EQ(node_->Status().term, 2u);
  EXPECT_EQ(node_->Status().state, StateType::kLeader);
  EXPECT_EQ(node_->LocalReadIndex(), 0u)
      << "commit 6 is term 1's: 7 may have been acknowledged, so no local read before term 2 commits";
  rd = Cycle();
  ASSERT_EQ(rd.entries.size(), 1u);
  EXPECT_EQ(rd.entries[0], (Entry{2, 8, EntryType::kNormal, ""}));
  EXPECT_EQ(rd.hard_state, (HardState{2, 1, 6}));
  rd = Cycle();  // the empty entry of term 2 commits 7 (term 1) with it
  EXPECT_EQ(rd.hard_state.commit, 8u);
  ASSERT_EQ(rd.committed_entries.size(), 2u);
  EXPECT_EQ(rd.committed_entries[0].data, "unapplied");
  EXPECT_EQ(rd.committed_entries[1].index, 8u);
  EXPECT_EQ(node_->LocalReadIndex(), 8u);
}

TEST_F(SingleNodeTest, RestartAfterCompactedPrefix) {
  // A WAL replay whose first entry is 101: the prefix up to 100 (term 3) is compacted.
  MemoryStorage s;
  s.ResetCompacted(100, 3);
  std::vector<Entry> ents;
  for (uint64_t i = 101; i <= 105; i++) ents.push_back(Entry{4, i, EntryType::kNormal, "e" + std::to_string(i)});
  ASSERT_TRUE(s.Append(ents).ok());
  s.SetHardState(HardState{4, 1, 103});
  s.SetConfState(ConfState{{1}, {}});
  Config c = MakeConfig(1, {}, &s, 1);
  c.applied = 102;
  auto n = RawNode::Create(c);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  RawNode& node = **n;
  EXPECT_EQ(node.Status().commit, 103u);
  EXPECT_EQ(node.Status().applied, 102u);
  Ready rd = node.GetReady();
  ASSERT_EQ(rd.committed_entries.size(), 1u);
  EXPECT_EQ(rd.committed_entries[0].index, 103u);
  node.Advance(rd);
  ASSERT_TRUE(node.Campaign().ok());
  rd = node.GetReady();
  ASSERT_EQ(rd.entries.size(), 1u);
  EXPECT_EQ(rd.entries[0].index, 106u);
  EXPECT_EQ(rd.entries[0].term, 5u);
  ASSERT_TRUE(s.Append(rd.entries).ok());
  s.SetHardState(rd.hard_state);
  node.Advance(rd);
  rd = node.GetReady();
  EXPECT_EQ(rd.hard_state.commit, 106u);
  ASSERT_EQ(rd.committed_entries.size(), 3u);
  EXPECT_EQ(rd.committed_entries[0].index, 104u);
  node.Advance(rd);
}

TEST_F(SingleNodeTest, CreateRejectsBadConfigAndState) {
  Config c = config_;
  c.id = 0;
  EXPECT_EQ(RawNode::Create(c).status().code(), Code::kInvalidArgument);
  c = config_;
  c.storage = nullptr;
  EXPECT_EQ(RawNode::Create(c).status().code(), Code::kInvalidArgument);
  c = config_;
  c.election_tick = 1;
  EXPECT_EQ(RawNode::Create(c).status().code(), Code::kInvalidArgument);
  c = config_;
  c.voters.clear();
  MemoryStorage empty;
  c.storage = &empty;
  EXPECT_EQ(RawNode::Create(c).status().code(), Code::kInvalidArgument);

  MemoryStorage s;  // commit beyond the log
  s.SetHardState(HardState{1, 1, 5});
  c = config_;
  c.storage = &s;
  EXPECT_EQ(RawNode::Create(c).status().code(), Code::kCorruption);

  MemoryStorage s2;  // applied beyond commit
  ASSERT_TRUE(s2.Append({Entry{1, 1, EntryType::kNormal, ""}, Entry{1, 2, EntryType::kNormal, ""}}).ok());
  s2.SetHardState(HardState{1, 1, 1});
  c = config_;
  c.storage = &s2;
  c.applied = 2;
  EXPECT_EQ(RawNode::Create(c).status().code(), Code::kCorruption);
}

TEST_F(SingleNodeTest, StepRejectsLocalMessagesAndUnknownPeers) {
  EXPECT_EQ(node_->Step(Message{.type = MessageType::kHup, .to = 1}).code(), Code::kInvalidArgument);
  EXPECT_EQ(node_->Step(Message{.type = MessageType::kBeat, .to = 1}).code(), Code::kInvalidArgument);
  EXPECT_EQ(node_->Step(Message{.type = MessageType::kAppResp, .from = 9, .to = 1, .term = 1}).code(),
            Code::kNotFound);
  EXPECT_EQ(node_->Step(Message{.type = MessageType::kApp, .from = 2, .to = 3, .term = 1}).code(),
            Code::kInvalidArgument);
  // Entries must follow m.index consecutively, with terms in (0, m.term].
  EXPECT_EQ(node_->Step(Message{.type = MessageType::kApp, .from = 2, .to = 1, .term = 1, .index = 0,
                                .entries = {Entry{1, 2, EntryType::kNormal, ""}}})
                .code(),
            Code::kInvalidArgument);
  EXPECT_EQ(node_->Step(Message{.type = MessageType::kApp, .from = 2, .to = 1, .term = 1, .index = 0,
                                .entries = {Entry{2, 1, EntryType::kNormal, ""}}})
                .code(),
            Code::kInvalidArgument);
}

TEST_F(SingleNodeTest, ReadIndexAnswersAtOnceWithTheCommitIndex) {
  BecomeLeader();
  ASSERT_TRUE(node_->Propose("a").ok());
  Cycle();  // "a" persisted (index 2), committed in memory
  node_->ReadIndex("ctx1");
  Ready rd = Cycle();
  ASSERT_EQ(rd.read_states.size(), 1u);
  EXPECT_EQ(rd.read_states[0].request_ctx, "ctx1");
  EXPECT_EQ(rd.read_states[0].index, 2u);
  ASSERT_EQ(rd.committed_entries.size(), 1u);  // the reader waits for applied >= 2
}

// What ReadIndex would answer at once, without a Ready: only for the leader
// that is the sole voter, once an entry of its term is committed.
TEST_F(SingleNodeTest, LocalReadIndexOnlyForTheSoleVoterLeaderWithItsTermCommitted) {
  EXPECT_EQ(node_->LocalReadIndex(), 0u) << "a follower";
  ASSERT_TRUE(node_->Campaign().ok());
  EXPECT_EQ(node_->LocalReadIndex(), 0u) << "leader, but its empty entry is not committed";
  Cycle();  // persists term, vote and the empty entry
  EXPECT_EQ(node_->LocalReadIndex(), 1u);
  Cycle();
  ASSERT_TRUE(node_->Propose("a").ok());
  Cycle();  // "a" persisted (index 2), committed in memory
  EXPECT_EQ(node_->LocalReadIndex(), 2u) << "the commit index, as ReadIndex answers";
  node_->ReadIndex("ctx");
  Ready rd = Cycle();
  ASSERT_EQ(rd.read_states.size(), 1u);
  EXPECT_EQ(rd.read_states[0].index, node_->LocalReadIndex());
  // A second voter: a quorum must confirm leadership, never a local answer.
  ASSERT_TRUE(node_->ProposeConfChange(ConfChange{ConfChangeType::kAddNode, 2, "http://n2"}).ok());
  rd = node_->GetReady();
  ASSERT_TRUE(storage_.Append(rd.entries).ok());
  if (!rd.hard_state.Empty()) storage_.SetHardState(rd.hard_state);
  node_->Advance(rd);
  rd = node_->GetReady();
  ASSERT_EQ(rd.committed_entries.size(), 1u);
  auto cc = DecodeConfChange(rd.committed_entries[0].data);
  ASSERT_TRUE(cc.ok());
  EXPECT_EQ(node_->ApplyConfChange(*cc), (ConfState{{1, 2}, {}}));
  EXPECT_EQ(node_->LocalReadIndex(), 0u);
}

TEST_F(SingleNodeTest, ReadIndexWithoutLeaderIsDropped) {
  node_->ReadIndex("ctx");
  EXPECT_FALSE(node_->HasReady());
  EXPECT_EQ(probe_.read_indexes_failed.Value(), 1u);
}

TEST_F(SingleNodeTest, AdvanceWithoutPersistingPanics) {
  BecomeLeader();
  ASSERT_TRUE(node_->Propose("a").ok());
  Ready rd = node_->GetReady();
  EXPECT_DEATH(node_->Advance(rd), "log mismatch in Advance");
}

TEST_F(SingleNodeTest, AdvanceWithoutGetReadyPanics) {
  Ready rd;
  EXPECT_DEATH(node_->Advance(rd), "without an outstanding Ready");
}

TEST_F(SingleNodeTest, ConfChangeRoundTripAndOneAtATime) {
  BecomeLeader();
  ConfChange add{ConfChangeType::kAddLearnerNode, 2, "http://n2"};
  ASSERT_TRUE(node_->ProposeConfChange(add).ok());
  EXPECT_EQ(node_->ProposeConfChange(ConfChange{ConfChangeType::kAddNode, 3, ""}).code(),
            Code::kFailedPrecondition)
      << "one change at a time";
  Cycle();
  Ready rd = node_->GetReady();
  ASSERT_TRUE(storage_.Append(rd.entries).ok());
  ASSERT_EQ(rd.committed_entries.size(), 1u);
  ASSERT_EQ(rd.committed_entries[0].type, EntryType::kConfChange);
  auto cc = DecodeConfChange(rd.committed_entries[0].data);
  ASSERT_TRUE(cc.ok());
  EXPECT_EQ(*cc, add);
  ConfState cs = node_->ApplyConfChange(*cc);
  EXPECT_EQ(cs, (ConfState{{1}, {2}}));
  node_->Advance(rd);
  // The learner does not count for the quorum: a proposal still commits alone.
  ASSERT_TRUE(node_->Propose("x").ok());
  rd = node_->GetReady();
  ASSERT_TRUE(storage_.Append(rd.entries).ok());
  EXPECT_EQ(rd.messages.size(), 1u) << "appends go to the learner";
  node_->Advance(rd);
  EXPECT_EQ(node_->Status().commit, rd.entries.back().index);
  // Now another conf change is allowed; removing the last voter is not.
  EXPECT_EQ(node_->ProposeConfChange(ConfChange{ConfChangeType::kRemoveNode, 1, ""}).code(),
            Code::kInvalidArgument);
}

// The server's bootstrap: the WAL starts with a committed conf change (in the
// server's own encoding) at term 1; the node may campaign once it is applied.
TEST_F(SingleNodeTest, BootstrapFromCommittedConfChangeThenCampaign) {
  MemoryStorage s;
  ASSERT_TRUE(s.Append({Entry{1, 1, EntryType::kConfChange, "server-encoded member"}}).ok());
  s.SetHardState(HardState{1, 0, 1});
  s.SetConfState(ConfState{{7}, {}});
  Config c = MakeConfig(7, {7}, &s, 1);
  auto n = RawNode::Create(c);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  RawNode& node = **n;
  EXPECT_EQ(node.Campaign().code(), Code::kFailedPrecondition) << "entry 1 is not applied yet";
  Ready rd = node.GetReady();
  ASSERT_EQ(rd.committed_entries.size(), 1u);
  EXPECT_EQ(rd.committed_entries[0].data, "server-encoded member");
  node.Advance(rd);  // handed to the apply thread
  EXPECT_EQ(node.Status().applied, 1u);
  ASSERT_TRUE(node.Campaign().ok());
  EXPECT_EQ(node.Status().state, StateType::kLeader);
  EXPECT_EQ(node.Status().term, 2u);
  ASSERT_TRUE(node.Campaign().ok()) << "already leader: nothing to do";
  ASSERT_TRUE(node.Propose("x").ok());
  rd = node.GetReady();
  ASSERT_EQ(rd.entries.size(), 2u);  // the empty entry of term 2, then x
  ASSERT_TRUE(s.Append(rd.entries).ok());
  s.SetHardState(rd.hard_state);
  node.Advance(rd);
  rd = node.GetReady();
  ASSERT_EQ(rd.committed_entries.size(), 2u);
  EXPECT_EQ(rd.committed_entries[1].data, "x");
  node.Advance(rd);
}

TEST_F(SingleNodeTest, ProposeConfChangeWithCallerEncoding) {
  BecomeLeader();
  ConfChange cc{ConfChangeType::kAddLearnerNode, 2, ""};
  ASSERT_TRUE(node_->ProposeConfChange(cc, "engrampb bytes").ok());
  Ready rd = Cycle();
  ASSERT_EQ(rd.entries.size(), 1u);
  EXPECT_EQ(rd.entries[0].type, EntryType::kConfChange);
  EXPECT_EQ(rd.entries[0].data, "engrampb bytes");
  EXPECT_EQ(node_->ProposeConfChange(ConfChange{ConfChangeType::kRemoveNode, 1, ""}, "x").code(),
            Code::kInvalidArgument);
}

TEST(ConfChangeEncodingTest, RoundTripAndCorruption) {
  ConfChange cc{ConfChangeType::kRemoveNode, 0x1122334455667788ULL, std::string("ctx\0x", 5)};
  auto back = DecodeConfChange(EncodeConfChange(cc));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, cc);
  EXPECT_EQ(DecodeConfChange("").status().code(), Code::kCorruption);
  std::string bad = EncodeConfChange(cc);
  bad[1] = 7;
  EXPECT_EQ(DecodeConfChange(bad).status().code(), Code::kCorruption);
  bad[0] = 2;
  EXPECT_EQ(DecodeConfChange(bad).status().code(), Code::kCorruption);
}

}  // namespace
}  // namespace engram::raft
