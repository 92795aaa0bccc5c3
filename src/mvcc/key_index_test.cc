#include "src/mvcc/key_index.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace engram::mvcc {
namespace {

Revision P(int64_t main, uint32_t sub = 0) { return Revision{main, sub, 0}; }
Revision T(int64_t main, uint32_t sub = 0) { return Revision{main, sub, 1}; }

std::vector<int64_t> Mains(const RevList& l) {
  std::vector<int64_t> v;
  for (const Revision& r : l) v.push_back(r.main);
  return v;
}

TEST(RevList, InlineThenHeapThenShrink) {
  RevList l;
  EXPECT_TRUE(l.empty());
  l.push_back(P(2));
  EXPECT_EQ(Mains(l), (std::vector<int64_t>{2}));
  for (int i = 3; i <= 20; i++) l.push_back(P(i));
  EXPECT_EQ(l.size(), 19u);
  EXPECT_EQ(l.back().main, 20);
  l.erase_front(10);
  EXPECT_EQ(l.size(), 9u);
  EXPECT_EQ(l[0].main, 12);
  l.erase_front(8);
  EXPECT_EQ(Mains(l), (std::vector<int64_t>{20}));  // back inline
  l.push_back(P(21));
  l.push_back(P(22));
  l.truncate(1);
  EXPECT_EQ(Mains(l), (std::vector<int64_t>{20}));
  l.truncate(0);
  EXPECT_TRUE(l.empty());
  l.push_back(P(30));
  RevList m(std::move(l));
  EXPECT_EQ(Mains(m), (std::vector<int64_t>{30}));
  EXPECT_TRUE(l.empty());  // NOLINT: moved-from is empty by contract
}

TEST(KeyEntry, VisibleRevision) {
  KeyEntry e;
  e.revs.push_back(P(2));
  e.revs.push_back(P(4));
  e.revs.push_back(T(6));
  e.revs.push_back(P(8));
  EXPECT_EQ(e.At(1), nullptr);
  EXPECT_EQ(e.At(2)->main, 2);
  EXPECT_EQ(e.At(3)->main, 2);
  EXPECT_EQ(e.At(5)->main, 4);
  EXPECT_EQ(e.At(6), nullptr);  // deleted
  EXPECT_EQ(e.At(7), nullptr);
  EXPECT_EQ(e.At(8)->main, 8);
  EXPECT_EQ(e.At(100)->main, 8);
  EXPECT_TRUE(e.Alive());
}

TEST(KeyIndex, CompactRules) {
  KeyIndex idx;
  bool ins;
  auto add = [&](const char* k, std::vector<Revision> revs) {
    auto it = idx.FindOrInsert(k, &ins);
    for (auto& r : revs) it->second.revs.push_back(r);
  };
  add("a", {P(2), P(3), P(7)});   // keep 3 (latest <= 5) and 7
  add("b", {P(2), T(4)});         // latest <= 5 is a tombstone: all gone, key erased
  add("c", {P(2), T(4), P(6)});   // drop 2 and 4, keep 6
  add("d", {P(6)});               // untouched
  add("e", {P(5, 0), P(5, 1)});   // same main: keep the newest sub only
  std::vector<Revision> removed;
  idx.Compact(5, &removed);
  EXPECT_EQ(removed.size(), 6u);
  EXPECT_EQ(idx.size(), 4u);
  EXPECT_EQ(Mains(idx.Find("a")->second.revs), (std::vector<int64_t>{3, 7}));
  EXPECT_EQ(idx.Find("b"), idx.End());
  EXPECT_EQ(Mains(idx.Find("c")->second.revs), (std::vector<int64_t>{6}));
  EXPECT_EQ(Mains(idx.Find("d")->second.revs), (std::vector<int64_t>{6}));
  ASSERT_EQ(idx.Find("e")->second.revs.size(), 1u);
  EXPECT_EQ(idx.Find("e")->second.revs[0].sub, 1u);
  // Idempotent.
  removed.clear();
  idx.Compact(5, &removed);
  EXPECT_TRUE(removed.empty());
}

TEST(KeyIndex, VisitRangeRules) {
  KeyIndex idx;
  bool ins;
  for (const char* k : {"a", "ab", "b", "c"}) idx.FindOrInsert(k, &ins)->second.revs.push_back(P(2));
  auto keys = [&](std::string_view key, std::string_view end) {
    std::vector<std::string> out;
    idx.Visit(key, end, 10, [&](KeyIndex::Map::const_iterator it, const Revision&) {
      out.push_back(it->first);
      return true;
    });
    return out;
  };
  const std::string_view zero("\0", 1);
  EXPECT_EQ(keys("a", ""), (std::vector<std::string>{"a"}));
  EXPECT_EQ(keys("x", ""), (std::vector<std::string>{}));
  EXPECT_EQ(keys("a", "b"), (std::vector<std::string>{"a", "ab"}));
  EXPECT_EQ(keys("ab", zero), (std::vector<std::string>{"ab", "b", "c"}));
  EXPECT_EQ(keys(zero, zero), (std::vector<std::string>{"a", "ab", "b", "c"}));
  EXPECT_EQ(keys("c", "a"), (std::vector<std::string>{}));
  EXPECT_EQ(keys("b", "b"), (std::vector<std::string>{}));
}

}  // namespace
}  // namespace engram::mvcc
