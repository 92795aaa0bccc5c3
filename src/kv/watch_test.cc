// WatchHub: live events, history replay, compaction, filters, prev_kv, slow
// watchers, cancel, progress; and through KvServer, that a stream nobody reads
// never holds up the apply loop.
#include "src/kv/watch.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <thread>

#include "src/kv/server.h"
#include "src/kv/testing.h"

namespace engram::kv {
namespace {

using namespace std::chrono_literals;

std::string TestDir(const char* what) {
  return ::testing::TempDir() + "/" + what + "-" + std::to_string(::getpid()) + "-" +
         ::testing::UnitTest::GetInstance()->current_test_info()->name();
}

class WatchHubTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = TestDir("watch");
    std::filesystem::remove_all(dir_);
    mvcc::Options o;
    o.dir = dir_;
    auto s = mvcc::Store::Open(o);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(*s);
    NewHub(WatchOptions{});
  }
  void TearDown() override {
    hub_.reset();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  void NewHub(const WatchOptions& o) {
    hub_.reset();
    probe_ = std::make_unique<WatchProbe>();
    hub_ = std::make_unique<WatchHub>(store_.get(), o, probe_.get());
  }

  // One write request in its own batch, handed to the hub as the apply loop does.
  template <class Fn>
  int64_t Write(Fn fn) {
    auto b = store_->BeginBatch();
    bool rec = hub_->HasWatchers();
    b->RecordEvents(rec);
    {
      auto t = b->Begin();
      fn(t);
    }
    EXPECT_TRUE(b->Commit(++index_).ok());
    hub_->Notify(b->Rev(), b->TakeEvents(), rec);
    return b->Rev();
  }
  int64_t Put(const std::string& k, const std::string& v) {
    return Write([&](mvcc::Store::Batch::Txn& t) { ASSERT_TRUE(t.Put(k, v, 0, nullptr).ok()); });
  }
  int64_t Del(const std::string& k, const std::string& end = "") {
    return Write([&](mvcc::Store::Batch::Txn& t) { ASSERT_TRUE(t.DeleteRange(k, end, nullptr).ok()); });
  }
  void Compact(int64_t rev) {
    auto b = store_->BeginBatch();
    ASSERT_TRUE(b->Compact(rev).ok());
    ASSERT_TRUE(b->Commit(++index_).ok());
    store_->FinishCompaction();  // the apply loop runs the steps between batches
  }

  static std::vector<WatchReply> Drain(WatchStream& s) {
    std::vector<WatchReply> out;
    WatchReply r;
    while (s.Next(&r)) out.push_back(std::move(r));
    return out;
  }
  // "PUT k=v@rev" / "DELETE k@rev" per event, for compact assertions.
  static std::vector<std::string> Events(const std::vector<WatchReply>& rs) {
    std::vector<std::string> out;
    for (const auto& r : rs)
      for (const auto& e : r.events)
        out.push_back(e.tombstone ? "DELETE " + e.kv->key + "@" + std::to_string(e.kv->mod_revision)
                                  : "PUT " + e.kv->key + "=" + e.kv->value + "@" + std::to_string(e.kv->mod_revision));
    return out;
  }
  static WatchSpec Spec(const std::string& key, const std::string& end = "", int64_t start = 0) {
    WatchSpec s;
    s.key = key;
    s.range_end = end;
    s.start_revision = start;
    return s;
  }

  std::string dir_;
  std::unique_ptr<mvcc::Store> store_;
  std::unique_ptr<WatchProbe> probe_;
  std::unique_ptr<WatchHub> hub_;
  uint64_t index_ = 0;
};

// The store side: Batch::RecordEvents and Store::ScanEvents.
TEST_F(WatchHubTest, StoreRecordsAndScansEventsByRevision) {
  auto b = store_->BeginBatch();
  b->RecordEvents(true);
  {
    auto t = b->Begin();
    ASSERT_TRUE(t.Put("a", "1", 0, nullptr).ok());
    ASSERT_TRUE(t.Put("b", "1", 0, nullptr).ok());
  }
  {
    auto t = b->Begin();
    ASSERT_TRUE(t.DeleteRange("a", "c", nullptr).ok());
  }
  ASSERT_TRUE(b->Commit(++index_).ok());
  auto evs = b->TakeEvents();
  b.reset();
  ASSERT_EQ(4u, evs.size());
  EXPECT_EQ((mvcc::KeyValue{"a", "1", 2, 2, 1, 0}), evs[0].kv);
  EXPECT_FALSE(evs[0].tombstone);
  EXPECT_EQ((mvcc::KeyValue{"b", "1", 2, 2, 1, 0}), evs[1].kv);
  EXPECT_EQ((mvcc::KeyValue{"a", "", 0, 3, 0, 0}), evs[2].kv);
  EXPECT_TRUE(evs[2].tombstone);
  EXPECT_EQ((mvcc::KeyValue{"b", "", 0, 3, 0, 0}), evs[3].kv);
  Put("c", "1");  // 4

  std::vector<std::string> seen;
  auto scan = [&](int64_t from, int64_t to) {
    seen.clear();
    return store_->ScanEvents(from, to, [&](const mvcc::KeyValueRef& kv, bool tomb) {
      seen.push_back(std::string(tomb ? "D " : "P ") + std::string(kv.key) + "@" + std::to_string(kv.mod_revision));
      return true;
    });
  };
  auto r = scan(3, 0);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(4, *r);
  EXPECT_EQ((std::vector<std::string>{"D a@3", "D b@3", "P c@4"}), seen);
  r = scan(0, 2);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(2, *r);
  EXPECT_EQ((std::vector<std::string>{"P a@2", "P b@2"}), seen);
  r = scan(5, 0);  // nothing yet
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(4, *r);
  EXPECT_TRUE(seen.empty());
  Compact(3);
  r = scan(2, 0);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ("mvcc: required revision has been compacted", r.status().message());
  r = scan(3, 0);  // the tombstones at the compact revision are gone, as in etcd
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((std::vector<std::string>{"P c@4"}), seen);
}

TEST_F(WatchHubTest, LiveEventsOneReplyPerRevision) {
  Put("a", "0");  // rev 2, before the watcher
  auto s = hub_->NewStream();
  EXPECT_EQ(0, s->Create(Spec("a")));
  auto created = Drain(*s);
  ASSERT_EQ(1u, created.size());
  EXPECT_TRUE(created[0].created);
  EXPECT_FALSE(created[0].canceled);
  EXPECT_EQ(0, created[0].watch_id);
  EXPECT_EQ(2, created[0].revision);  // the store's revision at create

  Put("a", "1");  // 3
  Put("b", "x");  // 4: not watched
  Put("a", "2");  // 5
  Del("a");       // 6
  auto rs = Drain(*s);
  ASSERT_EQ(3u, rs.size());
  EXPECT_EQ(3, rs[0].revision);
  EXPECT_EQ(5, rs[1].revision);
  EXPECT_EQ(6, rs[2].revision);
  EXPECT_EQ((std::vector<std::string>{"PUT a=1@3", "PUT a=2@5", "DELETE a@6"}), Events(rs));
  const auto& put = *rs[1].events[0].kv;
  EXPECT_EQ(2, put.create_revision);
  EXPECT_EQ(3, put.version);
  const auto& del = *rs[2].events[0].kv;  // a tombstone: key and mod_revision only
  EXPECT_EQ(0, del.create_revision);
  EXPECT_EQ(0, del.version);
  EXPECT_EQ("", del.value);
  EXPECT_FALSE(rs[0].events[0].prev_kv.has_value());
}

TEST_F(WatchHubTest, RangesPrefixesAndFromKey) {
  auto s = hub_->NewStream();
  s->Create(Spec("k", "l"));                      // prefix "k"
  s->Create(Spec("k2", std::string(1, '\0')));    // from k2
  s->Create(Spec("", std::string(1, '\0')));      // everything ("" is "\0")
  s->Create(Spec("k1", "k3"));                    // [k1, k3)
  Drain(*s);
  Put("k1", "a");
  Put("k3", "b");
  Put("z", "c");
  Put("a", "d");
  std::map<int64_t, std::vector<std::string>> by_id;
  for (auto& r : Drain(*s)) by_id[r.watch_id].push_back(Events({r})[0]);
  EXPECT_EQ((std::vector<std::string>{"PUT k1=a@2", "PUT k3=b@3"}), by_id[0]);
  EXPECT_EQ((std::vector<std::string>{"PUT k3=b@3", "PUT z=c@4"}), by_id[1]);
  EXPECT_EQ((std::vector<std::string>{"PUT k1=a@2", "PUT k3=b@3", "PUT z=c@4", "PUT a=d@5"}), by_id[2]);
  EXPECT_EQ((std::vector<std::string>{"PUT k1=a@2"}), by_id[3]);
}

TEST_F(WatchHubTest, MultiKeyRevisionIsOneReply) {
  Put("p/a", "1");
  Put("p/b", "2");
  auto s = hub_->NewStream();
  s->Create(Spec("p/", "p0"));
  Drain(*s);
  Del("p/", "p0");  // one revision, two tombstones
  auto rs = Drain(*s);
  ASSERT_EQ(1u, rs.size());
  EXPECT_EQ(4, rs[0].revision);
  EXPECT_EQ((std::vector<std::string>{"DELETE p/a@4", "DELETE p/b@4"}), Events(rs));
}

TEST_F(WatchHubTest, HistoryReplayFromStartRevision) {
  for (int i = 0; i < 5; i++) Put(i % 2 ? "b" : "a", std::to_string(i));  // revs 2..6
  auto s = hub_->NewStream();
  s->Create(Spec("a", "", 3));  // a@2, a@4, a@6 exist; from 3
  EXPECT_EQ(1, probe_->slow_watcher_total.Value());
  auto created = Drain(*s);
  ASSERT_EQ(1u, created.size());
  EXPECT_TRUE(created[0].created);
  EXPECT_TRUE(hub_->SyncOnceForTesting());
  EXPECT_EQ(0, probe_->slow_watcher_total.Value());
  auto rs = Drain(*s);
  ASSERT_EQ(1u, rs.size());
  EXPECT_EQ(6, rs[0].revision);  // the revision the history was read at
  EXPECT_EQ((std::vector<std::string>{"PUT a=2@4", "PUT a=4@6"}), Events(rs));
  // Synced now: live events follow, none twice.
  Put("a", "x");
  EXPECT_EQ((std::vector<std::string>{"PUT a=x@7"}), Events(Drain(*s)));
  EXPECT_FALSE(hub_->SyncOnceForTesting());
}

TEST_F(WatchHubTest, FutureStartRevisionSkipsEarlierEvents) {
  auto s = hub_->NewStream();
  s->Create(Spec("a", "", 4));
  Drain(*s);
  Put("a", "1");  // 2
  Put("a", "2");  // 3
  Put("a", "3");  // 4
  EXPECT_EQ((std::vector<std::string>{"PUT a=3@4"}), Events(Drain(*s)));
}

TEST_F(WatchHubTest, CompactedStartRevisionCancelsWithCompactRevision) {
  for (int i = 0; i < 5; i++) Put("a", std::to_string(i));  // 2..6
  Compact(4);
  auto s = hub_->NewStream();
  int64_t id = s->Create(Spec("a", "", 2));
  EXPECT_TRUE(hub_->SyncOnceForTesting());
  auto rs = Drain(*s);
  ASSERT_EQ(2u, rs.size());
  EXPECT_TRUE(rs[0].created);
  EXPECT_TRUE(rs[1].canceled);
  EXPECT_EQ(4, rs[1].compact_revision);
  EXPECT_EQ(0, rs[1].revision);  // etcd leaves the header revision 0
  EXPECT_EQ(id, rs[1].watch_id);
  EXPECT_EQ(1, probe_->watcher_total.Value());  // registered until cancelled, as etcd
  EXPECT_EQ(0, probe_->slow_watcher_total.Value());
  Put("a", "late");
  EXPECT_TRUE(Drain(*s).empty());
  s->Cancel(id);
  rs = Drain(*s);
  ASSERT_EQ(1u, rs.size());
  EXPECT_TRUE(rs[0].canceled);
  EXPECT_EQ(0, probe_->watcher_total.Value());

  // At the compact revision itself the history is complete (puts).
  auto s2 = hub_->NewStream();
  s2->Create(Spec("a", "", 4));
  hub_->SyncOnceForTesting();
  EXPECT_EQ((std::vector<std::string>{"PUT a=2@4", "PUT a=3@5", "PUT a=4@6", "PUT a=late@7"}), Events(Drain(*s2)));
}

TEST_F(WatchHubTest, Filters) {
  auto s = hub_->NewStream();
  WatchSpec noput = Spec("a");
  noput.no_put = true;
  WatchSpec nodel = Spec("a");
  nodel.no_delete = true;
  s->Create(noput);
  s->Create(nodel);
  Drain(*s);
  Put("a", "1");
  Del("a");
  std::map<int64_t, std::vector<std::string>> by_id;
  for (auto& r : Drain(*s)) by_id[r.watch_id].push_back(Events({r})[0]);
  EXPECT_EQ((std::vector<std::string>{"DELETE a@3"}), by_id[0]);
  EXPECT_EQ((std::vector<std::string>{"PUT a=1@2"}), by_id[1]);
  // Filters apply to replayed history too.
  auto s2 = hub_->NewStream();
  noput.start_revision = 1;
  s2->Create(noput);
  hub_->SyncOnceForTesting();
  EXPECT_EQ((std::vector<std::string>{"DELETE a@3"}), Events(Drain(*s2)));
}

TEST_F(WatchHubTest, PrevKv) {
  auto s = hub_->NewStream();
  WatchSpec spec = Spec("a");
  spec.prev_kv = true;
  s->Create(spec);
  Drain(*s);
  Put("a", "1");  // 2: created, no previous version
  Put("a", "2");  // 3
  Del("a");       // 4
  Put("a", "3");  // 5: created again
  auto rs = Drain(*s);
  ASSERT_EQ(4u, rs.size());
  EXPECT_FALSE(rs[0].events[0].prev_kv.has_value());
  ASSERT_TRUE(rs[1].events[0].prev_kv.has_value());
  EXPECT_EQ("1", rs[1].events[0].prev_kv->value);
  EXPECT_EQ(2, rs[1].events[0].prev_kv->mod_revision);
  ASSERT_TRUE(rs[2].events[0].prev_kv.has_value());
  EXPECT_EQ("2", rs[2].events[0].prev_kv->value);
  EXPECT_FALSE(rs[3].events[0].prev_kv.has_value());
  // Replay too; a previous version that was compacted away is left out.
  Compact(3);
  auto s2 = hub_->NewStream();
  spec.start_revision = 3;
  s2->Create(spec);
  hub_->SyncOnceForTesting();
  rs = Drain(*s2);
  ASSERT_EQ(2u, rs.size());
  ASSERT_EQ(3u, rs[1].events.size());
  EXPECT_FALSE(rs[1].events[0].prev_kv.has_value());  // a@2 is below the compact revision
  ASSERT_TRUE(rs[1].events[1].prev_kv.has_value());   // the delete at 4 sees a=2@3
  EXPECT_EQ("2", rs[1].events[1].prev_kv->value);
}

TEST_F(WatchHubTest, SlowWatcherCatchesUpFromTheStore) {
  WatchOptions o;
  o.stream_queue_len = 4;
  o.batch_max_revs = 3;
  NewHub(o);
  auto s = hub_->NewStream();
  auto other = hub_->NewStream();
  s->Create(Spec("k", "l"));
  other->Create(Spec("k", "l"));
  Drain(*other);
  // Nobody reads s: Notify must neither block nor drop.
  std::vector<std::string> want;
  for (int i = 0; i < 20; i++) {
    int64_t rev = Put("k" + std::to_string(i % 3), std::to_string(i));
    want.push_back("PUT k" + std::to_string(i % 3) + "=" + std::to_string(i) + "@" + std::to_string(rev));
    Drain(*other);  // the other stream keeps up and stays synced
  }
  EXPECT_EQ(4u, s->QueuedForTesting());  // created + 3 revisions, then it fell behind
  EXPECT_EQ(1, probe_->slow_watcher_total.Value());
  EXPECT_GT(probe_->pending_events_total.Value(), 0);
  // No room: the syncer leaves it alone.
  EXPECT_FALSE(hub_->SyncOnceForTesting());
  std::vector<WatchReply> got;
  for (int round = 0; round < 50; round++) {
    for (auto& r : Drain(*s)) got.push_back(std::move(r));
    if (!hub_->SyncOnceForTesting()) break;
  }
  ASSERT_FALSE(got.empty());
  EXPECT_TRUE(got[0].created);
  EXPECT_EQ(want, Events(got));  // every event, in order, once
  for (size_t i = 1; i < got.size(); i++) EXPECT_LE(got[i].events.size(), 3u);  // batch_max_revs
  EXPECT_EQ(0, probe_->slow_watcher_total.Value());
  EXPECT_EQ(0, probe_->pending_events_total.Value());
  Put("k1", "live");
  EXPECT_EQ((std::vector<std::string>{"PUT k1=live@22"}), Events(Drain(*s)));
}

// The per-stream budget is in bytes (issue 15): big events fill it long
// before the reply count does; live delivery stops at the budget, catch-up
// batches are cut to fit, control replies count, and once the client drains
// it still gets every event in order.
TEST_F(WatchHubTest, StreamBufferIsBoundedInBytes) {
  WatchOptions o;
  o.stream_buffer_bytes = 64 * 1024;  // 64 KiB; the reply count limit stays 128
  NewHub(o);
  auto s = hub_->NewStream();
  s->Create(Spec("k", "l"));
  const std::string big(10 * 1024, 'x');  // 10 KiB values: ~7 fit
  std::vector<std::string> want;
  for (int i = 0; i < 200; i++) {
    int64_t rev = Put("k" + std::to_string(i % 5), big + std::to_string(i));
    want.push_back("PUT k" + std::to_string(i % 5) + "=" + big + std::to_string(i) + "@" + std::to_string(rev));
    // Never more than the budget plus one reply (the one that crossed it).
    ASSERT_LT(s->BufferedBytesForTesting(), o.stream_buffer_bytes + 12 * 1024) << "after put " << i;
  }
  EXPECT_LT(s->QueuedForTesting(), 10u);
  EXPECT_EQ(1, probe_->slow_watcher_total.Value());
  EXPECT_TRUE(s->OverBudget());
  EXPECT_EQ(static_cast<int64_t>(s->BufferedBytesForTesting()), probe_->buffered_bytes.Value());
  // Control replies count too (a client sending requests without reading).
  for (int i = 0; i < 100; i++) s->RequestProgress();
  std::vector<WatchReply> got;
  size_t max_buffered = 0;
  for (int round = 0; round < 1000; round++) {
    WatchReply r;
    size_t bytes = 0;
    // Take one reply at a time, as the gRPC side does, and release it when
    // "written"; catch-up rounds run in between.
    while (s->Next(&r, &bytes)) {
      got.push_back(std::move(r));
      s->Release(bytes);
    }
    if (!hub_->SyncOnceForTesting()) break;
    max_buffered = std::max(max_buffered, s->BufferedBytesForTesting());
  }
  // A catch-up reply is cut at the budget (plus the revision that crossed it).
  EXPECT_LT(max_buffered, o.stream_buffer_bytes + 12 * 1024);
  std::vector<WatchReply> events_only;
  for (auto& r : got)
    if (!r.events.empty()) events_only.push_back(r);
  EXPECT_EQ(want, Events(events_only));  // every event, in order, once
  EXPECT_FALSE(s->OverBudget());
  EXPECT_EQ(0u, s->BufferedBytesForTesting());
  EXPECT_EQ(0, probe_->buffered_bytes.Value());
  EXPECT_EQ(0, probe_->slow_watcher_total.Value());
}

TEST_F(WatchHubTest, CancelAndErrors) {
  auto s = hub_->NewStream();
  EXPECT_EQ(0, s->Create(Spec("a")));
  WatchSpec mine = Spec("b");
  mine.watch_id = 7;
  EXPECT_EQ(7, s->Create(mine));
  EXPECT_EQ(kInvalidWatchId, s->Create(mine));         // duplicate
  EXPECT_EQ(kInvalidWatchId, s->Create(Spec("b", "a")));  // empty range
  EXPECT_EQ(1, s->Create(Spec("c")));
  auto rs = Drain(*s);
  ASSERT_EQ(5u, rs.size());
  EXPECT_TRUE(rs[2].created && rs[2].canceled);
  EXPECT_EQ(kInvalidWatchId, rs[2].watch_id);
  EXPECT_EQ(kErrWatcherDuplicateId, rs[2].cancel_reason);
  EXPECT_EQ(kErrWatcherRangeEmpty, rs[3].cancel_reason);
  EXPECT_EQ(3, probe_->watcher_total.Value());

  Put("a", "1");
  s->Cancel(0);
  s->Cancel(42);  // unknown: nothing
  Put("a", "2");
  rs = Drain(*s);
  ASSERT_EQ(2u, rs.size());
  EXPECT_EQ((std::vector<std::string>{"PUT a=1@2"}), Events({rs[0]}));
  EXPECT_TRUE(rs[1].canceled);
  EXPECT_FALSE(rs[1].created);
  EXPECT_EQ(0, rs[1].watch_id);
  EXPECT_EQ(2, rs[1].revision);
  EXPECT_EQ(2, probe_->watcher_total.Value());
  // Auto IDs skip the ones in use.
  WatchSpec two = Spec("d");
  two.watch_id = 2;
  EXPECT_EQ(2, s->Create(two));
  EXPECT_EQ(3, s->Create(Spec("e")));

  EXPECT_EQ(1, probe_->watch_stream_total.Value());
  s->Close();
  EXPECT_EQ(0, probe_->watch_stream_total.Value());
  EXPECT_EQ(0, probe_->watcher_total.Value());
  EXPECT_FALSE(hub_->HasWatchers());
}

TEST_F(WatchHubTest, ProgressRequestWaitsForSync) {
  Put("a", "1");  // 2
  auto s = hub_->NewStream();
  s->RequestProgress();  // no watchers: at once
  auto rs = Drain(*s);
  ASSERT_EQ(1u, rs.size());
  EXPECT_EQ(kInvalidWatchId, rs[0].watch_id);
  EXPECT_EQ(2, rs[0].revision);
  EXPECT_TRUE(rs[0].events.empty());
  EXPECT_FALSE(rs[0].created || rs[0].canceled);

  s->Create(Spec("a", "", 1));  // unsynced
  s->RequestProgress();
  rs = Drain(*s);
  ASSERT_EQ(1u, rs.size());  // only "created"
  hub_->SyncOnceForTesting();
  rs = Drain(*s);
  ASSERT_EQ(2u, rs.size());  // the history, then the progress
  EXPECT_EQ((std::vector<std::string>{"PUT a=1@2"}), Events({rs[0]}));
  EXPECT_EQ(kInvalidWatchId, rs[1].watch_id);
  EXPECT_EQ(2, rs[1].revision);
}

// etcd 3.6.2+ (etcd #20229, relied on by Kubernetes): no progress
// notification while the store is below a watcher's explicit start revision,
// neither on request nor on the timer; once the store reaches it, progress
// flows again.
TEST_F(WatchHubTest, NoProgressBelowAnExplicitStartRevision) {
  Put("a", "1");  // 2
  auto s = hub_->NewStream();
  s->Create(Spec("a", "", 3));  // starts at the next revision: synced, nothing to send
  auto rs = Drain(*s);
  ASSERT_EQ(1u, rs.size());  // "created"
  s->RequestProgress();
  EXPECT_TRUE(Drain(*s).empty()) << "a bookmark at 2 would be below the watch's start (3)";
  Put("a", "2");  // 3: the store reaches the start revision
  rs = Drain(*s);
  ASSERT_EQ(1u, rs.size());
  EXPECT_EQ((std::vector<std::string>{"PUT a=2@3"}), Events({rs[0]}));
  s->RequestProgress();
  rs = Drain(*s);
  ASSERT_EQ(1u, rs.size());
  EXPECT_EQ(kInvalidWatchId, rs[0].watch_id);
  EXPECT_EQ(3, rs[0].revision);
}

TEST_F(WatchHubTest, MidBatchWatcherWithoutRecordedEventsCatchesUp) {
  // A batch that began with no watchers does not record its changes; a
  // watcher created before it is notified must still get them.
  auto b = store_->BeginBatch();
  bool rec = hub_->HasWatchers();
  EXPECT_FALSE(rec);
  b->RecordEvents(rec);
  auto s = hub_->NewStream();
  s->Create(Spec("a"));  // next = 2
  {
    auto t = b->Begin();
    ASSERT_TRUE(t.Put("a", "1", 0, nullptr).ok());
  }
  ASSERT_TRUE(b->Commit(++index_).ok());
  hub_->Notify(b->Rev(), b->TakeEvents(), rec);
  b.reset();
  EXPECT_EQ(1, probe_->slow_watcher_total.Value());
  hub_->SyncOnceForTesting();
  auto rs = Drain(*s);
  EXPECT_EQ((std::vector<std::string>{"PUT a=1@2"}), Events(rs));
}

TEST_F(WatchHubTest, ProgressNotifyTicksAndReadyCallback) {
  WatchOptions o;
  o.progress_interval = 50ms;
  NewHub(o);
  hub_->Start();
  auto s = hub_->NewStream();
  std::mutex mu;
  std::condition_variable cv;
  int ready = 0;
  s->SetReadyCallback([&] {
    std::lock_guard<std::mutex> lk(mu);
    ready++;
    cv.notify_all();
  });
  WatchSpec spec = Spec("a");
  spec.progress_notify = true;
  s->Create(spec);
  Drain(*s);  // arms the callback
  Put("a", "1");
  // The callback announces each reply; after the event, quiet ticks bring
  // {watch_id, revision} without events.
  std::vector<WatchReply> got;
  bool event_seen = false, progress_after_event = false;
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!progress_after_event && std::chrono::steady_clock::now() < deadline) {
    {
      std::unique_lock<std::mutex> lk(mu);
      cv.wait_for(lk, 100ms, [&] { return ready > 0; });
      ready = 0;
    }
    for (auto& r : Drain(*s)) {
      EXPECT_EQ(0, r.watch_id);
      if (!r.events.empty()) {
        event_seen = true;
      } else if (event_seen) {
        EXPECT_EQ(2, r.revision);
        EXPECT_FALSE(r.created || r.canceled);
        progress_after_event = true;
      }
    }
  }
  EXPECT_TRUE(event_seen);
  EXPECT_TRUE(progress_after_event);
  s->Close();
  hub_->Stop();
}

