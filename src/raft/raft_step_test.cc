// Message-level rules: one node, hand-made messages, the responses it sends.
#include <gtest/gtest.h>

#include "src/raft/raft_test_util.h"

namespace engram::raft {
namespace {

using testing::MakeConfig;
using testing::Peer;

std::vector<Entry> Ents(std::vector<std::pair<uint64_t, uint64_t>> index_term) {
  std::vector<Entry> out;
  for (auto [i, t] : index_term) out.push_back(Entry{t, i, EntryType::kNormal, ""});
  return out;
}

// A node of {1,2,3} (id 1 unless told) whose storage holds `log` and `hs`.
std::unique_ptr<Peer> MakePeer(std::vector<Entry> log, HardState hs, uint64_t id = 1,
                               std::function<void(Config&)> tweak = {}) {
  testing::QuietLogs();
  auto p = std::make_unique<Peer>();
  p->id = id;
  p->storage = std::make_unique<MemoryStorage>();
  EXPECT_TRUE(p->storage->Append(log).ok());
  p->storage->SetHardState(hs);
  p->config = MakeConfig(id, {1, 2, 3}, p->storage.get(), 1);
  p->config.probe = &p->probe;
  if (tweak) tweak(p->config);
  auto n = RawNode::Create(p->config);
  EXPECT_TRUE(n.ok()) << n.status().ToString();
  p->node = std::move(n).value();
  return p;
}

// Steps m into p and returns what p sends in response.
std::vector<Message> StepAndDrain(Peer& p, Message m) {
  m.to = p.id;
  Status s = p.node->Step(m);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return p.Drain();
}

std::vector<Message> OfType(const std::vector<Message>& ms, MessageType t) {
  std::vector<Message> out;
  for (const Message& m : ms) {
    if (m.type == t) out.push_back(m);
  }
  return out;
}

// Makes p (id 1) leader of {1,2,3} at its next term with votes from 2.
void ElectPeer(Peer& p) {
  ASSERT_TRUE(p.node->Campaign().ok());
  const uint64_t term = p.node->Status().term;
  p.Drain();
  StepAndDrain(p, Message{.type = MessageType::kVoteResp, .from = 2, .term = term});
  ASSERT_EQ(p.node->Status().state, StateType::kLeader);
}

TEST(RaftStepTest, HigherTermAppendMakesLeaderStepDown) {
  auto p = MakePeer({}, {});
  ElectPeer(*p);
  auto out = StepAndDrain(*p, Message{.type = MessageType::kApp, .from = 3, .term = 5, .log_term = 0, .index = 0});
  auto st = p->node->Status();
  EXPECT_EQ(st.state, StateType::kFollower);
  EXPECT_EQ(st.term, 5u);
  EXPECT_EQ(st.lead, 3u);
  EXPECT_EQ(p->storage->hard_state().term, 5u) << "the new term is persisted";
  EXPECT_EQ(p->storage->hard_state().vote, kNone);
}

TEST(RaftStepTest, HigherTermVoteRequestResetsLeaderAndVote) {
  auto p = MakePeer({}, {});
  ElectPeer(*p);
  auto out = StepAndDrain(*p, Message{.type = MessageType::kVote, .from = 2, .term = 9, .log_term = 1, .index = 1});
  EXPECT_EQ(p->node->Status().state, StateType::kFollower);
  EXPECT_EQ(p->node->Status().term, 9u);
  EXPECT_EQ(p->node->Status().lead, kNone);
  auto resp = OfType(out, MessageType::kVoteResp);
  ASSERT_EQ(resp.size(), 1u);
  EXPECT_FALSE(resp[0].reject) << "2's log (1,1) is as up to date as ours";
  EXPECT_EQ(p->storage->hard_state().vote, 2u);
}

TEST(RaftStepTest, LowerTermMessagesAreIgnored) {
  auto p = MakePeer(Ents({{1, 2}}), HardState{3, 0, 0});
  auto out = StepAndDrain(*p, Message{.type = MessageType::kApp, .from = 2, .term = 2, .log_term = 2, .index = 1,
                                      .entries = Ents({{2, 2}})});
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(p->storage->LastIndex(), 1u);
  out = StepAndDrain(*p, Message{.type = MessageType::kVote, .from = 2, .term = 2, .log_term = 5, .index = 9});
  EXPECT_TRUE(out.empty());
}

TEST(RaftStepTest, LowerTermAppendGetsAnAnswerWithCheckQuorum) {
  auto p = MakePeer({}, HardState{3, 0, 0}, 1, [](Config& c) { c.check_quorum = true; });
  auto out = StepAndDrain(*p, Message{.type = MessageType::kHeartbeat, .from = 2, .term = 2});
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].type, MessageType::kAppResp);
  EXPECT_EQ(out[0].term, 3u) << "tells the stale leader about the newer term";
}

