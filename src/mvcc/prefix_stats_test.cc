// Per-prefix live keys/bytes kept by the store (prefix_stats.h): committed
// batches count, aborted ones do not, overwrites and deletes adjust bytes,
// compaction changes nothing, and a reopen rebuilds the same numbers.
#include "src/mvcc/prefix_stats.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <map>

#include "src/mvcc/store.h"

namespace engram::mvcc {
namespace {

using Totals = std::map<std::string, std::pair<int64_t, int64_t>>;

class PrefixStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/engram_prefix_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    Open();
  }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(root_);
  }
  void Open() {
    store_.reset();
    Options o;
    o.dir = root_ + "/snap";
    o.map_size = 1ull << 30;
    o.prefix_depth = 2;
    auto s = Store::Open(o);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(*s);
  }
  Totals Get() {
    Totals t;
    for (const auto& e : store_->prefix_stats().Snapshot()) t[e.prefix] = {e.keys, e.bytes};
    return t;
  }
  void Commit(std::unique_ptr<Store::Batch> b) { ASSERT_TRUE(b->Commit(++index_).ok()); }

  std::string root_;
  std::unique_ptr<Store> store_;
  uint64_t index_ = 0;
};

TEST_F(PrefixStoreTest, PutOverwriteDeleteAbortCompactReopen) {
  {
    auto b = store_->BeginBatch();
    {
      auto t = b->Begin();
      ASSERT_TRUE(t.Put("/r/pods/a", "1234", 0, nullptr).ok());  // 9 + 4
      ASSERT_TRUE(t.Put("/r/pods/b", "1", 0, nullptr).ok());     // 9 + 1
    }
    {
      auto t = b->Begin();
      ASSERT_TRUE(t.Put("/r/pods/a", "12", 0, nullptr).ok());  // overwrite in the same batch: 9 + 2
      ASSERT_TRUE(t.Put("x/y", "zz", 0, nullptr).ok());        // 3 + 2
    }
    Commit(std::move(b));
  }
  EXPECT_EQ(Get(), (Totals{{"/r/pods", {2, 21}}, {"x", {1, 5}}}));

  // An aborted batch leaves no trace.
  {
    auto b = store_->BeginBatch();
    auto t = b->Begin();
    ASSERT_TRUE(t.Put("/r/pods/c", "v", 0, nullptr).ok());
    ASSERT_TRUE(t.DeleteRange("/r/pods/a", "", nullptr).ok());
    t.End();
    b->Abort();
  }
  EXPECT_EQ(Get(), (Totals{{"/r/pods", {2, 21}}, {"x", {1, 5}}}));

  // Delete with and without prev kvs asked for; overwrite with prev asked for.
  {
    auto b = store_->BeginBatch();
    {
      auto t = b->Begin();
      std::vector<KeyValue> prev;
      ASSERT_EQ(t.DeleteRange("/r/pods/b", "", &prev).value(), 1);
    }
    {
      auto t = b->Begin();
      std::optional<KeyValue> prev;
      ASSERT_TRUE(t.Put("x/y", "zzzz", 0, &prev).ok());
    }
    Commit(std::move(b));
  }
  EXPECT_EQ(Get(), (Totals{{"/r/pods", {1, 11}}, {"x", {1, 7}}}));
  {
    auto b = store_->BeginBatch();
    {
      auto t = b->Begin();
      ASSERT_EQ(t.DeleteRange("x", "y", nullptr).value(), 1);
    }
    ASSERT_TRUE(b->Compact(b->Rev()).ok());
    Commit(std::move(b));
  }
  Totals want{{"/r/pods", {1, 11}}, {"x", {0, 0}}};
  EXPECT_EQ(Get(), want);
  // Reopen: rebuilt from the index (a prefix with no live key is not listed).
  Open();
  EXPECT_EQ(Get(), (Totals{{"/r/pods", {1, 11}}}));
}

TEST_F(PrefixStoreTest, OffByDefault) {
  store_.reset();
  Options o;
  o.dir = root_ + "/snap2";
  auto s = Store::Open(o);
  ASSERT_TRUE(s.ok());
  auto b = (*s)->BeginBatch();
  {
    auto t = b->Begin();
    ASSERT_TRUE(t.Put("/a/b/c", "v", 0, nullptr).ok());
  }
  ASSERT_TRUE(b->Commit(1).ok());
  b.reset();
  EXPECT_FALSE((*s)->prefix_stats().enabled());
  EXPECT_TRUE((*s)->prefix_stats().Snapshot().empty());
}

}  // namespace
}  // namespace engram::mvcc
