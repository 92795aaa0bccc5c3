#include "src/raft/raft_log.h"

#include <gtest/gtest.h>

#include "src/raft/raft_test_util.h"

namespace engram::raft {
namespace {

std::vector<Entry> Ents(std::vector<std::pair<uint64_t, uint64_t>> index_term) {
  std::vector<Entry> out;
  for (auto [i, t] : index_term) out.push_back(Entry{t, i, EntryType::kNormal, ""});
  return out;
}

class RaftLogTest : public ::testing::Test {
 protected:
  void SetUp() override { testing::QuietLogs(); }
};

TEST_F(RaftLogTest, FindConflict) {
  MemoryStorage s;
  RaftLog l(&s, kNoLimit);
  l.Append(Ents({{1, 1}, {2, 2}, {3, 3}}));
  EXPECT_EQ(l.FindConflict({}), 0u);
  EXPECT_EQ(l.FindConflict(Ents({{1, 1}, {2, 2}, {3, 3}})), 0u);
  EXPECT_EQ(l.FindConflict(Ents({{2, 2}, {3, 3}})), 0u);
  EXPECT_EQ(l.FindConflict(Ents({{2, 2}, {3, 3}, {4, 4}})), 4u);  // new entries
  EXPECT_EQ(l.FindConflict(Ents({{1, 4}, {2, 4}})), 1u);           // conflicts
  EXPECT_EQ(l.FindConflict(Ents({{3, 4}, {4, 4}})), 3u);
}

TEST_F(RaftLogTest, MaybeAppendConsistencyCheckAndConflicts) {
  struct Case {
    uint64_t index, log_term, commit;
    std::vector<Entry> ents;
    bool ok;
    uint64_t last_new, want_commit, want_last;
  };
  // Log 1/1 2/2 3/3, committed 1 (etcd's TestLogMaybeAppend, trimmed).
  std::vector<Case> cases = {
      {3, 2, 3, Ents({{4, 4}}), false, 0, 1, 3},             // term mismatch at 3
      {4, 3, 3, Ents({{5, 4}}), false, 0, 1, 3},             // index beyond the log
      {3, 3, 3, {}, true, 3, 3, 3},                          // heartbeat-like, commits 3
      {3, 3, 4, {}, true, 3, 3, 3},                          // commit capped at last new
      {3, 3, 2, {}, true, 3, 2, 3},
      {3, 3, 4, Ents({{4, 4}}), true, 4, 4, 4},              // appends
      {2, 2, 4, Ents({{3, 4}}), true, 3, 3, 3},              // conflict at 3: truncate + append
      {1, 1, 4, Ents({{2, 4}, {3, 4}, {4, 4}}), true, 4, 4, 4},
      {1, 1, 1, Ents({{2, 2}, {3, 3}}), true, 3, 1, 3},      // all present: nothing changes
  };
  for (size_t i = 0; i < cases.size(); i++) {
    MemoryStorage s;
    RaftLog l(&s, kNoLimit);
    l.Append(Ents({{1, 1}, {2, 2}, {3, 3}}));
    l.CommitTo(1);
    const Case& c = cases[i];
    uint64_t last_new = 0;
    EXPECT_EQ(l.MaybeAppend(c.index, c.log_term, c.commit, c.ents, &last_new), c.ok) << "case " << i;
    if (c.ok) { EXPECT_EQ(last_new, c.last_new) << "case " << i; }
    EXPECT_EQ(l.committed(), c.want_commit) << "case " << i;
    EXPECT_EQ(l.LastIndex(), c.want_last) << "case " << i;
    for (const Entry& e : c.ents) {
      if (c.ok) { EXPECT_TRUE(l.MatchTerm(e.index, e.term)) << "case " << i; }
    }
  }
}

TEST_F(RaftLogTest, ConflictWithCommittedPanics) {
  MemoryStorage s;
  RaftLog l(&s, kNoLimit);
  l.Append(Ents({{1, 1}, {2, 2}, {3, 3}}));
  l.CommitTo(2);
  uint64_t last_new = 0;
  EXPECT_DEATH(l.MaybeAppend(1, 1, 3, Ents({{2, 4}}), &last_new), "conflicts with a committed entry");
}

TEST_F(RaftLogTest, CommitNeverGoesBackAndNotBeyondLog) {
  MemoryStorage s;
  RaftLog l(&s, kNoLimit);
  l.Append(Ents({{1, 1}, {2, 2}}));
  l.CommitTo(2);
  l.CommitTo(1);
  EXPECT_EQ(l.committed(), 2u);
  EXPECT_DEATH(l.CommitTo(3), "commit index is out of range");
}

TEST_F(RaftLogTest, MaybeCommitOnlyCurrentTerm) {
  MemoryStorage s;
  RaftLog l(&s, kNoLimit);
  l.Append(Ents({{1, 1}, {2, 2}, {3, 3}}));
  EXPECT_FALSE(l.MaybeCommit(2, 3)) << "entry 2 is of term 2, not 3";
  EXPECT_EQ(l.committed(), 0u);
  EXPECT_TRUE(l.MaybeCommit(3, 3));
  EXPECT_EQ(l.committed(), 3u);
}

TEST_F(RaftLogTest, UnstableAndStable) {
  MemoryStorage s;
  ASSERT_TRUE(s.Append(Ents({{1, 1}, {2, 1}})).ok());
  RaftLog l(&s, kNoLimit);
  EXPECT_EQ(l.LastIndex(), 2u);
  EXPECT_EQ(l.StableLastIndex(), 2u);
  l.Append(Ents({{3, 2}, {4, 2}}));
  EXPECT_EQ(l.LastIndex(), 4u);
  EXPECT_EQ(l.StableLastIndex(), 2u);
  EXPECT_EQ(l.UnstableEntries().size(), 2u);
  // A conflicting append below the unstable part shadows storage.
  l.Append(Ents({{2, 3}}));
  EXPECT_EQ(l.LastIndex(), 2u);
  EXPECT_EQ(l.Term(2).value(), 3u);
  EXPECT_EQ(l.StableLastIndex(), 1u);
  EXPECT_FALSE(l.StableTo(4, 2)) << "entry 4 is gone";
  ASSERT_TRUE(s.Append(l.UnstableEntries()).ok());
  EXPECT_TRUE(l.StableTo(2, 3));
  EXPECT_EQ(l.StableLastIndex(), 2u);
  EXPECT_TRUE(l.UnstableEntries().empty());
  EXPECT_EQ(l.Term(2).value(), 3u);
}

TEST_F(RaftLogTest, NextCommittedEntsOnlyDurable) {
  MemoryStorage s;
  ASSERT_TRUE(s.Append(Ents({{1, 1}, {2, 1}})).ok());
  RaftLog l(&s, kNoLimit);
  l.Append(Ents({{3, 1}}));
  l.CommitTo(3);
  EXPECT_EQ(l.MaxAppliableIndex(), 2u);
  auto ents = l.NextCommittedEnts(0);
  ASSERT_EQ(ents.size(), 2u);
  EXPECT_EQ(l.NextCommittedEnts(2).size(), 0u);
  l.AppliedTo(2);
  EXPECT_FALSE(l.HasNextCommittedEnts(2));
}

TEST_F(RaftLogTest, SliceAcrossStorageAndUnstableWithLimit) {
  MemoryStorage s;
  s.ResetCompacted(2, 1);
  ASSERT_TRUE(s.Append(Ents({{3, 1}, {4, 1}})).ok());
  RaftLog l(&s, kNoLimit);
  l.Append(Ents({{5, 2}, {6, 2}}));
  EXPECT_EQ(l.Slice(2, 4, kNoLimit).status().message(), kErrCompacted);
  auto all = l.Slice(3, 7, kNoLimit);
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 4u);
  EXPECT_EQ((*all)[3].index, 6u);
  auto some = l.Slice(3, 7, 3 * EntrySize(Entry{}));
  ASSERT_EQ(some->size(), 3u);
  auto one = l.Slice(4, 7, 0);
  ASSERT_EQ(one->size(), 1u);
  EXPECT_EQ(l.Term(2).value(), 1u) << "the compacted prefix keeps its last term";
  EXPECT_FALSE(l.Term(1).ok());
  EXPECT_FALSE(l.Term(7).ok());
}

TEST_F(RaftLogTest, FindConflictByTerm) {
  MemoryStorage s;
  RaftLog l(&s, kNoLimit);
  l.Append(Ents({{1, 1}, {2, 1}, {3, 3}, {4, 3}, {5, 5}}));
  EXPECT_EQ(l.FindConflictByTerm(5, 4), (std::pair<uint64_t, uint64_t>{4, 3}));
  EXPECT_EQ(l.FindConflictByTerm(5, 2), (std::pair<uint64_t, uint64_t>{2, 1}));
  EXPECT_EQ(l.FindConflictByTerm(5, 9), (std::pair<uint64_t, uint64_t>{5, 5}));
  EXPECT_EQ(l.FindConflictByTerm(4, 0), (std::pair<uint64_t, uint64_t>{0, 0}));
  EXPECT_EQ(l.FindConflictByTerm(9, 9), (std::pair<uint64_t, uint64_t>{9, 0})) << "beyond the log";
}

TEST_F(RaftLogTest, IsUpToDate) {
  MemoryStorage s;
  RaftLog l(&s, kNoLimit);
  l.Append(Ents({{1, 1}, {2, 2}, {3, 3}}));
  EXPECT_TRUE(l.IsUpToDate(1, 4)) << "higher last term wins";
  EXPECT_FALSE(l.IsUpToDate(9, 2)) << "lower last term loses, whatever the length";
  EXPECT_TRUE(l.IsUpToDate(3, 3));
  EXPECT_FALSE(l.IsUpToDate(2, 3));
  EXPECT_TRUE(l.IsUpToDate(4, 3));
}

}  // namespace
}  // namespace engram::raft