// ------------------------------------------------------------ with KvServer

class WatchServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = TestDir("watchsrv");
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  Options Opts() {
    Options o = kvtest::TestOptions(dir_);
    return o;
  }
  static Status PutSync(KvServer& s, const std::string& k, const std::string& v) {
    return kvtest::PutSync(s, k, v);
  }
  std::string dir_;
};

TEST_F(WatchServerTest, UnreadStreamNeverBlocksApplyAndLosesNothing) {
  auto srv = KvServer::Open(Opts());
  ASSERT_TRUE(srv.ok()) << srv.status().ToString();
  KvServer& kv = **srv;
  auto stalled = kv.watch_hub().NewStream();
  WatchSpec spec;
  spec.key = "k";
  spec.range_end = "l";
  stalled->Create(spec);
  const int n = 600;  // far more than the stream's queue holds
  for (int i = 0; i < n; i++) ASSERT_TRUE(PutSync(kv, "k" + std::to_string(i % 7), std::to_string(i)).ok());
  EXPECT_EQ(1, kv.watch_probe().slow_watcher_total.Value());
  // Now read: the syncer catches the watcher up as the queue drains.
  std::vector<int64_t> revs;
  auto deadline = std::chrono::steady_clock::now() + 30s;
  WatchReply r;
  while (revs.size() < static_cast<size_t>(n) && std::chrono::steady_clock::now() < deadline) {
    if (!stalled->Next(&r)) {
      std::this_thread::sleep_for(1ms);
      continue;
    }
    for (auto& e : r.events) revs.push_back(e.kv->mod_revision);
  }
  ASSERT_EQ(static_cast<size_t>(n), revs.size());
  for (int i = 0; i < n; i++) EXPECT_EQ(i + 2, revs[i]);
  deadline = std::chrono::steady_clock::now() + 5s;
  while (kv.watch_probe().slow_watcher_total.Value() != 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(1ms);
  EXPECT_EQ(0, kv.watch_probe().slow_watcher_total.Value());
  stalled->Close();
  kv.Stop();
}

}  // namespace
}  // namespace engram::kv
