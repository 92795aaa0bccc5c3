// KvServer end to end without the network: the write path (raft -> WAL ->
// apply), restart and replay, WAL release, group commit.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <thread>
#include <vector>

#include "src/common/failpoint.h"
#include "src/kv/server.h"
#include "src/kv/testing.h"

namespace engram::kv {
namespace {

class KvServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/kvserver-" + std::to_string(::getpid()) + "-" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  Options Opts() {
    Options o = kvtest::TestOptions(dir_);
    return o;
  }

  static Status PutSync(KvServer& s, const std::string& k, const std::string& v, int64_t* rev = nullptr) {
    return kvtest::PutSync(s, k, v, rev);
  }

  static std::string Get(KvServer& s, const std::string& k) {
    etcdserverpb::RangeRequest req;
    req.set_key(k);
    etcdserverpb::RangeResponse resp;
    Status st = s.Range(req, &resp);
    EXPECT_TRUE(st.ok()) << st.ToString();
    return resp.kvs_size() ? resp.kvs(0).value() : "<missing>";
  }

  std::string dir_;
};

TEST_F(KvServerTest, BootstrapsLikeEtcd) {
  auto s = KvServer::Open(Opts());
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  StatusInfo st = (*s)->GetStatus();
  EXPECT_EQ(2u, st.term);           // boot term 1, then the election
  EXPECT_EQ(4u, st.commit_index);   // conf change, leader entry, publish, cluster version
  EXPECT_EQ(4u, st.applied_index);
  EXPECT_EQ(0x1234u, st.leader);
  EXPECT_EQ(1, st.revision);
  auto members = (*s)->Members();
  ASSERT_EQ(1u, members.size());
  EXPECT_EQ("t1", members[0].name);
  EXPECT_EQ(std::vector<std::string>{"http://127.0.0.1:2379"}, members[0].client_urls);
}

TEST_F(KvServerTest, PutGetAndRestartKeepsDataAndRevision) {
  {
    auto s = KvServer::Open(Opts());
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    int64_t rev = 0;
    ASSERT_TRUE(PutSync(**s, "a", "1", &rev).ok());
    EXPECT_EQ(2, rev);
    ASSERT_TRUE(PutSync(**s, "a", "2", &rev).ok());
    EXPECT_EQ(3, rev);
    EXPECT_EQ("2", Get(**s, "a"));
  }
  auto s = KvServer::Open(Opts());
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ("2", Get(**s, "a"));
  EXPECT_EQ(3, (*s)->GetStatus().revision);
  EXPECT_EQ(3u, (*s)->GetStatus().term);  // a new election on restart
  int64_t rev = 0;
  ASSERT_TRUE(PutSync(**s, "b", "x", &rev).ok());
  EXPECT_EQ(4, rev);
}

TEST_F(KvServerTest, SecondOpenOfTheSameDataDirIsRefused) {
  auto s = KvServer::Open(Opts());
  ASSERT_TRUE(s.ok());
  auto t = KvServer::Open(Opts());
  ASSERT_FALSE(t.ok());
  EXPECT_NE(std::string::npos, t.status().message().find("in use by another engram process"));
}

