#include "src/mvcc/store.h"

#include <gtest/gtest.h>
#include <lmdb.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "src/common/coding.h"
#include "src/common/failpoint.h"
#include "src/mvcc/format.h"

namespace engram::mvcc {
namespace {

namespace fs = std::filesystem;

const std::string kZero("\0", 1);
const char* kFuture = "mvcc: required revision is a future revision";
const char* kCompacted = "mvcc: required revision has been compacted";

#define ASSERT_OK(expr)                                  \
  do {                                                   \
    const ::engram::Status _s = (expr);                  \
    ASSERT_TRUE(_s.ok()) << _s.ToString();               \
  } while (0)

std::vector<std::string> Keys(const RangeResult& r) {
  std::vector<std::string> v;
  for (const auto& kv : r.kvs) v.push_back(kv.key);
  return v;
}

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/engram_mvcc_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    dir_ = root_ + "/member/snap";
    Open();
  }
  void TearDown() override {
    failpoint::Set("mvcc-before-commit", "off");
    failpoint::Set("mvcc-before-compaction", "off");
    store_.reset();
    fs::remove_all(root_);
  }

  void Open() {
    Options o;
    o.dir = dir_;
    o.map_size = 1ull << 30;
    o.probe = &probe_;
    auto r = Store::Open(o);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    store_ = std::move(r).value();
  }
  void Reopen() {
    store_.reset();
    Open();
  }

  // One request per batch; returns the store's revision afterwards.
  int64_t Put(std::string_view k, std::string_view v, int64_t lease = 0) {
    auto b = store_->BeginBatch();
    {
      auto t = b->Begin();
      EXPECT_TRUE(t.Put(k, v, lease, nullptr).ok());
    }
    EXPECT_TRUE(b->Commit(++ci_).ok());
    return store_->Rev();
  }
  int64_t Del(std::string_view k, std::string_view end = {}) {
    auto b = store_->BeginBatch();
    {
      auto t = b->Begin();
      EXPECT_TRUE(t.DeleteRange(k, end, nullptr).ok());
    }
    EXPECT_TRUE(b->Commit(++ci_).ok());
    return store_->Rev();
  }
  Status Compact(int64_t rev) {
    auto b = store_->BeginBatch();
    Status st = b->Compact(rev);
    if (!st.ok()) return st;
    st = b->Commit(++ci_);
    store_->FinishCompaction();  // the apply loop runs the steps between batches
    return st;
  }
  RangeResult Range(std::string_view k, std::string_view end = {}, RangeOptions o = {}) {
    auto r = store_->Range(k, end, o);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? r.value() : RangeResult{};
  }
  std::optional<KeyValue> Get(std::string_view k, int64_t rev = 0) {
    RangeOptions o;
    o.rev = rev;
    RangeResult r = Range(k, {}, o);
    if (r.kvs.empty()) return std::nullopt;
    return r.kvs[0];
  }

  std::string root_, dir_;
  MvccProbe probe_;
  std::unique_ptr<Store> store_;
  uint64_t ci_ = 0;
};

// ---------------------------------------------------------------------------
// Revisions

TEST_F(StoreTest, RevisionsAndGenerations) {
  EXPECT_EQ(store_->Rev(), 1);
  EXPECT_EQ(Put("foo", "bar", 7), 2);
  auto kv = Get("foo");
  ASSERT_TRUE(kv);
  EXPECT_EQ(*kv, (KeyValue{"foo", "bar", 2, 2, 1, 7}));

  EXPECT_EQ(Put("foo", "baz"), 3);
  EXPECT_EQ(*Get("foo"), (KeyValue{"foo", "baz", 2, 3, 2, 0}));

  EXPECT_EQ(Del("foo"), 4);
  EXPECT_FALSE(Get("foo"));
  EXPECT_EQ(Range("foo").count, 0);

  EXPECT_EQ(Put("foo", "new"), 5);
  EXPECT_EQ(*Get("foo"), (KeyValue{"foo", "new", 5, 5, 1, 0}));
  EXPECT_EQ(probe_.current_revision.Value(), 5);
  EXPECT_EQ(probe_.keys_total.Value(), 1);
}

TEST_F(StoreTest, TxnWithSeveralOpsGetsOneRevision) {
  Put("c", "1");  // rev 2
  auto b = store_->BeginBatch();
  {
    auto t = b->Begin();
    EXPECT_EQ(t.Rev(), 2);  // nothing written yet
    ASSERT_OK(t.Put("a", "1", 0, nullptr));
    EXPECT_EQ(t.Rev(), 3);
    ASSERT_OK(t.Put("b", "1", 0, nullptr));
    ASSERT_OK(t.Put("a", "2", 0, nullptr));  // same key twice: version 2, same mod
    auto n = t.DeleteRange("c", {}, nullptr);
    ASSERT_TRUE(n.ok());
    EXPECT_EQ(n.value(), 1);
    EXPECT_EQ(t.Rev(), 3);
    t.End();
  }
  EXPECT_EQ(b->Rev(), 3);
  EXPECT_EQ(store_->Rev(), 2);  // not committed yet
  ASSERT_OK(b->Commit(1));
  EXPECT_EQ(store_->Rev(), 3);
  RangeResult r = Range("a", "z");
  ASSERT_EQ(Keys(r), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(r.kvs[0], (KeyValue{"a", "2", 3, 3, 2, 0}));
  EXPECT_EQ(r.kvs[1], (KeyValue{"b", "1", 3, 3, 1, 0}));
  EXPECT_EQ(r.rev, 3);
}

TEST_F(StoreTest, SeveralRequestsInOneBatch) {
  auto b = store_->BeginBatch();
  for (int i = 0; i < 3; i++) {
    auto t = b->Begin();
    ASSERT_OK(t.Put("k", std::to_string(i), 0, nullptr));
    EXPECT_EQ(t.Rev(), 2 + i);
  }
  ASSERT_OK(b->Commit(10));
  EXPECT_EQ(store_->Rev(), 4);
  EXPECT_EQ(store_->ConsistentIndex(), 10u);
  EXPECT_EQ(*Get("k"), (KeyValue{"k", "2", 2, 4, 3, 0}));
  EXPECT_EQ(Get("k", 3)->value, "1");
}

TEST_F(StoreTest, RequestsThatWriteNothingDoNotAdvance) {
  Put("a", "1");
  EXPECT_EQ(Del("missing"), 2);
  EXPECT_EQ(Del("x", "z"), 2);
  auto b = store_->BeginBatch();
  {
    auto t = b->Begin();
    auto r = t.Range("a", {}, {});
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->count, 1);
    auto n = t.DeleteRange("nope", {}, nullptr);
    ASSERT_TRUE(n.ok());
    EXPECT_EQ(n.value(), 0);
    EXPECT_EQ(t.Rev(), 2);
  }
  ASSERT_OK(b->Commit(99));
  EXPECT_EQ(store_->Rev(), 2);
  EXPECT_EQ(store_->ConsistentIndex(), 99u);  // the index moves with every batch
}