TEST(RaftStepTest, VoteRules) {
  struct Case {
    MessageType type;
    uint64_t term, log_term, index;
    HardState hs;
    bool reject;
  };
  // Our log: (1,1) (2,2) (3,2).
  std::vector<Case> cases = {
      {MessageType::kVote, 3, 2, 3, {2, 0, 0}, false},  // same log
      {MessageType::kVote, 3, 2, 4, {2, 0, 0}, false},  // longer
      {MessageType::kVote, 3, 3, 1, {2, 0, 0}, false},  // higher last term beats length
      {MessageType::kVote, 3, 2, 2, {2, 0, 0}, true},   // shorter
      {MessageType::kVote, 3, 1, 9, {2, 0, 0}, true},   // lower last term
      {MessageType::kVote, 2, 2, 3, {2, 3, 0}, true},   // already voted for 3 in term 2
      {MessageType::kVote, 2, 2, 3, {2, 2, 0}, false},  // already voted for 2: repeat the grant
      {MessageType::kPreVote, 3, 2, 3, {2, 3, 0}, false},  // pre-vote for a future term ignores our vote
      {MessageType::kPreVote, 3, 1, 3, {2, 0, 0}, true},   // but not the log check
  };
  for (size_t i = 0; i < cases.size(); i++) {
    const Case& c = cases[i];
    auto p = MakePeer(Ents({{1, 1}, {2, 2}, {3, 2}}), c.hs);
    auto out = StepAndDrain(*p, Message{.type = c.type, .from = 2, .term = c.term, .log_term = c.log_term,
                                        .index = c.index});
    ASSERT_EQ(out.size(), 1u) << "case " << i;
    EXPECT_EQ(out[0].type, c.type == MessageType::kVote ? MessageType::kVoteResp : MessageType::kPreVoteResp);
    EXPECT_EQ(out[0].reject, c.reject) << "case " << i;
    if (c.type == MessageType::kPreVote) {
      EXPECT_EQ(p->node->Status().term, 2u) << "case " << i << ": a pre-vote never changes our term";
      EXPECT_EQ(p->storage->hard_state().vote, c.hs.vote) << "case " << i;
      if (!c.reject) {
        EXPECT_EQ(out[0].term, c.term) << "a granted pre-vote carries the future term";
      }
    } else if (!c.reject) {
      EXPECT_EQ(p->storage->hard_state().vote, 2u) << "case " << i << ": the vote is persisted before the reply";
    }
  }
}

TEST(RaftStepTest, OneVotePerTerm) {
  auto p = MakePeer({}, {});
  auto out = StepAndDrain(*p, Message{.type = MessageType::kVote, .from = 2, .term = 1});
  ASSERT_EQ(out.size(), 1u);
  EXPECT_FALSE(out[0].reject);
  out = StepAndDrain(*p, Message{.type = MessageType::kVote, .from = 3, .term = 1});
  ASSERT_EQ(out.size(), 1u);
  EXPECT_TRUE(out[0].reject);
}