TEST_F(KvServerTest, ConcurrentProposalsShareFsyncs) {
  auto s = KvServer::Open(Opts());
  ASSERT_TRUE(s.ok());
  uint64_t before = (*s)->wal_probe().fsync_seconds.Snapshot().count;
  constexpr int kThreads = 32, kEach = 50;
  std::vector<std::thread> ts;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; t++) {
    ts.emplace_back([&, t] {
      for (int i = 0; i < kEach; i++)
        if (!PutSync(**s, "k" + std::to_string(t) + "-" + std::to_string(i), "v").ok()) failures++;
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(0, failures.load());
  uint64_t fsyncs = (*s)->wal_probe().fsync_seconds.Snapshot().count - before;
  EXPECT_EQ(1 + kThreads * kEach, (*s)->GetStatus().revision);
  // 1600 acknowledged writes; with group commit far fewer fdatasyncs.
  EXPECT_LT(fsyncs, static_cast<uint64_t>(kThreads * kEach));
  std::printf("%d puts, %lu WAL fsyncs\n", kThreads * kEach, static_cast<unsigned long>(fsyncs));
}

TEST_F(KvServerTest, WalSegmentsAreReleasedAndReplayStillWorks) {
  Options o = Opts();
  o.snapshot_count = 200;
  o.catchup_entries = 50;
  o.wal_segment_bytes = 64 * 1024;
  o.backend_batch_interval_ms = 5;
  std::string value(1000, 'v');
  {
    auto s = KvServer::Open(o);
    ASSERT_TRUE(s.ok());
    for (int i = 0; i < 1000; i++) ASSERT_TRUE(PutSync(**s, "k" + std::to_string(i), value).ok());
    // Wait for the syncer to release (it runs every 5 ms).
    for (int i = 0; i < 400; i++) {
      size_t n = 0;
      for (auto& e : std::filesystem::directory_iterator(o.wal_dir)) n += e.path().extension() == ".wal";
      if (n <= 8) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  size_t segments = 0;
  for (auto& e : std::filesystem::directory_iterator(o.wal_dir)) segments += e.path().extension() == ".wal";
  // ~1 MB of entries in 64 KiB segments is ~16 segments; released ones are gone.
  EXPECT_LE(segments, 8u);
  auto s = KvServer::Open(o);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(value, Get(**s, "k999"));
  EXPECT_EQ(value, Get(**s, "k0"));
  EXPECT_EQ(1001, (*s)->GetStatus().revision);
}

// A crash after the WAL has the entries but before the store committed them:
// the restart re-applies exactly those entries.
TEST_F(KvServerTest, CrashBeforeApplyCommitIsReplayed) {
  Options o = Opts();
  ASSERT_EXIT(
      {
        auto s = KvServer::Open(o);
        if (!s.ok()) _exit(3);
        if (!PutSync(**s, "before", "1").ok()) _exit(4);
        failpoint::Set("apply-before-commit", "panic");
        etcdserverpb::PutRequest req;
        req.set_key("lost-in-apply");
        req.set_value("2");
        etcdserverpb::PutResponse resp;
        (*s)->Put(&req, &resp, [](const Status&) {});
        std::this_thread::sleep_for(std::chrono::seconds(10));
        _exit(5);
      },
      ::testing::KilledBySignal(SIGABRT), "apply-before-commit");
  auto s = KvServer::Open(o);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ("1", Get(**s, "before"));
  // The entry was in the fsynced WAL, so it is applied on restart.
  EXPECT_EQ("2", Get(**s, "lost-in-apply"));
  EXPECT_EQ(3, (*s)->GetStatus().revision);
}

TEST_F(KvServerTest, ErrorsAreEtcds) {
  auto s = KvServer::Open(Opts());
  ASSERT_TRUE(s.ok());
  etcdserverpb::PutRequest req;
  req.set_key("k");
  req.set_lease(99);
  etcdserverpb::PutResponse resp;
  std::atomic<bool> done{false};
  Status got;
  (*s)->Put(&req, &resp, [&](const Status& st) {
    got = st;
    done = true;
  });
  while (!done) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(Code::kNotFound, got.code());
  EXPECT_EQ("etcdserver: requested lease not found", got.message());
  EXPECT_EQ(1, (*s)->GetStatus().revision);  // nothing written

  etcdserverpb::RangeRequest rr;
  rr.set_key("k");
  rr.set_revision(50);
  etcdserverpb::RangeResponse rresp;
  Status st = (*s)->Range(rr, &rresp);
  EXPECT_EQ(Code::kOutOfRange, st.code());
  EXPECT_EQ("etcdserver: mvcc: required revision is a future revision", st.message());
}

}  // namespace
}  // namespace engram::kv

namespace engram::kv {
namespace {

// After a power loss the WAL's last hard state can carry an older commit than
// the applied index the store synced (commit-only hard states are written
// without an fdatasync). The member must still start, keeping its data.
TEST(KvServerRecovery, WalCommitBehindStoreAppliedIndex) {
  std::string dir = kvtest::FreshDir(::testing::TempDir(), "kvrecovery",
                                     ::testing::UnitTest::GetInstance()->current_test_info()->name());
  Options o = kvtest::TestOptions(dir);
  uint64_t applied = 0;
  {
    auto s = KvServer::Open(o);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    for (int i = 0; i < 3; i++) ASSERT_TRUE(kvtest::PutSync(**s, "k" + std::to_string(i), "v").ok());
    applied = (*s)->GetStatus().applied_index;
  }
  {
    wal::ReplayResult rep;
    auto w = wal::Wal::Open(wal::Options{o.wal_dir}, "", &rep);
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    ASSERT_GE(rep.hard_state.commit, applied);
    raft::HardState stale = rep.hard_state;
    stale.commit = 2;  // as if the last commit-only records never reached the disk
    ASSERT_TRUE((*w)->Save(stale, {}).ok());
  }
  auto s = KvServer::Open(o);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(4, (*s)->GetStatus().revision);
  int64_t rev = 0;
  ASSERT_TRUE(kvtest::PutSync(**s, "after", "x", &rev).ok());
  EXPECT_EQ(5, rev);
  s->reset();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace engram::kv