TEST_F(StoreTest, PrevKvs) {
  Put("a", "1", 5);
  Put("b", "2");
  auto b = store_->BeginBatch();
  {
    auto t = b->Begin();
    std::optional<KeyValue> prev;
    ASSERT_OK(t.Put("a", "1b", 0, &prev));
    ASSERT_TRUE(prev);
    EXPECT_EQ(*prev, (KeyValue{"a", "1", 2, 2, 1, 5}));
    ASSERT_OK(t.Put("new", "x", 0, &prev));
    EXPECT_FALSE(prev);
    ASSERT_OK(t.Put("a", "1c", 0, &prev));  // sees this request's own put
    EXPECT_EQ(*prev, (KeyValue{"a", "1b", 2, 4, 2, 0}));
    std::vector<KeyValue> prevs;
    auto n = t.DeleteRange("a", "c", &prevs);
    ASSERT_TRUE(n.ok());
    EXPECT_EQ(n.value(), 2);
    ASSERT_EQ(prevs.size(), 2u);
    EXPECT_EQ(prevs[0], (KeyValue{"a", "1c", 2, 4, 3, 0}));
    EXPECT_EQ(prevs[1], (KeyValue{"b", "2", 3, 3, 1, 0}));
  }
  ASSERT_OK(b->Commit(1));
  EXPECT_EQ(Keys(Range(kZero, kZero)), (std::vector<std::string>{"new"}));
}

// ---------------------------------------------------------------------------
// History

TEST_F(StoreTest, HistoryAtOlderRevisions) {
  Put("k", "v1");  // 2
  Put("k", "v2");  // 3
  Put("o", "x");   // 4
  Del("k");        // 5
  Put("k", "v3");  // 6
  EXPECT_FALSE(Get("k", 1));
  EXPECT_EQ(Get("k", 2)->value, "v1");
  EXPECT_EQ(Get("k", 3)->value, "v2");
  EXPECT_EQ(Get("k", 4)->value, "v2");  // deleted key visible before the delete
  EXPECT_FALSE(Get("k", 5));
  EXPECT_EQ(*Get("k", 6), (KeyValue{"k", "v3", 6, 6, 1, 0}));
  RangeOptions o;
  o.rev = 3;
  RangeResult r = Range(kZero, kZero, o);
  EXPECT_EQ(Keys(r), (std::vector<std::string>{"k"}));
  EXPECT_EQ(r.rev, 6);  // header revision is the current one
  o.rev = 4;
  EXPECT_EQ(Keys(Range(kZero, kZero, o)), (std::vector<std::string>{"k", "o"}));
}

// ---------------------------------------------------------------------------
// Ranges

class RangeTest : public StoreTest {
 protected:
  void SetUp() override {
    StoreTest::SetUp();
    auto b = store_->BeginBatch();
    {
      auto t = b->Begin();
      for (const char* k : {"a", "a/1", "a/2", "b", "c", "d"}) ASSERT_OK(t.Put(k, std::string("v-") + k, 0, nullptr));
    }
    ASSERT_OK(b->Commit(1));
  }
};

TEST_F(RangeTest, SingleKey) {
  EXPECT_EQ(Keys(Range("a")), (std::vector<std::string>{"a"}));
  EXPECT_EQ(Range("a").count, 1);
  EXPECT_EQ(Range("zz").count, 0);
  EXPECT_TRUE(Range("zz").kvs.empty());
}

TEST_F(RangeTest, PrefixAndInterval) {
  EXPECT_EQ(Keys(Range("a/", "a0")), (std::vector<std::string>{"a/1", "a/2"}));
  EXPECT_EQ(Keys(Range("a", "c")), (std::vector<std::string>{"a", "a/1", "a/2", "b"}));
  EXPECT_TRUE(Range("c", "a").kvs.empty());
  EXPECT_TRUE(Range("c", "c").kvs.empty());
}

TEST_F(RangeTest, FromKeyAndAll) {
  EXPECT_EQ(Keys(Range("b", kZero)), (std::vector<std::string>{"b", "c", "d"}));
  RangeResult all = Range(kZero, kZero);
  EXPECT_EQ(all.count, 6);
  EXPECT_EQ(Keys(all), (std::vector<std::string>{"a", "a/1", "a/2", "b", "c", "d"}));
  EXPECT_EQ(all.kvs[3].value, "v-b");
}

TEST_F(RangeTest, LimitCountKeysOnlyCountOnly) {
  RangeOptions o;
  o.limit = 2;
  RangeResult r = Range(kZero, kZero, o);
  EXPECT_EQ(Keys(r), (std::vector<std::string>{"a", "a/1"}));
  EXPECT_EQ(r.count, 6);
  o = {};
  o.keys_only = true;
  r = Range("a", "b", o);
  ASSERT_EQ(r.kvs.size(), 3u);
  EXPECT_EQ(r.kvs[0].value, "");
  EXPECT_EQ(r.kvs[0].mod_revision, 2);
  EXPECT_EQ(r.kvs[0].version, 1);
  o = {};
  o.count_only = true;
  r = Range(kZero, kZero, o);
  EXPECT_TRUE(r.kvs.empty());
  EXPECT_EQ(r.count, 6);
  EXPECT_EQ(r.rev, 2);
}

TEST_F(RangeTest, FutureAndCompactedRevisions) {
  Put("a", "again");  // 3
  Put("a", "again2");  // 4
  RangeOptions o;
  o.rev = 5;
  auto r = store_->Range("a", {}, o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kOutOfRange);
  EXPECT_EQ(r.status().message(), kFuture);
  ASSERT_OK(Compact(3));
  o.rev = 2;
  r = store_->Range("a", {}, o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kOutOfRange);
  EXPECT_EQ(r.status().message(), kCompacted);
  o.rev = 3;  // == compact revision: allowed
  EXPECT_EQ(Get("a", 3)->value, "again");
  auto s = store_->Scan("a", {}, 2, [](const KeyValueRef&) { return true; });
  EXPECT_EQ(s.status().message(), kCompacted);
}

TEST_F(RangeTest, ScanVisitsInOrderAndStops) {
  std::vector<std::string> seen;
  auto r = store_->Scan(kZero, kZero, 0, [&](const KeyValueRef& kv) {
    seen.emplace_back(kv.key);
    EXPECT_EQ(kv.value, "v-" + std::string(kv.key));
    return seen.size() < 4;
  });
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.value(), 2);
  EXPECT_EQ(seen, (std::vector<std::string>{"a", "a/1", "a/2", "b"}));
}