TEST(RaftStepTest, AppendConsistencyCheckRejectsWithHint) {
  // Follower log: (1,1) (2,1) (3,2) (4,2) (5,2); the leader (term 5) probes at (6,4).
  auto p = MakePeer(Ents({{1, 1}, {2, 1}, {3, 2}, {4, 2}, {5, 2}}), HardState{3, 0, 1});
  auto out = StepAndDrain(*p, Message{.type = MessageType::kApp, .from = 2, .term = 5, .log_term = 4, .index = 6});
  ASSERT_EQ(out.size(), 1u);
  EXPECT_TRUE(out[0].reject);
  EXPECT_EQ(out[0].index, 6u);
  EXPECT_EQ(out[0].reject_hint, 5u) << "our last index";
  EXPECT_EQ(out[0].log_term, 2u);
  // Probe at (4,3): our entry 4 has term 2 -> reject, hint at the last entry with term <= 3.
  out = StepAndDrain(*p, Message{.type = MessageType::kApp, .from = 2, .term = 5, .log_term = 3, .index = 4});
  ASSERT_EQ(out.size(), 1u);
  EXPECT_TRUE(out[0].reject);
  EXPECT_EQ(out[0].reject_hint, 4u);
  EXPECT_EQ(out[0].log_term, 2u);
  // Probe at (2,1) matches: conflicting entries 3.. are replaced.
  out = StepAndDrain(*p, Message{.type = MessageType::kApp, .from = 2, .term = 5, .log_term = 1, .index = 2,
                                 .commit = 3, .entries = Ents({{3, 4}, {4, 4}})});
  ASSERT_EQ(out.size(), 1u);
  EXPECT_FALSE(out[0].reject);
  EXPECT_EQ(out[0].index, 4u);
  EXPECT_EQ(p->storage->LastIndex(), 4u);
  EXPECT_EQ(p->storage->Term(3).value(), 4u);
  EXPECT_EQ(p->node->Status().commit, 3u);
  EXPECT_EQ(p->LastApplied(), 3u);
}

TEST(RaftStepTest, StaleAppendBelowCommitIsAnsweredWithCommit) {
  auto p = MakePeer(Ents({{1, 1}, {2, 1}, {3, 1}}), HardState{1, 0, 3});
  auto out = StepAndDrain(*p, Message{.type = MessageType::kApp, .from = 2, .term = 1, .log_term = 1, .index = 1,
                                      .entries = Ents({{2, 1}})});
  ASSERT_EQ(out.size(), 1u);
  EXPECT_FALSE(out[0].reject);
  EXPECT_EQ(out[0].index, 3u);
}

TEST(RaftStepTest, HeartbeatCommitsButNeverBeyondLog) {
  auto p = MakePeer(Ents({{1, 1}, {2, 1}}), HardState{1, 0, 0});
  auto out = StepAndDrain(*p, Message{.type = MessageType::kHeartbeat, .from = 2, .term = 1, .commit = 2,
                                      .context = "c"});
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].type, MessageType::kHeartbeatResp);
  EXPECT_EQ(out[0].context, "c");
  EXPECT_EQ(p->node->Status().commit, 2u);
  EXPECT_EQ(p->node->Status().lead, 2u);
}

TEST(RaftStepTest, LeaderCommitsOnlyEntriesOfItsTerm) {
  // Raft paper figure 8: entry 2 of term 1 is on a majority (1 and 2) but
  // must not be committed by counting replicas; only the leader's own term-2
  // entry commits it.
  auto p = MakePeer(Ents({{1, 1}, {2, 1}}), HardState{1, 1, 1});
  ElectPeer(*p);  // term 2, appends (3,2) and persists it
  EXPECT_EQ(p->node->Status().term, 2u);
  EXPECT_EQ(p->storage->LastIndex(), 3u);
  StepAndDrain(*p, Message{.type = MessageType::kAppResp, .from = 2, .term = 2, .index = 2});
  EXPECT_EQ(p->node->Status().commit, 1u) << "(2,1) is replicated on 1 and 2 but not committed";
  StepAndDrain(*p, Message{.type = MessageType::kAppResp, .from = 2, .term = 2, .index = 3});
  EXPECT_EQ(p->node->Status().commit, 3u);
  EXPECT_EQ(p->LastApplied(), 3u);
}

