// Multi-node scenarios on the simulated network (raft_test_util.h). The
// invariant checker runs after every delivered message, every Ready loop and
// every restart; a violation fails the test where it happens.
#include <gtest/gtest.h>

#include "src/raft/raft_test_util.h"

namespace engram::raft {
namespace {

using testing::Network;

// Ticks the given nodes (one tick each per round) until one of them leads.
uint64_t TickUntilLeader(Network& n, const std::vector<uint64_t>& ids, int max_rounds = 200) {
  for (int i = 0; i < max_rounds; i++) {
    for (uint64_t id : ids) {
      n.Tick(id);
      if (n.status(id).state == StateType::kLeader) return id;
    }
  }
  return 0;
}

std::vector<std::string> AppliedData(const testing::Peer& p) {
  std::vector<std::string> out;
  for (const Entry& e : p.applied) {
    if (e.type == EntryType::kNormal && !e.data.empty()) out.push_back(e.data);
  }
  return out;
}

TEST(NetworkTest, ThreeNodeElection) {
  Network n({1, 2, 3});
  n.Campaign(1);
  EXPECT_EQ(n.status(1).state, StateType::kLeader);
  EXPECT_EQ(n.status(1).term, 1u);
  for (uint64_t id : {2, 3}) {
    EXPECT_EQ(n.status(id).state, StateType::kFollower);
    EXPECT_EQ(n.status(id).term, 1u);
    EXPECT_EQ(n.status(id).lead, 1u);
  }
  // The new leader's empty entry is committed and applied everywhere.
  for (uint64_t id : {1, 2, 3}) {
    EXPECT_EQ(n.status(id).commit, 1u) << id;
    EXPECT_EQ(n.peer(id).LastApplied(), 1u) << id;
  }
  EXPECT_EQ(n.peer(2).probe.leader_changes_seen.Value(), 1u);
  EXPECT_EQ(n.peer(2).probe.has_leader.Value(), 1);
  EXPECT_EQ(n.peer(2).probe.is_leader.Value(), 0);
}

TEST(NetworkTest, ElectionByTimeout) {
  Network n({1, 2, 3});
  for (int i = 0; i < 50 && n.Leader() == 0; i++) n.TickAll();
  const uint64_t lead = n.Leader();
  ASSERT_NE(lead, 0u);
  int leaders = 0;
  for (uint64_t id : n.ids()) {
    if (n.status(id).state == StateType::kLeader) leaders++;
    EXPECT_EQ(n.status(id).lead, lead);
  }
  EXPECT_EQ(leaders, 1);
  // Heartbeats keep it leader.
  n.TickAll(100);
  EXPECT_EQ(n.Leader(), lead);
  EXPECT_EQ(n.status(lead).term, n.status(lead == 1 ? 2 : 1).term);
}

TEST(NetworkTest, ReplicationAndCommit) {
  Network n({1, 2, 3});
  n.Campaign(1);
  for (int i = 0; i < 10; i++) ASSERT_TRUE(n.Propose(1, "v" + std::to_string(i)).ok());
  for (uint64_t id : {1, 2, 3}) {
    EXPECT_EQ(n.status(id).commit, 11u) << id;
    ASSERT_EQ(AppliedData(n.peer(id)).size(), 10u) << id;
    EXPECT_EQ(AppliedData(n.peer(id))[9], "v9");
  }
  EXPECT_EQ(n.Propose(2, "to a follower").code(), Code::kFailedPrecondition) << "no forwarding";
}

TEST(NetworkTest, ProposalsBetweenReadiesShareOneAppendPerFollower) {
  Network n({1, 2, 3});
  n.Campaign(1);
  for (int i = 0; i < 50; i++) ASSERT_TRUE(n.node(1).Propose("v" + std::to_string(i)).ok());
  n.peer(1).record_readies = true;
  n.Flush(1);
  ASSERT_FALSE(n.peer(1).readies.empty());
  const Ready& rd = n.peer(1).readies.front();
  EXPECT_EQ(rd.entries.size(), 50u);
  size_t apps = 0;
  for (const Message& m : rd.messages) {
    if (m.type == MessageType::kApp) {
      apps++;
      EXPECT_EQ(m.entries.size(), 50u);
    }
  }
  EXPECT_EQ(apps, 2u);
  EXPECT_EQ(n.status(3).commit, 51u);
}

TEST(NetworkTest, LeaderIsolatedNewLeaderOldLeaderStepsDownAndIsOverwritten) {
  Network n({1, 2, 3});
  n.Campaign(1);
  ASSERT_TRUE(n.Propose(1, "committed-1").ok());
  const uint64_t commit_before = n.status(1).commit;

  n.Isolate(1);
  ASSERT_TRUE(n.Propose(1, "lost").ok()) << "the old leader still accepts proposals...";
  EXPECT_EQ(n.status(1).commit, commit_before) << "...but cannot commit them";

  const uint64_t lead = TickUntilLeader(n, {2, 3});
  ASSERT_NE(lead, 0u);
  EXPECT_GT(n.status(lead).term, 1u);
  ASSERT_TRUE(n.Propose(lead, "committed-2").ok());
  EXPECT_EQ(n.status(1).state, StateType::kLeader) << "isolated: it does not know yet";

  n.Recover();
  n.Tick(lead);  // a heartbeat reaches the old leader
  EXPECT_EQ(n.status(1).state, StateType::kFollower);
  EXPECT_EQ(n.status(1).term, n.status(lead).term);
  EXPECT_EQ(n.status(1).lead, lead);
  ASSERT_TRUE(n.Propose(lead, "committed-3").ok());
  const std::vector<std::string> want = {"committed-1", "committed-2", "committed-3"};
  for (uint64_t id : {1, 2, 3}) EXPECT_EQ(AppliedData(n.peer(id)), want) << id;
  // The uncommitted entry is gone from the old leader's log.
  auto ents = n.peer(1).storage->Entries(1, n.peer(1).storage->LastIndex() + 1, kNoLimit);
  ASSERT_TRUE(ents.ok());
  for (const Entry& e : *ents) EXPECT_NE(e.data, "lost");
}

TEST(NetworkTest, PartitionedMinorityCannotCommit) {
  Network n({1, 2, 3, 4, 5});
  n.Campaign(1);
  ASSERT_TRUE(n.Propose(1, "a").ok());
  for (uint64_t x : {1, 2}) {
    for (uint64_t y : {3, 4, 5}) n.Cut(x, y);
  }
  const uint64_t commit = n.status(1).commit;
  for (int i = 0; i < 5; i++) ASSERT_TRUE(n.Propose(1, "minority" + std::to_string(i)).ok());
  n.Tick(1, 5);
  EXPECT_EQ(n.status(1).commit, commit);
  EXPECT_EQ(n.status(2).commit, commit);

  const uint64_t lead = TickUntilLeader(n, {3, 4, 5});
  ASSERT_NE(lead, 0u);
  ASSERT_TRUE(n.Propose(lead, "majority").ok());
  EXPECT_GT(n.status(lead).commit, commit);

  n.Recover();
  n.Tick(lead, 2);
  ASSERT_TRUE(n.Propose(lead, "after-heal").ok());
  const std::vector<std::string> want = {"a", "majority", "after-heal"};
  for (uint64_t id : n.ids()) EXPECT_EQ(AppliedData(n.peer(id)), want) << id;
}

TEST(NetworkTest, VotesAreNotGrantedToStaleLogs) {
  Network n({1, 2, 3});
  n.Campaign(1);
  n.Cut(1, 3);
  ASSERT_TRUE(n.Propose(1, "x").ok());  // committed by 1 and 2; 3 misses it
  EXPECT_EQ(n.status(2).commit, 2u);
  EXPECT_EQ(n.peer(3).storage->LastIndex(), 1u);

  n.Recover();
  n.Isolate(1);
  n.Campaign(3);
  EXPECT_NE(n.status(3).state, StateType::kLeader) << "2 must refuse: 3's log is behind";
  EXPECT_EQ(n.status(2).state, StateType::kFollower);
  n.Campaign(2);
  EXPECT_EQ(n.status(2).state, StateType::kLeader);
  EXPECT_EQ(n.status(3).lead, 2u);
  EXPECT_EQ(AppliedData(n.peer(3)), std::vector<std::string>{"x"});
}

TEST(NetworkTest, CandidateWithLowerTermLogLosesEvenIfLonger) {
  Network n({1, 2, 3});
  n.Campaign(1);
  // 1 appends entries only it has (term 1), then 2 leads term 2 with 3.
  n.Isolate(1);
  for (int i = 0; i < 3; i++) ASSERT_TRUE(n.Propose(1, "t1-" + std::to_string(i)).ok());
  n.Campaign(2);
  ASSERT_EQ(n.status(2).state, StateType::kLeader);
  ASSERT_TRUE(n.Propose(2, "t2").ok());
  // 1 (restarted, so no longer a stale leader) has the longer log: 4 entries
  // of term 1; 3 has a shorter one ending in term 2.
  n.Restart(1);
  n.Recover();
  n.Isolate(2);
  n.Campaign(1);  // term 2: 3 already voted in term 2
  n.Campaign(1);  // term 3: 3 may vote, but 1's log is behind
  EXPECT_EQ(n.status(3).term, 3u);
  EXPECT_NE(n.status(1).state, StateType::kLeader);
  EXPECT_EQ(n.status(3).state, StateType::kFollower);
}

// Raft paper figure 8, scripted: an entry of an old term that sits on a
// majority must not be committed by counting replicas, because a candidate
// with a newer-term last entry can still win and overwrite it.
TEST(NetworkTest, Figure8OldTermEntryOnMajorityIsNotCommitted) {
  Network n({1, 2, 3, 4, 5}, [](Config& c) { c.max_size_per_msg = 1; });  // one entry per append
  n.Campaign(1);                                                          // term 1; (1,1) everywhere
  n.Cut(1, 3);
  n.Cut(1, 4);
  n.Cut(1, 5);
  ASSERT_TRUE(n.Propose(1, "A").ok());  // (2,1) on S1 and S2 only
  ASSERT_EQ(n.peer(3).storage->LastIndex(), 1u);

  // S5 wins term 2 with S3 and S4 but its entry (2,2) reaches nobody.
  n.Isolate(1);
  n.Ignore(MessageType::kApp);
  n.Campaign(5);
  ASSERT_EQ(n.status(5).state, StateType::kLeader);
  ASSERT_EQ(n.status(5).term, 2u);
  n.Recover();
  n.Isolate(5);

  // S1 comes back and wins term 3 with S2, S3 and S4. It replicates
  // everything to S2, but S3 gets only (2,1) (its copy of (3,3) is lost) and
  // S4 nothing. Now (2,1) is on S1, S2, S3 (a majority), and S1 knows it.
  n.Restart(1);
  n.set_auto_deliver(false);
  n.Campaign(1);  // term 2: S3 and S4 voted for S5 already
  n.DeliverAll();
  n.Campaign(1);  // term 3
  while (!n.queue().empty()) {
    if (n.status(1).state == StateType::kLeader) {
      n.Cut(1, 4);
      std::erase_if(n.queue(), [](const Message& q) { return q.to == 4 || q.from == 4; });
    }
    for (Message& q : n.queue()) {
      if (q.type == MessageType::kApp && q.to == 3) {
        std::erase_if(q.entries, [](const Entry& e) { return e.index >= 3; });
      }
    }
    n.DeliverAt(0);
  }
  ASSERT_EQ(n.status(1).state, StateType::kLeader);
  ASSERT_EQ(n.status(1).term, 3u);
  ASSERT_EQ(n.peer(2).storage->LastIndex(), 3u);
  ASSERT_EQ(n.peer(3).storage->LastIndex(), 2u);
  ASSERT_EQ(n.peer(3).storage->Term(2).value(), 1u);
  EXPECT_EQ(n.status(1).commit, 1u) << "(2,1) is on a majority but is not of S1's term";

  // S1 is gone again; S5 (last entry of term 2) wins term 4 and overwrites index 2.
  n.Recover();
  n.Isolate(1);
  n.set_auto_deliver(true);
  n.Restart(5);
  n.Campaign(5);  // term 3: S2, S3 and S4 voted for S1
  n.Campaign(5);  // term 4: S3 and S4 grant (S2's last entry (3,3) is newer)
  ASSERT_EQ(n.status(5).state, StateType::kLeader);
  EXPECT_GE(n.status(5).commit, 3u);
  for (uint64_t id : {2, 3, 4}) EXPECT_EQ(n.peer(id).storage->Term(2).value(), 2u) << id;
  EXPECT_EQ(n.violation(), "");
}

TEST(NetworkTest, ReadIndexThreeNodes) {
  Network n({1, 2, 3});
  n.Campaign(1);
  ASSERT_TRUE(n.Propose(1, "a").ok());
  n.ReadIndex(1, "r1");
  ASSERT_EQ(n.peer(1).read_states.size(), 1u);
  EXPECT_EQ(n.peer(1).read_states[0].request_ctx, "r1");
  EXPECT_EQ(n.peer(1).read_states[0].index, 2u);

  n.ReadIndex(2, "r2");  // forwarded to the leader, answered to 2
  ASSERT_EQ(n.peer(2).read_states.size(), 1u);
  EXPECT_EQ(n.peer(2).read_states[0].request_ctx, "r2");
  EXPECT_EQ(n.peer(2).read_states[0].index, 2u);
  EXPECT_EQ(n.peer(1).read_states.size(), 1u);
}

TEST(NetworkTest, ReadIndexNeedsAQuorumOfHeartbeats) {
  Network n({1, 2, 3});
  n.Campaign(1);
  n.Isolate(1);
  n.ReadIndex(1, "r1");
  n.Tick(1, 3);
  EXPECT_TRUE(n.peer(1).read_states.empty()) << "an isolated leader cannot confirm it still leads";
  n.Recover();
  n.Tick(1);  // the next heartbeat round carries the pending context
  ASSERT_EQ(n.peer(1).read_states.size(), 1u);
  EXPECT_EQ(n.peer(1).read_states[0].request_ctx, "r1");
}

TEST(NetworkTest, ReadIndexWaitsForTheNewLeadersFirstCommit) {
  Network n({1, 2, 3});
  n.set_auto_deliver(false);
  n.Campaign(1);
  // Deliver the vote requests and responses, not yet the appends.
  while (n.status(1).state != StateType::kLeader) n.DeliverAt(0);
  EXPECT_EQ(n.status(1).commit, 0u);
  n.ReadIndex(1, "early");
  EXPECT_TRUE(n.peer(1).read_states.empty());
  // The first commit releases it into a heartbeat round, which confirms it.
  n.DeliverAll();
  ASSERT_EQ(n.peer(1).read_states.size(), 1u);
  EXPECT_EQ(n.peer(1).read_states[0].index, 1u);
}

TEST(NetworkTest, ReadIndexOnFollowerWithoutLeaderIsDropped) {
  Network n({1, 2, 3});
  n.ReadIndex(2, "r");
  EXPECT_TRUE(n.peer(2).read_states.empty());
  EXPECT_EQ(n.peer(2).probe.read_indexes_failed.Value(), 1u);
}

TEST(NetworkTest, CheckQuorumLeaderStepsDownWhenIsolated) {
  Network n({1, 2, 3}, [](Config& c) { c.check_quorum = true; });
  n.Campaign(1);
  n.Isolate(1);
  n.Tick(1, 2 * 10);
  EXPECT_EQ(n.status(1).state, StateType::kFollower);
  EXPECT_EQ(n.status(1).lead, kNone);
  EXPECT_EQ(n.peer(1).probe.has_leader.Value(), 0);
}

TEST(NetworkTest, CheckQuorumFollowersIgnoreDisruptiveVotesInLease) {
  Network n({1, 2, 3}, [](Config& c) { c.check_quorum = true; });
  n.Campaign(1);
  n.Isolate(3);
  n.Tick(3, 30);  // 3 campaigns alone and bumps its term
  const uint64_t t3 = n.status(3).term;
  EXPECT_GT(t3, 1u);
  n.Recover();
  // 3 campaigns again: 1 and 2 heard from the leader recently and ignore it.
  n.Campaign(3);
  EXPECT_EQ(n.Leader(), 1u);
  EXPECT_EQ(n.status(1).term, 1u);
  // The leader's next heartbeat makes 3 answer with its higher term, and the
  // cluster re-elects at that term (without pre-vote, the disruption is only delayed).
  for (int i = 0; i < 100 && !(n.Leader() != 0 && n.status(n.Leader()).term >= t3); i++) n.TickAll();
  EXPECT_NE(n.Leader(), 0u);
}

TEST(NetworkTest, PreVoteIsolatedNodeDoesNotDisruptOnRejoin) {
  Network n({1, 2, 3}, [](Config& c) { c.pre_vote = true; });
  n.Campaign(1);
  EXPECT_EQ(n.status(1).term, 1u);
  n.Isolate(3);
  n.Tick(3, 50);
  EXPECT_EQ(n.status(3).term, 1u) << "pre-votes never bump the term";
  EXPECT_EQ(n.status(3).state, StateType::kPreCandidate);
  n.Recover();
  n.TickAll(5);
  EXPECT_EQ(n.Leader(), 1u);
  EXPECT_EQ(n.status(1).term, 1u);
  EXPECT_EQ(n.status(3).state, StateType::kFollower);
  EXPECT_EQ(n.status(3).lead, 1u);
}

TEST(NetworkTest, WithoutPreVoteIsolatedNodeDisruptsOnRejoin) {
  Network n({1, 2, 3});
  n.Campaign(1);
  n.Isolate(3);
  n.Tick(3, 50);
  const uint64_t t3 = n.status(3).term;
  EXPECT_GT(t3, 1u);
  n.Recover();
  n.Tick(1);  // 3 ignores the leader's lower-term heartbeat
  n.Campaign(3);  // its vote request with a higher term deposes the leader
  EXPECT_NE(n.status(1).state, StateType::kLeader);
  EXPECT_GE(n.status(1).term, t3);
}

TEST(NetworkTest, PreVoteElectionWorks) {
  Network n({1, 2, 3}, [](Config& c) {
    c.pre_vote = true;
    c.check_quorum = true;
  });
  n.Campaign(2);
  EXPECT_EQ(n.status(2).state, StateType::kLeader);
  EXPECT_EQ(n.status(2).term, 1u);
  ASSERT_TRUE(n.Propose(2, "x").ok());
  EXPECT_EQ(AppliedData(n.peer(1)), std::vector<std::string>{"x"});
}

TEST(NetworkTest, LeaderTransfer) {
  Network n({1, 2, 3});
  n.Campaign(1);
  ASSERT_TRUE(n.Propose(1, "a").ok());
  n.TransferLeader(1, 2);
  EXPECT_EQ(n.status(2).state, StateType::kLeader);
  EXPECT_EQ(n.status(2).term, 2u);
  EXPECT_EQ(n.status(1).lead, 2u);
  // Forwarded through a follower.
  n.TransferLeader(3, 3);
  EXPECT_EQ(n.status(3).state, StateType::kLeader);
}

TEST(NetworkTest, LeaderTransferToLaggingFollowerWaitsForCatchUp) {
  Network n({1, 2, 3});
  n.Campaign(1);
  n.Isolate(3);
  ASSERT_TRUE(n.Propose(1, "a").ok());
  n.TransferLeader(1, 3);
  EXPECT_EQ(n.Propose(1, "blocked").code(), Code::kFailedPrecondition) << "no proposals during a transfer";
  n.Recover();
  n.Tick(1);  // heartbeat -> 3 catches up -> timeout-now
  EXPECT_EQ(n.status(3).state, StateType::kLeader);
}

TEST(NetworkTest, AddAndRemoveVoter) {
  Network n({1, 2, 3});
  n.Campaign(1);
  for (int i = 0; i < 5; i++) ASSERT_TRUE(n.Propose(1, "v" + std::to_string(i)).ok());
  // Node 4 starts knowing the current members; it learns about itself from the log.
  n.AddPeer(4, {1, 2, 3});
  ASSERT_TRUE(n.ProposeConfChange(1, ConfChange{ConfChangeType::kAddNode, 4, "n4"}).ok());
  n.Tick(1, 3);
  EXPECT_EQ(n.node(1).conf_state().voters, (std::vector<uint64_t>{1, 2, 3, 4}));
  EXPECT_EQ(n.node(4).conf_state().voters, (std::vector<uint64_t>{1, 2, 3, 4}));
  EXPECT_EQ(AppliedData(n.peer(4)).size(), 5u);
  EXPECT_EQ(n.status(4).commit, n.status(1).commit);

  // With 4 voters the quorum is 3: two down blocks commits.
  n.Isolate(3);
  n.Isolate(4);
  const uint64_t c = n.status(1).commit;
  ASSERT_TRUE(n.Propose(1, "blocked").ok());
  EXPECT_EQ(n.status(1).commit, c);
  n.Recover();
  n.Tick(1, 2);
  EXPECT_GT(n.status(1).commit, c);

  ASSERT_TRUE(n.ProposeConfChange(1, ConfChange{ConfChangeType::kRemoveNode, 3, ""}).ok());
  n.Tick(1, 2);
  EXPECT_EQ(n.node(1).conf_state().voters, (std::vector<uint64_t>{1, 2, 4}));
  n.Isolate(3);
  const uint64_t c2 = n.status(1).commit;
  ASSERT_TRUE(n.Propose(1, "without-3").ok());
  EXPECT_GT(n.status(1).commit, c2);
}

TEST(NetworkTest, LearnerReplicatesButDoesNotVote) {
  Network n({1, 2, 3});
  n.Campaign(1);
  n.AddPeer(4, {1, 2, 3});
  ASSERT_TRUE(n.ProposeConfChange(1, ConfChange{ConfChangeType::kAddLearnerNode, 4, ""}).ok());
  n.Tick(1, 2);
  EXPECT_EQ(n.node(1).conf_state().learners, std::vector<uint64_t>{4});
  ASSERT_TRUE(n.Propose(1, "x").ok());
  EXPECT_EQ(AppliedData(n.peer(4)), std::vector<std::string>{"x"});
  EXPECT_EQ(n.node(4).Campaign().code(), Code::kFailedPrecondition);
  n.Tick(4, 100);
  EXPECT_EQ(n.status(4).state, StateType::kFollower);
  // Promote it.
  ASSERT_TRUE(n.ProposeConfChange(1, ConfChange{ConfChangeType::kAddNode, 4, ""}).ok());
  n.Tick(1, 2);
  EXPECT_EQ(n.node(4).conf_state().voters, (std::vector<uint64_t>{1, 2, 3, 4}));
  EXPECT_TRUE(n.node(4).conf_state().learners.empty());
}

TEST(NetworkTest, RemovedLeaderStepsDown) {
  Network n({1, 2, 3});
  n.Campaign(1);
  ASSERT_TRUE(n.ProposeConfChange(1, ConfChange{ConfChangeType::kRemoveNode, 1, ""}).ok());
  EXPECT_NE(n.status(1).state, StateType::kLeader);
  const uint64_t lead = TickUntilLeader(n, {2, 3});
  ASSERT_NE(lead, 0u);
  ASSERT_TRUE(n.Propose(lead, "after").ok());
  EXPECT_EQ(AppliedData(n.peer(lead == 2 ? 3 : 2)), std::vector<std::string>{"after"});
}

TEST(NetworkTest, FollowerRestartKeepsVoteAndCatchesUp) {
  Network n({1, 2, 3});
  n.Campaign(1);
  ASSERT_TRUE(n.Propose(1, "a").ok());
  n.Isolate(3);
  ASSERT_TRUE(n.Propose(1, "b").ok());
  n.Restart(3);
  EXPECT_EQ(n.status(3).term, 1u);
  EXPECT_EQ(n.status(3).commit, 2u);
  EXPECT_EQ(n.status(3).applied, 2u);
  n.Recover();
  n.Tick(1, 2);
  EXPECT_EQ(AppliedData(n.peer(3)), (std::vector<std::string>{"a", "b"}));
}

TEST(NetworkTest, LeaderRestartElectsAgain) {
  Network n({1, 2, 3});
  n.Campaign(1);
  ASSERT_TRUE(n.Propose(1, "a").ok());
  n.Restart(1);
  EXPECT_EQ(n.status(1).state, StateType::kFollower);
  const uint64_t lead = TickUntilLeader(n, {1, 2, 3});
  ASSERT_NE(lead, 0u);
  EXPECT_GE(n.status(lead).term, 2u);
  ASSERT_TRUE(n.Propose(lead, "b").ok());
  for (uint64_t id : {1, 2, 3}) EXPECT_EQ(AppliedData(n.peer(id)), (std::vector<std::string>{"a", "b"}));
}

TEST(NetworkTest, LossyNetworkStillConverges) {
  Network n({1, 2, 3}, {}, 42);
  for (uint64_t a : {1, 2, 3}) {
    for (uint64_t b : {1, 2, 3}) {
      if (a != b) n.DropRate(a, b, 0.3);
    }
  }
  std::vector<std::string> accepted;
  for (int round = 0; round < 400; round++) {
    n.TickAll();
    const uint64_t lead = n.Leader();
    if (lead != 0 && round % 3 == 0) {
      std::string v = "v" + std::to_string(round);
      if (n.Propose(lead, v).ok()) accepted.push_back(v);
    }
  }
  n.Recover();
  n.TickAll(30);
  const uint64_t lead = n.Leader();
  ASSERT_NE(lead, 0u);
  ASSERT_TRUE(n.Propose(lead, "final").ok());
  n.TickAll(3);
  const auto want = AppliedData(n.peer(lead));
  EXPECT_EQ(want.back(), "final");
  EXPECT_GT(want.size(), accepted.size() / 2) << "most proposals should survive 30% loss";
  for (uint64_t id : n.ids()) EXPECT_EQ(AppliedData(n.peer(id)), want) << id;
}

}  // namespace
}  // namespace engram::raft

namespace engram::raft {
namespace {

// Known limitation, pinned down: without snapshots a follower that needs
// entries the leader has compacted cannot catch up. The rest of the cluster
// keeps working and nothing crashes.
TEST(NetworkTest, FollowerBehindCompactedLogStaysBehindWithoutSnapshots) {
  testing::Network n({1, 2, 3});
  n.Campaign(1);
  n.Isolate(3);
  for (int i = 0; i < 5; i++) ASSERT_TRUE(n.Propose(1, "v" + std::to_string(i)).ok());
  ASSERT_TRUE(n.peer(1).storage->Compact(n.status(1).applied).ok());
  n.Recover();
  n.Tick(1, 3);
  EXPECT_EQ(n.peer(3).storage->LastIndex(), 1u);
  ASSERT_TRUE(n.Propose(1, "more").ok());
  EXPECT_EQ(n.status(2).commit, n.status(1).commit);
  EXPECT_LT(n.status(3).commit, n.status(1).commit);
}

}  // namespace
}  // namespace engram::raft