// ---------------------------------------------------------------------------
// Read your writes

TEST_F(StoreTest, TxnReadsItsOwnWrites) {
  Put("a", "old");  // 2
  auto b = store_->BeginBatch();
  {
    auto t = b->Begin();
    auto r = t.Range("a", {}, {});
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->kvs[0].value, "old");
    EXPECT_EQ(r->rev, 2);
    ASSERT_OK(t.Put("a", "new", 0, nullptr));
    ASSERT_OK(t.Put("b", "b1", 0, nullptr));
    r = t.Range("a", "c", {});
    ASSERT_TRUE(r.ok());
    ASSERT_EQ(r->kvs.size(), 2u);
    EXPECT_EQ(r->kvs[0], (KeyValue{"a", "new", 2, 3, 2, 0}));
    EXPECT_EQ(r->rev, 3);
    RangeOptions o;
    o.rev = 2;  // older view still works inside the request
    r = t.Range("a", "c", o);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(Keys(r.value()), (std::vector<std::string>{"a"}));
    EXPECT_EQ(r->kvs[0].value, "old");
    o.rev = 4;
    EXPECT_EQ(t.Range("a", {}, o).status().message(), kFuture);
    ASSERT_TRUE(t.DeleteRange("a", {}, nullptr).ok());
    r = t.Range("a", {}, {});
    EXPECT_EQ(r->count, 0);
    // Readers outside the batch still see the committed state.
    EXPECT_EQ(Get("a")->value, "old");
    EXPECT_FALSE(Get("b"));
  }
  {
    auto t = b->Begin();  // a later request in the same batch sees the earlier one
    auto r = t.Range(kZero, kZero, {});
    EXPECT_EQ(Keys(r.value()), (std::vector<std::string>{"b"}));
    EXPECT_EQ(r->rev, 3);
  }
  EXPECT_EQ(store_->Rev(), 2);
  ASSERT_OK(b->Commit(5));
  EXPECT_FALSE(Get("a"));
  EXPECT_EQ(Get("b")->value, "b1");
}

// ---------------------------------------------------------------------------
// Compaction

TEST_F(StoreTest, CompactionKeepsWhatReadsNeed) {
  Put("a", "a1");  // 2
  Put("a", "a2");  // 3
  Put("b", "b1");  // 4
  Del("b");        // 5
  Put("c", "c1");  // 6
  Put("a", "a3");  // 7
  Put("d", "d1");  // 8
  Del("d");        // 9
  Put("d", "d2");  // 10
  ASSERT_OK(Compact(6));
  EXPECT_EQ(store_->CompactRev(), 6);
  EXPECT_EQ(probe_.compact_revision.Value(), 6);
  // Removed: a@2 (older than a@3), b@4 and its tombstone b@5. Everything above 6 stays.
  EXPECT_EQ(probe_.compaction_keys_total.Value(), 3u);

  RangeOptions o;
  for (int64_t rev : {1, 2, 5}) {
    o.rev = rev;
    auto r = store_->Range(kZero, kZero, o);
    EXPECT_EQ(r.status().message(), kCompacted) << rev;
  }
  o.rev = 6;
  RangeResult r = Range(kZero, kZero, o);
  ASSERT_EQ(Keys(r), (std::vector<std::string>{"a", "c"}));
  EXPECT_EQ(r.kvs[0], (KeyValue{"a", "a2", 2, 3, 2, 0}));
  o.rev = 8;
  EXPECT_EQ(Keys(Range(kZero, kZero, o)), (std::vector<std::string>{"a", "c", "d"}));
  o.rev = 9;
  EXPECT_EQ(Keys(Range(kZero, kZero, o)), (std::vector<std::string>{"a", "c"}));
  r = Range(kZero, kZero);
  ASSERT_EQ(Keys(r), (std::vector<std::string>{"a", "c", "d"}));
  EXPECT_EQ(r.kvs[0], (KeyValue{"a", "a3", 2, 7, 3, 0}));
  EXPECT_EQ(r.kvs[2], (KeyValue{"d", "d2", 10, 10, 1, 0}));

  // Versions continue after compaction.
  Put("a", "a4");
  EXPECT_EQ(*Get("a"), (KeyValue{"a", "a4", 2, 11, 4, 0}));

  // The same answers after a restart (the index is rebuilt from what is left).
  Reopen();
  EXPECT_EQ(store_->CompactRev(), 6);
  EXPECT_EQ(store_->Rev(), 11);
  o.rev = 5;
  EXPECT_EQ(store_->Range(kZero, kZero, o).status().message(), kCompacted);
  o.rev = 6;
  r = Range(kZero, kZero, o);
  ASSERT_EQ(Keys(r), (std::vector<std::string>{"a", "c"}));
  EXPECT_EQ(r.kvs[0].value, "a2");
  o.rev = 9;
  EXPECT_EQ(Keys(Range(kZero, kZero, o)), (std::vector<std::string>{"a", "c"}));
}

TEST_F(StoreTest, CompactionErrors) {
  Put("a", "1");  // 2
  Put("a", "2");  // 3
  Status st = Compact(4);
  EXPECT_EQ(st.code(), Code::kOutOfRange);
  EXPECT_EQ(st.message(), kFuture);
  ASSERT_OK(Compact(2));
  st = Compact(2);
  EXPECT_EQ(st.message(), kCompacted);
  st = Compact(1);
  EXPECT_EQ(st.message(), kCompacted);
  ASSERT_OK(Compact(3));  // compacting at the current revision is fine
  EXPECT_EQ(Get("a")->value, "2");
  Reopen();
  EXPECT_EQ(store_->CompactRev(), 3);
  EXPECT_EQ(Compact(3).message(), kCompacted);
}

TEST_F(StoreTest, CompactionInsideABatch) {
  Put("a", "1");  // 2
  auto b = store_->BeginBatch();
  {
    auto t = b->Begin();
    ASSERT_OK(t.Put("a", "2", 0, nullptr));  // 3
  }
  EXPECT_EQ(b->CompactRev(), 0);
  ASSERT_OK(b->Compact(3));  // the batch's own revision counts as current
  EXPECT_EQ(b->CompactRev(), 3);
  EXPECT_EQ(b->Compact(3).message(), kCompacted);
  {
    auto t = b->Begin();
    RangeOptions o;
    o.rev = 2;
    EXPECT_EQ(t.Range("a", {}, o).status().message(), kCompacted);
  }
  EXPECT_EQ(store_->CompactRev(), 0);  // not committed yet
  ASSERT_OK(b->Commit(1));
  EXPECT_EQ(store_->CompactRev(), 3);
  EXPECT_TRUE(store_->CompactionPending());
  store_->FinishCompaction();
  EXPECT_EQ(probe_.compaction_keys_total.Value(), 1u);
}