TEST(RaftStepTest, LeaderOwnAckWaitsForPersistence) {
  auto p = MakePeer({}, {});
  ElectPeer(*p);  // the empty entry 1 is persisted on the leader only
  ASSERT_TRUE(p->node->Propose("x").ok());
  Ready rd = p->node->GetReady();
  ASSERT_EQ(rd.entries.size(), 1u);
  const uint64_t idx = rd.entries[0].index;
  // Follower 2 acknowledges x before the leader has persisted it (Step between
  // GetReady and Advance is allowed). Durable copies of x: only 2's.
  ASSERT_TRUE(p->node->Step(Message{.type = MessageType::kAppResp, .from = 2, .to = 1, .term = 1, .index = idx}).ok());
  EXPECT_EQ(p->node->Status().commit, idx - 1) << "entry 1 is on 1 and 2; x only on 2";
  ASSERT_TRUE(p->storage->Append(rd.entries).ok());
  p->node->Advance(rd);
  EXPECT_EQ(p->node->Status().commit, idx) << "now x is durable on the leader too";
}

TEST(RaftStepTest, RejectedAppendBacksOffAndResends) {
  auto p = MakePeer(Ents({{1, 1}, {2, 1}, {3, 1}}), HardState{1, 1, 3});
  ElectPeer(*p);  // term 2, appends (4,2); probes each follower at (3,1)
  auto out = StepAndDrain(*p, Message{.type = MessageType::kAppResp, .from = 2, .term = 2, .log_term = 1,
                                      .index = 3, .reject = true, .reject_hint = 1});
  auto apps = OfType(out, MessageType::kApp);
  ASSERT_EQ(apps.size(), 1u);
  EXPECT_EQ(apps[0].to, 2u);
  EXPECT_EQ(apps[0].index, 1u) << "resends from the hint";
  EXPECT_EQ(apps[0].log_term, 1u);
  EXPECT_EQ(apps[0].entries.size(), 3u);
}

TEST(RaftStepTest, ProbeStateSendsOneAppendUntilAnswered) {
  auto p = MakePeer({}, {});
  ElectPeer(*p);
  // Followers are probed once at election; more proposals do not resend to them.
  for (int i = 0; i < 3; i++) {
    ASSERT_TRUE(p->node->Propose("x").ok());
    EXPECT_TRUE(OfType(p->Drain(), MessageType::kApp).empty());
  }
  // Accepting the probe switches 2 to replicate and sends everything it lacks.
  auto out = StepAndDrain(*p, Message{.type = MessageType::kAppResp, .from = 2, .term = 1, .index = 1});
  auto apps = OfType(out, MessageType::kApp);
  ASSERT_GE(apps.size(), 1u);
  EXPECT_EQ(apps[0].to, 2u);
  EXPECT_EQ(apps[0].entries.size(), 3u);
}

TEST(RaftStepTest, InflightLimitPausesReplication) {
  auto p = MakePeer({}, {}, 1, [](Config& c) {
    c.max_inflight_msgs = 2;
    c.max_size_per_msg = 1;  // one entry per message
  });
  ElectPeer(*p);
  StepAndDrain(*p, Message{.type = MessageType::kAppResp, .from = 2, .term = 1, .index = 1});
  for (int i = 0; i < 5; i++) ASSERT_TRUE(p->node->Propose("x").ok());
  auto out = p->Drain();
  size_t to2 = 0;
  for (const Message& m : OfType(out, MessageType::kApp)) to2 += m.to == 2;
  EXPECT_EQ(to2, 2u) << "two in flight, then paused";
  out = StepAndDrain(*p, Message{.type = MessageType::kAppResp, .from = 2, .term = 1, .index = 3});
  to2 = 0;
  for (const Message& m : OfType(out, MessageType::kApp)) to2 += m.to == 2;
  EXPECT_EQ(to2, 2u) << "both acknowledged: two more";
}

