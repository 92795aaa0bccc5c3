// Randomized simulation: seeded, deterministic. A schedule of ticks,
// proposals, partitions, crashes/restarts and read-index requests, with the
// network delivering messages out of order, dropping and duplicating them.
// The invariant checker runs after every step; at the end the network heals
// and every node must converge on the same applied sequence. ReadIndex answers
// are checked for linearizability: a read index is never below a commit index
// some node had reached before the request was made.
#include <gtest/gtest.h>

#include <cstdlib>

#include "src/raft/raft_test_util.h"

namespace engram::raft {
namespace {

using testing::Network;
using testing::Peer;

struct SimStats {
  uint64_t steps = 0, proposals = 0, committed = 0, elections = 0, reads = 0, restarts = 0;
};

uint64_t MaxCommit(Network& n) {
  uint64_t c = 0;
  for (uint64_t id : n.ids()) c = std::max(c, n.status(id).commit);
  return c;
}

SimStats RunSimulation(uint64_t seed, int steps, bool pre_vote, bool check_quorum) {
  std::vector<uint64_t> ids = {1, 2, 3, 4, 5};
  Network n(
      ids,
      [&](Config& c) {
        c.pre_vote = pre_vote;
        c.check_quorum = check_quorum;
        c.max_size_per_msg = 64;  // a few entries per append: exercises pipelining
        c.max_inflight_msgs = 4;
      },
      seed);
  n.set_auto_deliver(false);
  testing::Rng& r = n.rng();
  SimStats st;
  std::map<std::string, uint64_t> read_floor;  // ctx -> commit index some node had at request time
  auto pick = [&] { return ids[r.Uniform(ids.size())]; };

  for (int step = 0; step < steps && n.violation().empty(); step++) {
    const uint64_t a = r.Uniform(1000);
    auto& q = n.queue();
    if (a < 400 || a >= 970) {
      if (!q.empty()) n.DeliverAt(r.Uniform(std::min<size_t>(q.size(), 4)));  // mostly in order, some reordering
    } else if (a < 450) {
      if (!q.empty()) n.DeliverAt(r.Uniform(q.size()));  // anything goes
    } else if (a < 470) {
      if (!q.empty()) q.erase(q.begin() + static_cast<std::ptrdiff_t>(r.Uniform(q.size())));  // lose one
    } else if (a < 480) {
      if (!q.empty()) q.push_back(q[r.Uniform(q.size())]);  // duplicate one
    } else if (a < 700) {
      n.Tick(pick());
    } else if (a < 850) {
      const uint64_t lead = n.Leader();
      const uint64_t to = (lead != 0 && r.Chance(0.8)) ? lead : pick();
      if (n.Propose(to, "s" + std::to_string(seed) + "-" + std::to_string(step)).ok()) st.proposals++;
    } else if (a < 880) {
      std::string ctx = "read-" + std::to_string(step);
      read_floor[ctx] = MaxCommit(n);
      const uint64_t lead = n.Leader();
      n.ReadIndex((lead != 0 && r.Chance(0.5)) ? lead : pick(), ctx);
    } else if (a < 900) {
      uint64_t x = pick(), y = pick();
      if (x != y) n.Cut(x, y);
    } else if (a < 910) {
      n.Isolate(pick());
    } else if (a < 960) {
      n.Recover();
    } else if (a < 965) {
      n.Restart(pick());
      st.restarts++;
    } else {
      n.Campaign(pick());
    }
    st.steps++;
  }
  if (!n.violation().empty()) return st;

  // Heal: deliver everything, then run until one leader has committed a final entry everywhere.
  n.Recover();
  n.set_auto_deliver(true);
  n.DeliverAll();
  // A stable leader: the highest term, and everyone follows it.
  auto stable_leader = [&]() -> uint64_t {
    const uint64_t lead = n.Leader();
    if (lead == 0) return 0;
    for (uint64_t id : ids) {
      if (n.status(id).term != n.status(lead).term || n.status(id).lead != lead) return 0;
    }
    return lead;
  };
  uint64_t lead = 0;
  for (int i = 0; i < 500 && lead == 0 && n.violation().empty(); i++) {
    n.TickAll();
    lead = stable_leader();
  }
  if (!n.violation().empty()) return st;
  if (lead == 0) {
    ADD_FAILURE() << "seed " << seed << ": no stable leader after healing";
    return st;
  }
  EXPECT_TRUE(n.Propose(lead, "final").ok()) << "seed " << seed;
  auto all_applied_final = [&] {
    for (uint64_t id : ids) {
      if (n.peer(id).applied.empty() || n.peer(id).applied.back().data != "final") return false;
    }
    return true;
  };
  for (int i = 0; i < 50 && !all_applied_final() && n.violation().empty(); i++) n.TickAll();
  if (!n.violation().empty()) return st;
  if (std::getenv("SIM_DEBUG") != nullptr) {
    for (uint64_t id : ids) {
      auto s = n.status(id);
      std::printf("node %llu state=%s term=%llu lead=%llu commit=%llu applied=%llu last=%llu\n",
                  (unsigned long long)id, StateTypeName(s.state), (unsigned long long)s.term,
                  (unsigned long long)s.lead, (unsigned long long)s.commit, (unsigned long long)s.applied,
                  (unsigned long long)n.peer(id).storage->LastIndex());
    }
  }
  const std::vector<Entry>& want = n.peer(lead).applied;
  EXPECT_FALSE(want.empty());
  EXPECT_EQ(want.back().data, "final") << "seed " << seed;
  for (uint64_t id : ids) {
    EXPECT_EQ(n.peer(id).applied.size(), want.size()) << "seed " << seed << " node " << id;
    if (n.peer(id).applied != want) ADD_FAILURE() << "seed " << seed << ": node " << id << " applied differently";
    EXPECT_EQ(n.status(id).commit, n.status(lead).commit) << "seed " << seed << " node " << id;
  }
  for (uint64_t id : ids) {
    for (const ReadState& rs : n.peer(id).read_states) {
      auto it = read_floor.find(rs.request_ctx);
      if (it == read_floor.end()) {
        ADD_FAILURE() << "read state for an unknown context " << rs.request_ctx;
        continue;
      }
      EXPECT_GE(rs.index, it->second) << "seed " << seed << ": stale read index for " << rs.request_ctx;
      st.reads++;
    }
    st.elections += n.peer(id).probe.elections_started.Value();
  }
  st.committed = want.size();
  return st;
}

class SimulationTest : public ::testing::TestWithParam<int> {};

TEST_P(SimulationTest, InvariantsHoldAndNodesConverge) {
  const int mode = GetParam();
  SimStats total;
  for (uint64_t seed = 1; seed <= 25; seed++) {
    SimStats s = RunSimulation(seed * 100 + static_cast<uint64_t>(mode), 3000, mode & 1, mode & 2);
    total.steps += s.steps;
    total.proposals += s.proposals;
    total.committed += s.committed;
    total.elections += s.elections;
    total.reads += s.reads;
    total.restarts += s.restarts;
    if (HasFailure()) {
      ADD_FAILURE() << "first failing seed: " << seed * 100 + static_cast<uint64_t>(mode);
      break;
    }
  }
  // The schedule must actually exercise things (guards against a vacuous pass).
  EXPECT_GT(total.proposals, 1000u);
  EXPECT_GT(total.committed, 500u);
  EXPECT_GT(total.elections, 100u);
  EXPECT_GT(total.reads, 20u);
  RecordProperty("committed", static_cast<int>(total.committed));
  std::printf("[ sim mode %d ] steps=%llu proposals=%llu applied=%llu elections=%llu reads=%llu restarts=%llu\n",
              mode, (unsigned long long)total.steps, (unsigned long long)total.proposals,
              (unsigned long long)total.committed, (unsigned long long)total.elections,
              (unsigned long long)total.reads, (unsigned long long)total.restarts);
}

// mode bit 0: pre-vote, bit 1: check-quorum.
INSTANTIATE_TEST_SUITE_P(Modes, SimulationTest, ::testing::Values(0, 1, 2, 3));

// The checker itself must catch what it claims to catch.
TEST(InvariantCheckerTest, CatchesViolations) {
  testing::QuietLogs();
  auto make = [](uint64_t id, std::vector<Entry> log, HardState hs) {
    auto p = std::make_unique<Peer>();
    p->id = id;
    p->storage = std::make_unique<MemoryStorage>();
    EXPECT_TRUE(p->storage->Append(log).ok());
    p->storage->SetHardState(hs);
    p->config = testing::MakeConfig(id, {1, 2}, p->storage.get(), 1);
    p->node = std::move(RawNode::Create(p->config)).value();
    return p;
  };
  const Entry a{1, 1, EntryType::kNormal, "a"}, b{1, 1, EntryType::kNormal, "b"};
  const Entry a2{2, 2, EntryType::kNormal, "x"}, b2{3, 2, EntryType::kNormal, "y"};
  {
    // Different entries committed at the same index.
    auto p1 = make(1, {a}, HardState{1, 1, 1});
    auto p2 = make(2, {b}, HardState{1, 1, 1});
    testing::InvariantChecker c;
    EXPECT_NE(c.Check({{1, p1.get()}, {2, p2.get()}}).find("committed entry"), std::string::npos);
  }
  {
    // Same (index, term) but different history.
    auto p1 = make(1, {a, a2}, HardState{2, 1, 0});
    auto p2 = make(2, {b, a2}, HardState{2, 1, 0});
    testing::InvariantChecker c;
    EXPECT_NE(c.Check({{1, p1.get()}, {2, p2.get()}}).find("log matching"), std::string::npos);
  }
  {
    // Commit going back (a node restarted from a lost hard state).
    auto p1 = make(1, {a, b2}, HardState{3, 1, 2});
    testing::InvariantChecker c;
    EXPECT_EQ(c.Check({{1, p1.get()}}), "");
    p1->storage->SetHardState(HardState{3, 1, 1});
    p1->Restart();
    EXPECT_NE(c.Check({{1, p1.get()}}).find("commit went back"), std::string::npos);
  }
  {
    // Two leaders in one term.
    auto p1 = make(1, {}, HardState{});
    auto p2 = make(2, {}, HardState{});
    p1->config.voters = {1};
    p2->config.voters = {2};
    p1->Restart();
    p2->Restart();
    ASSERT_TRUE(p1->node->Campaign().ok());
    ASSERT_TRUE(p2->node->Campaign().ok());
    p1->Drain();
    p2->Drain();
    testing::InvariantChecker c;
    EXPECT_NE(c.Check({{1, p1.get()}, {2, p2.get()}}).find("two leaders"), std::string::npos);
  }
}

}  // namespace
}  // namespace engram::raft