// The removal runs in bounded steps the writer interleaves with its batches
// (issue 12): between steps new batches commit, reads at or above the compact
// revision see everything, reads below fail, and at the end the garbage is gone.
TEST_F(StoreTest, CompactionRunsInStepsBetweenBatches) {
  Options o;
  o.dir = dir_ + "/steps";
  o.map_size = 1ull << 30;
  o.compaction_batch_limit = 100;
  o.probe = &probe_;
  auto opened = Store::Open(o);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  Store& s = **opened;
  uint64_t ci = 0;
  for (int i = 0; i < 50; i++) {  // 50 batches x 40 keys x overwrite: 2000 revisions, 1960 garbage
    auto b = s.BeginBatch();
    for (int k = 0; k < 40; k++) {
      auto t = b->Begin();
      ASSERT_OK(t.Put("k" + std::to_string(k), std::to_string(i), 0, nullptr));
    }
    ASSERT_OK(b->Commit(++ci));
  }
  const int64_t at = s.Rev();
  const uint64_t removed0 = probe_.compaction_keys_total.Value();
  {
    auto b = s.BeginBatch();
    ASSERT_OK(b->Compact(at));
    ASSERT_OK(b->Commit(++ci));
  }
  EXPECT_EQ(at, s.CompactRev());
  int steps = 0;
  while (s.CompactionPending()) {
    ASSERT_TRUE(s.CompactStep() || !s.CompactionPending());
    steps++;
    // A write between steps.
    auto b = s.BeginBatch();
    {
      auto t = b->Begin();
      ASSERT_OK(t.Put("new" + std::to_string(steps), "x", 0, nullptr));
    }
    ASSERT_OK(b->Commit(++ci));
    auto r = s.Range("k7", "", RangeOptions{});
    ASSERT_TRUE(r.ok());
    ASSERT_EQ(1u, r->kvs.size());
    EXPECT_EQ("49", r->kvs[0].value);
    RangeOptions old;
    old.rev = at - 1;
    EXPECT_EQ(kCompacted, s.Range("k7", "", old).status().message());
  }
  // 1 index step + 1960 / 100 removal steps.
  EXPECT_GE(steps, 20);
  EXPECT_EQ(removed0 + 1960, probe_.compaction_keys_total.Value());
  EXPECT_EQ(at + steps, s.Rev());
}

TEST_F(StoreTest, AbortedCompactionIsForgotten) {
  Put("a", "1");
  Put("a", "2");
  {
    auto b = store_->BeginBatch();
    ASSERT_OK(b->Compact(3));
    b->Abort();
  }
  EXPECT_EQ(store_->CompactRev(), 0);
  EXPECT_EQ(Get("a", 2)->value, "1");
  Reopen();
  EXPECT_EQ(store_->CompactRev(), 0);
  EXPECT_EQ(Get("a", 2)->value, "1");
}

TEST_F(StoreTest, CompactingEverythingKeepsTheRevision) {
  Put("a", "1");  // 2
  Del("a");       // 3
  ASSERT_OK(Compact(3));
  EXPECT_EQ(Range(kZero, kZero).count, 0);
  Reopen();
  EXPECT_EQ(store_->Rev(), 3);  // no record left at 3, the compact revision says so
  EXPECT_EQ(Put("a", "again"), 4);
  EXPECT_EQ(*Get("a"), (KeyValue{"a", "again", 4, 4, 1, 0}));
}

// etcd_disk_backend_commit_duration_seconds is the commit that reaches the
// disk: with the data file's sync slowed by 300 ms, every observation is at
// least that, and there is one per sync, none per (unsynced) apply batch.
TEST_F(StoreTest, BackendCommitDurationIsTheSyncThatReachesTheDisk) {
  const auto before = probe_.commit_seconds.Snapshot();
  for (int i = 0; i < 20; i++) {
    auto b = store_->BeginBatch();
    {
      auto t = b->Begin();
      ASSERT_OK(t.Put("k", std::to_string(i), 0, nullptr));
    }
    ASSERT_OK(b->Commit(static_cast<uint64_t>(i + 1)));
  }
  EXPECT_EQ(before.count, probe_.commit_seconds.Snapshot().count) << "apply batches are not synced";
  ASSERT_TRUE(failpoint::Set("mvcc-sync", "sleep(300)"));
  ASSERT_OK(store_->Sync());
  ASSERT_OK(store_->Sync());
  ASSERT_TRUE(failpoint::Set("mvcc-sync", "off"));
  const auto after = probe_.commit_seconds.Snapshot();
  EXPECT_EQ(before.count + 2, after.count);
  EXPECT_GE(after.sum - before.sum, 0.6);
}

// The in-use gauge follows a compaction's removals (no later write needed),
// as etcd's every backend commit refreshes it.
TEST_F(StoreTest, CompactionUpdatesTheInUseGauge) {
  const std::string big(100 * 1024, 'x');
  for (int i = 0; i < 20; i++) Put("big" + std::to_string(i), big);
  for (int i = 0; i < 20; i++) {
    auto b = store_->BeginBatch();
    {
      auto t = b->Begin();
      ASSERT_TRUE(t.DeleteRange("big" + std::to_string(i), "", nullptr).ok());
    }
    ASSERT_OK(b->Commit(static_cast<uint64_t>(100 + i)));
  }
  const int64_t before = probe_.db_total_size_in_use_bytes.Value();
  ASSERT_OK(Compact(store_->Rev()));
  EXPECT_LT(probe_.db_total_size_in_use_bytes.Value(), before - 1500 * 1024);
}

TEST_F(StoreTest, LargeCompactionSpansSeveralTransactions) {
  const int kRevs = 25000;  // > the 10000-revision chunk
  auto b = store_->BeginBatch();
  for (int i = 0; i < kRevs; i++) {
    auto t = b->Begin();
    ASSERT_OK(t.Put("k" + std::to_string(i % 7), std::to_string(i), 0, nullptr));
  }
  ASSERT_OK(b->Commit(1));
  b.reset();
  int64_t rev = store_->Rev();
  EXPECT_EQ(rev, kRevs + 1);
  ASSERT_OK(Compact(rev));
  EXPECT_EQ(probe_.compaction_keys_total.Value(), static_cast<uint64_t>(kRevs - 7));
  RangeResult r = Range(kZero, kZero);
  ASSERT_EQ(r.count, 7);
  EXPECT_EQ(r.kvs[0].value, std::to_string((kRevs - 1) / 7 * 7));  // k0's last put
  Reopen();
  EXPECT_EQ(Range(kZero, kZero).kvs, r.kvs);
}