TEST(RaftStepTest, FollowerForwardsReadIndexAndTransferToLeader) {
  auto p = MakePeer({}, {});
  StepAndDrain(*p, Message{.type = MessageType::kHeartbeat, .from = 3, .term = 1});
  p->node->ReadIndex("ctx");
  auto out = p->Drain();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].type, MessageType::kReadIndex);
  EXPECT_EQ(out[0].to, 3u);
  EXPECT_EQ(out[0].from, 1u);
  EXPECT_EQ(out[0].context, "ctx");
  p->node->TransferLeader(2);
  out = p->Drain();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].type, MessageType::kTransferLeader);
  EXPECT_EQ(out[0].to, 3u);
  EXPECT_EQ(out[0].from, 2u) << "from names the transferee";
}

TEST(RaftStepTest, ForwardedRequestsArriveAtAFollowerAndAreForwardedAgain) {
  // 3 forwarded these to us when we were leader; we are a follower of 2 now.
  auto p = MakePeer({}, {});
  StepAndDrain(*p, Message{.type = MessageType::kHeartbeat, .from = 2, .term = 1});
  auto out = StepAndDrain(*p, Message{.type = MessageType::kTransferLeader, .from = 3, .term = 1});
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].to, 2u);
  EXPECT_EQ(out[0].term, 1u);
  out = StepAndDrain(*p, Message{.type = MessageType::kReadIndex, .from = 3, .term = 1, .context = "c"});
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].to, 2u);
  EXPECT_EQ(out[0].from, 3u);
  EXPECT_EQ(out[0].term, 0u);
}

TEST(RaftStepTest, CandidateBecomesFollowerOnAppendFromWinner) {
  auto p = MakePeer({}, {});
  ASSERT_TRUE(p->node->Campaign().ok());
  p->Drain();
  EXPECT_EQ(p->node->Status().state, StateType::kCandidate);
  StepAndDrain(*p, Message{.type = MessageType::kApp, .from = 2, .term = 1, .log_term = 0, .index = 0});
  EXPECT_EQ(p->node->Status().state, StateType::kFollower);
  EXPECT_EQ(p->node->Status().lead, 2u);
}

TEST(RaftStepTest, CandidateLosesOnMajorityRejection) {
  auto p = MakePeer({}, {});
  ASSERT_TRUE(p->node->Campaign().ok());
  p->Drain();
  StepAndDrain(*p, Message{.type = MessageType::kVoteResp, .from = 2, .term = 1, .reject = true});
  EXPECT_EQ(p->node->Status().state, StateType::kCandidate);
  StepAndDrain(*p, Message{.type = MessageType::kVoteResp, .from = 3, .term = 1, .reject = true});
  EXPECT_EQ(p->node->Status().state, StateType::kFollower);
  EXPECT_EQ(p->node->Status().term, 1u);
}

TEST(RaftStepTest, ElectionTimeoutIsRandomizedInRange) {
  // With rand always 0 the timeout is election_tick; with rand = tick-1 it is 2*tick-1.
  for (uint64_t r : {0ULL, 9ULL, 19ULL}) {
    auto p = MakePeer({}, {}, 1, [r](Config& c) { c.rand = [r] { return r; }; });
    int ticks = 0;
    while (p->node->Status().state == StateType::kFollower && ticks < 100) {
      p->node->Tick();
      ticks++;
    }
    EXPECT_EQ(ticks, 10 + static_cast<int>(r % 10)) << "rand " << r;
  }
}

TEST(RaftStepTest, HeartbeatsEveryHeartbeatTick) {
  auto p = MakePeer({}, {}, 1, [](Config& c) { c.heartbeat_tick = 3; });
  ElectPeer(*p);
  int beats = 0;
  for (int i = 0; i < 9; i++) {
    p->node->Tick();
    beats += static_cast<int>(OfType(p->Drain(), MessageType::kHeartbeat).size());
  }
  EXPECT_EQ(beats, 3 * 2);
}

}  // namespace
}  // namespace engram::raft
