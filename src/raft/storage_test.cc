#include "src/raft/storage.h"

#include <gtest/gtest.h>

namespace engram::raft {
namespace {

std::vector<Entry> Ents(std::vector<std::pair<uint64_t, uint64_t>> index_term) {
  std::vector<Entry> out;
  for (auto [i, t] : index_term) out.push_back(Entry{t, i, EntryType::kNormal, ""});
  return out;
}

std::vector<std::pair<uint64_t, uint64_t>> Dump(const MemoryStorage& s) {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  auto t = s.Term(s.FirstIndex() - 1);
  out.push_back({s.FirstIndex() - 1, t.ok() ? *t : 999});
  if (s.LastIndex() < s.FirstIndex()) return out;
  auto ents = s.Entries(s.FirstIndex(), s.LastIndex() + 1, kNoLimit);
  for (const Entry& e : *ents) out.push_back({e.index, e.term});
  return out;
}

using IT = std::vector<std::pair<uint64_t, uint64_t>>;

TEST(MemoryStorageTest, Fresh) {
  MemoryStorage s;
  EXPECT_EQ(s.FirstIndex(), 1u);
  EXPECT_EQ(s.LastIndex(), 0u);
  EXPECT_EQ(s.Term(0).value(), 0u);
  EXPECT_EQ(s.Term(1).status().message(), kErrUnavailable);
  EXPECT_TRUE(s.InitialState().first.Empty());
}

TEST(MemoryStorageTest, TermAndEntriesBounds) {
  MemoryStorage s;
  s.ResetCompacted(3, 3);
  ASSERT_TRUE(s.Append(Ents({{4, 4}, {5, 5}})).ok());
  EXPECT_EQ(s.Term(2).status().message(), kErrCompacted);
  EXPECT_EQ(s.Term(3).value(), 3u);
  EXPECT_EQ(s.Term(5).value(), 5u);
  EXPECT_EQ(s.Term(6).status().message(), kErrUnavailable);

  EXPECT_EQ(s.Entries(3, 5, kNoLimit).status().message(), kErrCompacted);
  EXPECT_EQ(s.Entries(4, 7, kNoLimit).status().code(), Code::kOutOfRange);
  auto e = s.Entries(4, 6, kNoLimit);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->size(), 2u);
  // The size limit still returns at least one entry.
  e = s.Entries(4, 6, 0);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->size(), 1u);
  e = s.Entries(4, 6, 2 * EntrySize(Entry{}));
  EXPECT_EQ(e->size(), 2u);
  e = s.Entries(4, 6, 2 * EntrySize(Entry{}) - 1);
  EXPECT_EQ(e->size(), 1u);
}

TEST(MemoryStorageTest, AppendOverlapAndTruncation) {
  struct Case {
    std::vector<Entry> append;
    bool ok;
    IT want;
  };
  // Starting log: dummy (3,3), then 4/4, 5/5 (etcd's TestStorageAppend table).
  std::vector<Case> cases = {
      {Ents({{4, 4}, {5, 5}}), true, {{3, 3}, {4, 4}, {5, 5}}},           // same entries
      {Ents({{4, 4}, {5, 6}, {6, 6}}), true, {{3, 3}, {4, 4}, {5, 6}, {6, 6}}},  // conflict at 5
      {Ents({{4, 4}, {5, 5}, {6, 5}}), true, {{3, 3}, {4, 4}, {5, 5}, {6, 5}}},  // extends
      {Ents({{2, 3}, {3, 3}, {4, 5}}), true, {{3, 3}, {4, 5}}},          // compacted prefix skipped, truncates
      {Ents({{4, 5}}), true, {{3, 3}, {4, 5}}},                          // truncates the rest
      {Ents({{6, 5}}), true, {{3, 3}, {4, 4}, {5, 5}, {6, 5}}},          // direct append
      {Ents({{1, 1}, {2, 2}}), true, {{3, 3}, {4, 4}, {5, 5}}},          // all compacted: no-op
      {Ents({{7, 5}}), false, {{3, 3}, {4, 4}, {5, 5}}},                 // gap
  };
  for (size_t i = 0; i < cases.size(); i++) {
    MemoryStorage s;
    s.ResetCompacted(3, 3);
    ASSERT_TRUE(s.Append(Ents({{4, 4}, {5, 5}})).ok());
    Status st = s.Append(cases[i].append);
    EXPECT_EQ(st.ok(), cases[i].ok) << "case " << i << ": " << st.ToString();
    EXPECT_EQ(Dump(s), cases[i].want) << "case " << i;
  }
}

TEST(MemoryStorageTest, AppendRejectsNonConsecutive) {
  MemoryStorage s;
  EXPECT_EQ(s.Append(Ents({{1, 1}, {3, 1}})).code(), Code::kInvalidArgument);
  EXPECT_EQ(s.LastIndex(), 0u);
}

TEST(MemoryStorageTest, Compact) {
  MemoryStorage s;
  ASSERT_TRUE(s.Append(Ents({{1, 1}, {2, 1}, {3, 2}, {4, 2}, {5, 3}})).ok());
  EXPECT_EQ(s.Compact(0).message(), kErrCompacted);
  ASSERT_TRUE(s.Compact(3).ok());
  EXPECT_EQ(Dump(s), (IT{{3, 2}, {4, 2}, {5, 3}}));
  EXPECT_EQ(s.FirstIndex(), 4u);
  EXPECT_EQ(s.Compact(3).message(), kErrCompacted);
  EXPECT_EQ(s.Compact(6).code(), Code::kOutOfRange);
  ASSERT_TRUE(s.Compact(5).ok());
  EXPECT_EQ(Dump(s), (IT{{5, 3}}));
  EXPECT_EQ(s.FirstIndex(), 6u);
  EXPECT_EQ(s.LastIndex(), 5u);
  ASSERT_TRUE(s.Append(Ents({{6, 3}})).ok());
  EXPECT_EQ(Dump(s), (IT{{5, 3}, {6, 3}}));
}

TEST(MemoryStorageTest, ResetCompactedKeepsState) {
  MemoryStorage s;
  s.SetHardState(HardState{7, 2, 100});
  s.SetConfState(ConfState{{1, 2, 3}, {}});
  ASSERT_TRUE(s.Append(Ents({{1, 1}})).ok());
  s.ResetCompacted(100, 7);
  EXPECT_EQ(s.FirstIndex(), 101u);
  EXPECT_EQ(s.LastIndex(), 100u);
  EXPECT_EQ(s.Term(100).value(), 7u);
  EXPECT_EQ(s.InitialState().first, (HardState{7, 2, 100}));
  EXPECT_EQ(s.InitialState().second.voters.size(), 3u);
  EXPECT_EQ(s.Append(Ents({{102, 7}})).code(), Code::kOutOfRange);
  ASSERT_TRUE(s.Append(Ents({{101, 7}, {102, 7}})).ok());
  EXPECT_EQ(s.LastIndex(), 102u);
}

}  // namespace
}  // namespace engram::raft