// A crash after the compact revision is committed but before old revisions are
// removed: Open finishes the job.
TEST_F(StoreTest, InterruptedCompactionResumesAtOpen) {
  Put("a", "1");  // 2
  Put("a", "2");  // 3
  Put("b", "1");  // 4
  Del("b");       // 5
  ASSERT_TRUE(failpoint::Set("mvcc-before-compaction", "error"));
  ASSERT_OK(Compact(5));
  failpoint::Set("mvcc-before-compaction", "off");
  EXPECT_EQ(probe_.compaction_keys_total.Value(), 0u);
  Reopen();
  EXPECT_EQ(store_->CompactRev(), 5);
  EXPECT_EQ(probe_.compaction_keys_total.Value(), 3u);
  EXPECT_EQ(Keys(Range(kZero, kZero)), (std::vector<std::string>{"a"}));
}

// Removal runs in ascending revision order; after a crash part-way, the rest
// of a deleted key's garbage must not resurrect it.
TEST_F(StoreTest, PartlyRemovedGarbageDoesNotResurrectKeys) {
  Put("b", "1");  // 2
  Put("b", "2");  // 3
  Del("b");       // 4
  Put("c", "x");  // 5
  ASSERT_TRUE(failpoint::Set("mvcc-before-compaction", "error"));
  ASSERT_OK(Compact(5));
  failpoint::Set("mvcc-before-compaction", "off");
  store_.reset();
  {
    // Simulate a crash after the first chunk removed only b@2.
    MDB_env* env;
    ASSERT_EQ(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 4);
    ASSERT_EQ(mdb_env_open(env, (dir_ + "/db").c_str(), MDB_NOSUBDIR, 0600), 0);
    MDB_txn* t;
    MDB_dbi dbi;
    ASSERT_EQ(mdb_txn_begin(env, nullptr, 0, &t), 0);
    ASSERT_EQ(mdb_dbi_open(t, "key", 0, &dbi), 0);
    char kb[format::kRevKeySize];
    format::EncodeRevKey(kb, 2, 0, false);
    MDB_val k{sizeof(kb), kb};
    ASSERT_EQ(mdb_del(t, dbi, &k, nullptr), 0);
    ASSERT_EQ(mdb_txn_commit(t), 0);
    mdb_env_close(env);
  }
  Open();
  EXPECT_EQ(Keys(Range(kZero, kZero)), (std::vector<std::string>{"c"}));
  EXPECT_EQ(probe_.compaction_keys_total.Value(), 2u);  // b@3 and the tombstone b@4
  EXPECT_EQ(Put("b", "new"), 6);
  EXPECT_EQ(*Get("b"), (KeyValue{"b", "new", 6, 6, 1, 0}));
}

// ---------------------------------------------------------------------------
// Restart

TEST_F(StoreTest, IndexRebuiltAtOpen) {
  Put("a", "1", 3);
  Put("b", "1");
  Put("a", "2");
  Del("b");
  {
    auto b = store_->BeginBatch();
    {
      auto t = b->Begin();
      ASSERT_OK(t.Put("c", "1", 0, nullptr));
      ASSERT_OK(t.Put("d", "1", 0, nullptr));
    }
    {
      auto t = b->Begin();
      ASSERT_OK(t.Put("c", "2", 0, nullptr));
    }
    ASSERT_OK(b->Commit(77));
  }
  const int64_t rev = store_->Rev();
  std::vector<RangeResult> before;
  for (int64_t r = 1; r <= rev; r++) {
    RangeOptions o;
    o.rev = r;
    before.push_back(Range(kZero, kZero, o));
  }
  Reopen();
  EXPECT_EQ(store_->Rev(), rev);
  EXPECT_EQ(store_->ConsistentIndex(), 77u);
  EXPECT_EQ(probe_.keys_total.Value(), 3);
  for (int64_t r = 1; r <= rev; r++) {
    RangeOptions o;
    o.rev = r;
    RangeResult after = Range(kZero, kZero, o);
    EXPECT_EQ(after.kvs, before[r - 1].kvs) << r;
    EXPECT_EQ(after.count, before[r - 1].count) << r;
  }
  // Writers continue the generations.
  ci_ = 77;
  EXPECT_EQ(Put("a", "3"), rev + 1);
  EXPECT_EQ(*Get("a"), (KeyValue{"a", "3", 2, rev + 1, 3, 0}));
  EXPECT_EQ(Put("b", "again"), rev + 2);
  EXPECT_EQ(Get("b")->version, 1);
}

TEST_F(StoreTest, EmptyStoreReopens) {
  Reopen();
  EXPECT_EQ(store_->Rev(), 1);
  EXPECT_EQ(store_->CompactRev(), 0);
  EXPECT_EQ(store_->ConsistentIndex(), 0u);
  EXPECT_TRUE(fs::exists(dir_ + "/db"));
}

// ---------------------------------------------------------------------------
// Consistent index atomicity

TEST_F(StoreTest, AbortDropsDataIndexAndConsistentIndex) {
  Put("a", "1");  // 2, ci 1
  {
    auto b = store_->BeginBatch();
    {
      auto t = b->Begin();
      ASSERT_OK(t.Put("a", "2", 0, nullptr));
      ASSERT_OK(t.Put("new", "x", 0, nullptr));
      ASSERT_TRUE(t.DeleteRange("a", {}, nullptr).ok());
    }
    {
      auto t = b->Begin();
      ASSERT_OK(t.Put("new2", "y", 0, nullptr));
    }
    b->PutMeta("member", "m1");
    b->Abort();
  }
  EXPECT_EQ(store_->Rev(), 2);
  EXPECT_EQ(store_->ConsistentIndex(), 1u);
  EXPECT_EQ(Keys(Range(kZero, kZero)), (std::vector<std::string>{"a"}));
  EXPECT_FALSE(store_->GetMeta("member"));
  // The index forgot the aborted changes: versions and revisions pick up as before.
  EXPECT_EQ(Put("a", "2"), 3);
  EXPECT_EQ(*Get("a"), (KeyValue{"a", "2", 2, 3, 2, 0}));
  EXPECT_EQ(probe_.keys_total.Value(), 1);
  Reopen();
  EXPECT_EQ(store_->Rev(), 3);
  EXPECT_EQ(store_->ConsistentIndex(), 2u);
  EXPECT_EQ(Keys(Range(kZero, kZero)), (std::vector<std::string>{"a"}));
}

TEST_F(StoreTest, DestroyingABatchAborts) {
  {
    auto b = store_->BeginBatch();
    auto t = b->Begin();
    ASSERT_OK(t.Put("a", "1", 0, nullptr));
  }
  EXPECT_EQ(store_->Rev(), 1);
  EXPECT_FALSE(Get("a"));
  EXPECT_EQ(Put("a", "1"), 2);
}

TEST_F(StoreTest, FailedCommitRollsBack) {
  Put("a", "1");  // ci 1
  ASSERT_TRUE(failpoint::Set("mvcc-before-commit", "error"));
  auto b = store_->BeginBatch();
  {
    auto t = b->Begin();
    ASSERT_OK(t.Put("a", "2", 0, nullptr));
    ASSERT_OK(t.Put("b", "2", 0, nullptr));
  }
  Status st = b->Commit(2);
  EXPECT_FALSE(st.ok());
  failpoint::Set("mvcc-before-commit", "off");
  b.reset();
  EXPECT_EQ(store_->Rev(), 2);
  EXPECT_EQ(store_->ConsistentIndex(), 1u);
  EXPECT_EQ(Keys(Range(kZero, kZero)), (std::vector<std::string>{"a"}));
  Reopen();
  EXPECT_EQ(store_->Rev(), 2);
  EXPECT_EQ(store_->ConsistentIndex(), 1u);
  EXPECT_EQ(Get("a")->value, "1");
}

// ---------------------------------------------------------------------------
// Meta

TEST_F(StoreTest, MetaValues) {
  EXPECT_FALSE(store_->GetMeta("cluster_version"));
  auto b = store_->BeginBatch();
  b->PutMeta("cluster_version", "3.5.0");
  b->PutMeta("member/1", std::string("\0\1\2", 3));
  EXPECT_EQ(b->GetMeta("cluster_version"), "3.5.0");
  EXPECT_FALSE(store_->GetMeta("cluster_version"));  // not committed yet
  ASSERT_OK(b->Commit(4));
  b.reset();
  EXPECT_EQ(store_->GetMeta("cluster_version"), "3.5.0");
  EXPECT_EQ(store_->GetMeta("member/1"), std::string("\0\1\2", 3));
  EXPECT_EQ(store_->GetMeta("mvcc.format"), "engram-mvcc-1");
  EXPECT_EQ(store_->Rev(), 1);  // meta writes are not revisions
  b = store_->BeginBatch();
  b->DeleteMeta("member/1");
  ASSERT_OK(b->Commit(5));
  b.reset();
  Reopen();
  EXPECT_EQ(store_->GetMeta("cluster_version"), "3.5.0");
  EXPECT_FALSE(store_->GetMeta("member/1"));
  EXPECT_EQ(store_->ConsistentIndex(), 5u);
}

// ---------------------------------------------------------------------------
// Concurrency

// A writer commits batches that put x and y together (one request) and
// compacts now and then; readers check every read is one consistent snapshot.
TEST_F(StoreTest, ConcurrentReadersSeeConsistentSnapshots) {
  constexpr int kBatches = 2000;
  std::atomic<bool> done{false};
  std::atomic<int64_t> reads{0};
  std::atomic<int> failures{0};
  auto reader = [&](int id) {
    int64_t last_rev = 0;
    while (!done.load(std::memory_order_acquire)) {
      RangeOptions o;
      // Every other read goes back one revision (may hit a compaction).
      int64_t cur = store_->Rev();
      if (id % 2 == 1 && (reads.load() & 1)) o.rev = cur - 1;
      auto r = store_->Range("x", "z", o);
      if (!r.ok()) {
        if (r.status().message() != kCompacted) failures++;
        continue;
      }
      reads++;
      const RangeResult& res = r.value();
      if (res.rev < last_rev) failures++;  // published revisions never go back
      last_rev = res.rev;
      if (res.kvs.size() != 2 && !(res.kvs.empty() && (o.rev == 1 || res.rev == 1))) {
        failures++;
        if (failures < 5) ADD_FAILURE() << "read " << res.kvs.size() << " kvs at rev " << o.rev << "/" << res.rev;
        continue;
      }
      if (res.kvs.size() == 2) {
        if (res.kvs[0].mod_revision != res.kvs[1].mod_revision || res.kvs[0].value != res.kvs[1].value ||
            res.kvs[0].mod_revision > res.rev || res.kvs[0].version != res.kvs[1].version ||
            res.kvs[0].value != std::to_string(res.kvs[0].version)) {
          failures++;
          if (failures < 5) {
            ADD_FAILURE() << "inconsistent read at " << o.rev << ": x@" << res.kvs[0].mod_revision << "="
                          << res.kvs[0].value << " y@" << res.kvs[1].mod_revision << "=" << res.kvs[1].value;
          }
        }
      }
    }
  };
  std::vector<std::thread> readers;
  for (int i = 0; i < 3; i++) readers.emplace_back(reader, i);
  for (int i = 1; i <= kBatches; i++) {
    auto b = store_->BeginBatch();
    {
      auto t = b->Begin();
      std::string v = std::to_string(i);
      ASSERT_OK(t.Put("x", v, 0, nullptr));
      ASSERT_OK(t.Put("y", v, 0, nullptr));
      // Unrelated churn so that compactions have garbage to remove.
      ASSERT_OK(t.Put("w" + std::to_string(i % 10), v, 0, nullptr));
    }
    if (i % 50 == 0) ASSERT_OK(b->Compact(b->Rev() - 5));
    ASSERT_OK(b->Commit(i));
    b.reset();
    if (i % 25 == 0) {
      // Make sure reads really interleave with the commits (no timing assumptions).
      int64_t want = reads.load() + 20;
      while (reads.load() < want) std::this_thread::yield();
    }
  }
  // Keep readers running until each has done some reads after the writer stopped.
  int64_t target = reads.load() + 100;
  while (reads.load() < target) std::this_thread::yield();
  done.store(true, std::memory_order_release);
  for (auto& t : readers) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_GT(reads.load(), 0);
  EXPECT_EQ(store_->Rev(), kBatches + 1);
  RangeResult r = Range("x", "z");
  ASSERT_EQ(r.kvs.size(), 2u);
  EXPECT_EQ(r.kvs[0].version, kBatches);
}

// ---------------------------------------------------------------------------
// Size, probes, copies

TEST_F(StoreTest, SizeGrowsWithData) {
  Store::SizeInfo s0 = store_->Size();
  EXPECT_GT(s0.total_bytes, 0);
  EXPECT_GT(s0.in_use_bytes, 0);
  EXPECT_LE(s0.in_use_bytes, s0.total_bytes);
  std::string value(1024, 'v');
  auto b = store_->BeginBatch();
  for (int i = 0; i < 2000; i++) {
    auto t = b->Begin();
    ASSERT_OK(t.Put("key" + std::to_string(i), value, 0, nullptr));
  }
  ASSERT_OK(b->Commit(1));
  b.reset();
  Store::SizeInfo s1 = store_->Size();
  EXPECT_GT(s1.total_bytes, s0.total_bytes + 2000 * 1024);
  EXPECT_GT(s1.in_use_bytes, s0.in_use_bytes + 2000 * 1024);
  EXPECT_LE(s1.in_use_bytes, s1.total_bytes);
  EXPECT_EQ(probe_.db_total_size_bytes.Value(), s1.total_bytes);
  EXPECT_EQ(probe_.db_total_size_in_use_bytes.Value(), s1.in_use_bytes);
  // Deleting everything and compacting frees pages: in use drops, the file
  // does not shrink (it may even grow while LMDB cannot reuse pages yet).
  Del(kZero, kZero);
  ASSERT_OK(Compact(store_->Rev()));
  Store::SizeInfo s2 = store_->Size();
  EXPECT_GE(s2.total_bytes, s1.total_bytes);
  EXPECT_LT(s2.in_use_bytes, s1.in_use_bytes / 2);
  // in use + free pages = the whole file.
  EXPECT_EQ(s2.in_use_bytes + store_->FreePagesForTesting() * 4096, s2.total_bytes);
}

TEST_F(StoreTest, ProbesCountRequests) {
  Put("a", "12345");
  Del("a");
  Range("a");
  auto b = store_->BeginBatch();
  {
    auto t = b->Begin();
    ASSERT_OK(t.Put("b", "1", 0, nullptr));
    ASSERT_TRUE(t.Range("b", {}, {}).ok());
  }
  ASSERT_OK(b->Commit(9));
  EXPECT_EQ(probe_.put_total.Value(), 2u);
  EXPECT_EQ(probe_.delete_total.Value(), 1u);
  EXPECT_EQ(probe_.range_total.Value(), 2u);
  EXPECT_EQ(probe_.txn_total.Value(), 1u);
  EXPECT_EQ(probe_.total_put_size_bytes.Value(), 6u + 2u);
  // Only the syncs are backend commits (the commits of batches are not synced).
  const uint64_t before = probe_.commit_seconds.Snapshot().count;
  ASSERT_OK(store_->Sync());
  EXPECT_EQ(before + 1, probe_.commit_seconds.Snapshot().count);
}

TEST_F(StoreTest, CopyOpensAsAStore) {
  Put("a", "1");
  Put("b", "2");
  std::string copy_dir = root_ + "/copy";
  fs::create_directories(copy_dir);
  ASSERT_OK(store_->CopyTo(copy_dir + "/db", true));
  Options o;
  o.dir = copy_dir;
  o.map_size = 1ull << 30;
  auto r = Store::Open(o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  auto& copy = r.value();
  EXPECT_EQ(copy->Rev(), 3);
  EXPECT_EQ(copy->ConsistentIndex(), 2u);
  auto cr = copy->Range(kZero, kZero, {});
  ASSERT_TRUE(cr.ok());
  EXPECT_EQ(cr->kvs, Range(kZero, kZero).kvs);
}

// ---------------------------------------------------------------------------
// Defragmentation

// Everything a reader can see: every kv at every readable revision, plus meta.
std::string Dump(Store& s) {
  std::string out = "rev=" + std::to_string(s.Rev()) + " compact=" + std::to_string(s.CompactRev()) +
                    " ci=" + std::to_string(s.ConsistentIndex()) + "\n";
  for (int64_t rev = std::max<int64_t>(1, s.CompactRev()); rev <= s.Rev(); rev++) {
    RangeOptions o;
    o.rev = rev;
    auto r = s.Range(kZero, kZero, o);
    if (!r.ok()) return out + "error " + r.status().ToString();
    out += "@" + std::to_string(rev) + ":";
    for (const auto& kv : r->kvs) {
      out += " " + kv.key + "=" + std::to_string(kv.value.size()) + "/" + std::to_string(kv.create_revision) + "/" +
             std::to_string(kv.mod_revision) + "/" + std::to_string(kv.version) + "/" + std::to_string(kv.lease);
    }
    out += "\n";
  }
  out += "meta=" + s.GetMeta("m").value_or("<none>");
  return out;
}

TEST_F(StoreTest, DefragShrinksTheFileAndKeepsEverything) {
  std::string value(1000, 'v');
  for (int round = 0; round < 4; round++) {
    auto b = store_->BeginBatch();
    for (int i = 0; i < 500; i++) {
      auto t = b->Begin();
      ASSERT_OK(t.Put("key" + std::to_string(i), value + std::to_string(round), round, nullptr));
    }
    b->PutMeta("m", "round" + std::to_string(round));
    ASSERT_OK(b->Commit(++ci_));
  }
  Del("key1", "key3");  // a tombstone range
  ASSERT_OK(Compact(store_->Rev() - 1));
  Put("after", "compaction");
  Store::SizeInfo before = store_->Size();
  EXPECT_EQ(store_->FileBytes(), before.total_bytes);
  std::string dump = Dump(*store_);
  ASSERT_OK(store_->Defrag());
  Store::SizeInfo after = store_->Size();
  EXPECT_LT(after.total_bytes, before.total_bytes / 2) << before.total_bytes << " -> " << after.total_bytes;
  EXPECT_EQ(store_->FileBytes(), after.total_bytes);
  EXPECT_EQ(probe_.db_total_size_bytes.Value(), after.total_bytes);
  EXPECT_EQ(after.in_use_bytes, after.total_bytes);  // no free pages left
  EXPECT_FALSE(fs::exists(dir_ + "/db.defrag.tmp"));
  EXPECT_EQ(fs::file_size(dir_ + "/db"), static_cast<uintmax_t>(after.total_bytes));
  EXPECT_EQ(Dump(*store_), dump);
  // Writes go on on the new file, and everything survives a reopen.
  int64_t rev = Put("new", "1");
  Compact(rev - 1).ok();
  ASSERT_OK(store_->Defrag());
  ASSERT_OK(store_->Defrag());  // nothing to gain: still fine
  dump = Dump(*store_);
  Reopen();
  EXPECT_EQ(Dump(*store_), dump);
  EXPECT_EQ(Get("new")->value, "1");
  Put("new", "2");
  EXPECT_EQ(Get("new")->version, 2);
}

TEST_F(StoreTest, DefragWhileReadersRead) {
  for (int i = 0; i < 200; i++) Put("k" + std::to_string(i % 20), std::string(500, 'a' + i % 26));
  ASSERT_OK(Compact(store_->Rev() - 10));
  const int64_t rev = store_->Rev();
  std::atomic<bool> done{false};
  std::atomic<int64_t> reads{0};
  std::atomic<int> failures{0};
  auto reader = [&](int id) {
    while (!done.load()) {
      if (id == 0) {
        // A read inside a Scan callback: re-enters the environment lock
        // instead of queueing behind a waiting Defrag. (TSAN reports the
        // env_mu_ -> mu_ -> env_mu_ order here as a potential inversion; it
        // cannot deadlock: only the single writer thread ever takes either
        // lock exclusively, and it cannot wait for both at once.)
        auto r = store_->Scan("k", "l", 0, [&](const KeyValueRef&) {
          auto in = store_->Range("k1", {}, {});
          if (!in.ok() || in->kvs.size() != 1) failures++;
          return true;
        });
        if (!r.ok()) failures++;
      } else if (id == 1) {
        store_->Size();
        if (!store_->GetMeta("mvcc.format")) failures++;
      } else {
        RangeOptions o;
        o.rev = rev - (reads.load() % 5);
        auto r = store_->Range("k", "l", o);
        if (!r.ok() || r->kvs.size() != 20) failures++;
      }
      reads++;
    }
  };
  std::vector<std::thread> readers;
  for (int i = 0; i < 3; i++) readers.emplace_back(reader, i);
  for (int i = 0; i < 20; i++) {
    int64_t want = reads.load() + 10;
    while (reads.load() < want) std::this_thread::yield();
    ASSERT_OK(store_->Defrag());
    ASSERT_OK(store_->Sync());
  }
  done = true;
  for (auto& t : readers) t.join();
  EXPECT_EQ(failures.load(), 0);
}

TEST_F(StoreTest, FailedOrInterruptedDefragLeavesAUsableStore) {
  for (int i = 0; i < 100; i++) Put("k" + std::to_string(i), std::string(2000, 'x'));
  Del("k", "l");
  ASSERT_OK(Compact(store_->Rev()));
  std::string dump = Dump(*store_);
  int64_t size = store_->Size().total_bytes;
  // Failing after the copy, or just before the rename: the old file stays.
  for (const char* fp : {"mvcc-defrag-after-copy", "mvcc-defrag-before-rename"}) {
    failpoint::Set(fp, "error");
    Status st = store_->Defrag();
    failpoint::Set(fp, "off");
    EXPECT_EQ(st.code(), Code::kIOError) << fp;
    EXPECT_FALSE(fs::exists(dir_ + "/db.defrag.tmp")) << fp;
    EXPECT_EQ(store_->Size().total_bytes, size) << fp;
    EXPECT_EQ(Dump(*store_), dump) << fp;
  }
  int64_t rev = Put("still", "writable");
  EXPECT_EQ(Get("still")->mod_revision, rev);
  // A copy left by a crash before the rename is removed at open.
  dump = Dump(*store_);
  store_.reset();
  {
    FILE* f = fopen((dir_ + "/db.defrag.tmp").c_str(), "w");
    ASSERT_NE(f, nullptr);
    fputs("half a copy", f);
    fclose(f);
  }
  Open();
  EXPECT_FALSE(fs::exists(dir_ + "/db.defrag.tmp"));
  EXPECT_EQ(Dump(*store_), dump);
  ASSERT_OK(store_->Defrag());
  EXPECT_EQ(Dump(*store_), dump);
}

// kill -9 at any point of a defrag (a panic failpoint aborts the process
// there) leaves a store that opens with everything in it.
TEST_F(StoreTest, CrashDuringDefragLeavesAUsableStore) {
  for (int i = 0; i < 100; i++) Put("k" + std::to_string(i % 30), std::string(1500, 'a' + i % 26));
  Del("k1", "k2");
  ASSERT_OK(Compact(store_->Rev() - 3));
  std::string dump = Dump(*store_);
  const int64_t size = store_->Size().total_bytes;
  store_.reset();
  for (const char* fp : {"mvcc-defrag-after-copy", "mvcc-defrag-before-rename", "mvcc-defrag-before-reopen"}) {
    ASSERT_EXIT(
        {
          Open();
          failpoint::Set(fp, "panic");
          Status st = store_->Defrag();
          fprintf(stderr, "defrag returned %s\n", st.ToString().c_str());
          _exit(0);
        },
        ::testing::KilledBySignal(SIGABRT), "")
        << fp;
    Open();
    EXPECT_EQ(Dump(*store_), dump) << fp;
    EXPECT_FALSE(fs::exists(dir_ + "/db.defrag.tmp")) << fp;
    if (std::string(fp) == "mvcc-defrag-before-reopen") {
      EXPECT_LT(store_->Size().total_bytes, size) << "the compacted copy is in place";
    }
    Put("after-crash", fp);
    EXPECT_EQ(Get("after-crash")->value, fp);
    dump = Dump(*store_);
    store_.reset();
  }
  Open();
}

TEST_F(StoreTest, RejectsForeignFormat) {
  auto b = store_->BeginBatch();
  b.reset();
  store_.reset();
  {
    MDB_env* env;
    ASSERT_EQ(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 4);
    ASSERT_EQ(mdb_env_open(env, (dir_ + "/db").c_str(), MDB_NOSUBDIR, 0600), 0);
    MDB_txn* t;
    MDB_dbi dbi;
    ASSERT_EQ(mdb_txn_begin(env, nullptr, 0, &t), 0);
    ASSERT_EQ(mdb_dbi_open(t, "meta", 0, &dbi), 0);
    std::string name(format::kMetaFormat), val = "something-else";
    MDB_val k{name.size(), name.data()}, v{val.size(), val.data()};
    ASSERT_EQ(mdb_put(t, dbi, &k, &v, 0), 0);
    ASSERT_EQ(mdb_txn_commit(t), 0);
    mdb_env_close(env);
  }
  Options o;
  o.dir = dir_;
  o.map_size = 1ull << 30;
  auto r = Store::Open(o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kCorruption);
}

}  // namespace
}  // namespace engram::mvcc

namespace engram::mvcc {
namespace {

// etcd starts with compact revision -1: the first Compact(0) succeeds, a
// second one is "compacted", and the state survives a reopen.
TEST(StoreCompactZero, FirstCompactAtZeroSucceedsOnce) {
  std::string dir = ::testing::TempDir() + "/mvcc-compact-zero-" + std::to_string(::getpid());
  std::filesystem::remove_all(dir);
  {
    auto s = Store::Open(Options{dir});
    ASSERT_TRUE(s.ok());
    auto b = (*s)->BeginBatch();
    EXPECT_TRUE(b->Compact(0).ok());
    ASSERT_TRUE(b->Commit(1).ok());
    auto b2 = (*s)->BeginBatch();
    EXPECT_EQ(Code::kOutOfRange, b2->Compact(0).code());
    b2->Abort();
  }
  auto s = Store::Open(Options{dir});
  ASSERT_TRUE(s.ok());
  auto b = (*s)->BeginBatch();
  EXPECT_EQ(Code::kOutOfRange, b->Compact(0).code());
  b->Abort();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace engram::mvcc
