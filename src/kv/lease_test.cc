// Leases through KvServer (issue 6): grant/put/revoke with etcd's errors,
// revoke = every attached key deleted in one revision (watchers see the
// deletes together), expiry revoked through raft, leases and attachments
// surviving a restart with their TTL renewed.
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <thread>

#include "src/kv/server.h"
#include "src/kv/testing.h"

namespace engram::kv {
namespace {

using Waitable = DoneWaiter;  // src/kv/wait.h

class LeaseTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = kvtest::FreshDir(::testing::TempDir(), "lease",
                            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    Open();
  }
  void TearDown() override {
    s_.reset();
    std::filesystem::remove_all(dir_);
  }
  void Open(bool checkpoint = false) {
    s_.reset();
    auto o = kvtest::TestOptions(dir_);  // election 100 ms: minimum TTL 1 s
    o.lease_checkpoint = checkpoint;
    o.lease_checkpoint_interval_ms = 1000;  // leases longer than 1 s are checkpointed every second
    auto s = KvServer::Open(o);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    s_ = std::move(*s);
  }
  Result<int64_t> Grant(int64_t ttl, int64_t id = 0) {
    etcdserverpb::LeaseGrantRequest req;
    req.set_ttl(ttl);
    req.set_id(id);
    etcdserverpb::LeaseGrantResponse resp;
    Waitable w;
    s_->LeaseGrant(&req, &resp, w.Fn());
    Status st = w.Wait();
    if (!st.ok()) return st;
    return resp.id();
  }
  Status Revoke(int64_t id, int64_t* rev = nullptr) {
    etcdserverpb::LeaseRevokeRequest req;
    req.set_id(id);
    etcdserverpb::LeaseRevokeResponse resp;
    Waitable w;
    s_->LeaseRevoke(&req, &resp, w.Fn());
    Status st = w.Wait();
    if (rev) *rev = resp.header().revision();
    return st;
  }
  Status Put(const std::string& k, int64_t lease, int64_t* rev = nullptr) {
    etcdserverpb::PutRequest req;
    req.set_key(k);
    req.set_value("v");
    req.set_lease(lease);
    etcdserverpb::PutResponse resp;
    Waitable w;
    s_->Put(&req, &resp, w.Fn());
    Status st = w.Wait();
    if (rev) *rev = resp.header().revision();
    return st;
  }
  int Count(const std::string& prefix) {
    etcdserverpb::RangeRequest req;
    req.set_key(prefix);
    req.set_range_end(prefix + "\xff");
    etcdserverpb::RangeResponse resp;
    EXPECT_TRUE(s_->Range(req, &resp).ok());
    return resp.kvs_size();
  }
  etcdserverpb::LeaseTimeToLiveResponse TTL(int64_t id) {
    etcdserverpb::LeaseTimeToLiveRequest req;
    req.set_id(id);
    req.set_keys(true);
    etcdserverpb::LeaseTimeToLiveResponse resp;
    s_->LeaseTimeToLive(req, &resp);
    return resp;
  }

  std::string dir_;
  std::unique_ptr<KvServer> s_;
};

TEST_F(LeaseTest, RevokeDeletesEveryAttachedKeyInOneRevisionAndWatchersSeeIt) {
  auto id = Grant(60);
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  EXPECT_GT(*id, 0);
  for (const char* k : {"a/2", "a/1", "a/3"}) ASSERT_TRUE(Put(k, *id).ok());
  ASSERT_TRUE(Put("a/free", 0).ok());
  auto ttl = TTL(*id);
  EXPECT_EQ(60, ttl.grantedttl());
  EXPECT_EQ(3, ttl.keys_size());
  auto stream = s_->watch_hub().NewStream();
  WatchSpec spec;
  spec.key = "a/";
  spec.range_end = "a0";
  stream->Create(spec);
  const int64_t before = s_->GetStatus().revision;
  int64_t rev = 0;
  ASSERT_TRUE(Revoke(*id, &rev).ok());
  EXPECT_EQ(before + 1, rev);
  EXPECT_EQ(before + 1, s_->GetStatus().revision);
  EXPECT_EQ(1, Count("a/"));  // only the key without a lease
  std::vector<std::string> deleted;
  WatchReply r;
  int replies = 0;
  while (stream->Next(&r)) {
    if (r.events.empty()) continue;
    replies++;
    for (const auto& e : r.events) {
      EXPECT_TRUE(e.tombstone);
      EXPECT_EQ(rev, e.kv->mod_revision);
      deleted.push_back(e.kv->key);
    }
  }
  EXPECT_EQ(1, replies);
  EXPECT_EQ((std::vector<std::string>{"a/1", "a/2", "a/3"}), deleted);
  EXPECT_EQ(-1, TTL(*id).ttl());  // etcd: an unknown lease has TTL -1
}

// A key deleted (by DeleteRange) leaves its lease: re-created without one,
// the revoke does not touch it; ignore_lease keeps the attachment.
TEST_F(LeaseTest, DeletedRecreatedAndIgnoreLeaseKeys) {
  auto id = Grant(60);
  ASSERT_TRUE(id.ok());
  ASSERT_TRUE(Put("d/1", *id).ok());
  ASSERT_TRUE(Put("d/2", *id).ok());
  etcdserverpb::DeleteRangeRequest del;
  del.set_key("d/1");
  etcdserverpb::DeleteRangeResponse dresp;
  Waitable w;
  s_->DeleteRange(&del, &dresp, w.Fn());
  ASSERT_TRUE(w.Wait().ok());
  ASSERT_TRUE(Put("d/1", 0).ok());
  etcdserverpb::PutRequest keep;
  keep.set_key("d/2");
  keep.set_value("new");
  keep.set_ignore_lease(true);
  etcdserverpb::PutResponse kresp;
  Waitable kw;
  s_->Put(&keep, &kresp, kw.Fn());
  ASSERT_TRUE(kw.Wait().ok());
  auto ttl = TTL(*id);
  ASSERT_EQ(1, ttl.keys_size());
  EXPECT_EQ("d/2", ttl.keys(0));
  ASSERT_TRUE(Revoke(*id).ok());
  EXPECT_EQ(1, Count("d/"));  // d/1 (re-created without a lease) survives
}

TEST_F(LeaseTest, EtcdErrors) {
  auto st = Put("k", 12345);
  EXPECT_EQ(Code::kNotFound, st.code());
  EXPECT_EQ("etcdserver: requested lease not found", st.message());
  EXPECT_EQ("etcdserver: requested lease not found", Revoke(12345).message());
  ASSERT_TRUE(Grant(10, 77).ok());
  auto dup = Grant(10, 77);
  EXPECT_EQ(Code::kFailedPrecondition, dup.status().code());
  EXPECT_EQ("etcdserver: lease already exists", dup.status().message());
  EXPECT_EQ("etcdserver: too large lease TTL", Grant(9000000001LL).status().message());
  // A txn put with an unknown lease fails the whole txn, as etcd.
  etcdserverpb::TxnRequest t;
  auto* p = t.add_success()->mutable_request_put();
  p->set_key("t");
  p->set_lease(999);
  etcdserverpb::TxnResponse tr;
  Waitable w;
  s_->Txn(&t, &tr, w.Fn());
  EXPECT_EQ("etcdserver: requested lease not found", w.Wait().message());
  // Below the minimum TTL: raised to it (1 s with a 100 ms election timeout).
  auto small = Grant(0);
  ASSERT_TRUE(small.ok());
  EXPECT_EQ(1, TTL(*small).grantedttl());
  // Keepalive of an unknown lease: not found (the stream answers TTL 0).
  EXPECT_EQ(Code::kNotFound, s_->LeaseRenew(4242).status().code());
  auto renewed = s_->LeaseRenew(77);
  ASSERT_TRUE(renewed.ok());
  EXPECT_EQ(10, *renewed);
}

TEST_F(LeaseTest, ExpiredLeasesAreRevokedThroughRaft) {
  auto id = Grant(1);
  ASSERT_TRUE(id.ok());
  ASSERT_TRUE(Put("e/1", *id).ok());
  ASSERT_TRUE(Put("e/2", *id).ok());
  const int64_t rev = s_->GetStatus().revision;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (Count("e/") > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(0, Count("e/")) << "the lease did not expire";
  EXPECT_EQ(rev + 1, s_->GetStatus().revision) << "both keys in one revision";
  // Counted when the revoke's completion runs, just after the commit.
  while (s_->lease_probe().expired.Value() == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(1, s_->lease_probe().expired.Value());
  EXPECT_EQ(1, s_->lease_probe().revoked.Value());
  EXPECT_EQ(-1, TTL(*id).ttl());
}

TEST_F(LeaseTest, LeasesAndAttachmentsSurviveARestartWithTheirTTLRenewed) {
  auto id = Grant(30);
  ASSERT_TRUE(id.ok());
  ASSERT_TRUE(Put("r/1", *id).ok());
  ASSERT_TRUE(Put("r/2", *id).ok());
  ASSERT_TRUE(Put("r/2", 0).ok());  // overwritten without a lease: detached
  auto gone = Grant(20);
  ASSERT_TRUE(gone.ok());
  ASSERT_TRUE(Revoke(*gone).ok());
  Open();  // restart
  auto ttl = TTL(*id);
  EXPECT_EQ(30, ttl.grantedttl());
  EXPECT_GE(ttl.ttl(), 29);  // full TTL again (+ the election timeout), as etcd
  ASSERT_EQ(1, ttl.keys_size());
  EXPECT_EQ("r/1", ttl.keys(0));
  EXPECT_EQ(-1, TTL(*gone).ttl());
  ASSERT_TRUE(Revoke(*id).ok());
  EXPECT_EQ(1, Count("r/"));  // r/2 had left the lease
  etcdserverpb::LeaseLeasesResponse leases;
  s_->LeaseLeases(&leases);
  EXPECT_EQ(0, leases.leases_size());
}

// --experimental-enable-lease-checkpoint (etcd 3.6: persisted): a restart
// resumes a lease from its last checkpointed remaining TTL, not its full
// TTL; a keepalive clears the checkpoint through raft first.
TEST_F(LeaseTest, CheckpointedRemainingTTLSurvivesARestart) {
  Open(/*checkpoint=*/true);
  auto id = Grant(30);
  ASSERT_TRUE(id.ok());
  auto kept = Grant(30);
  ASSERT_TRUE(kept.ok());
  ASSERT_TRUE(Put("c/1", *id).ok());
  // Wait for at least 3 s to pass and a checkpoint to record it.
  std::this_thread::sleep_for(std::chrono::milliseconds(3500));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (s_->lessor().Persisted(*id).second == 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const int64_t recorded = s_->lessor().Persisted(*id).second;
  ASSERT_GT(recorded, 0) << "no checkpoint was applied";
  EXPECT_LE(recorded, 27);
  // A keepalive first clears the recorded TTL of `kept`, through raft.
  ASSERT_TRUE(s_->lessor().NeedsCheckpointReset(*kept));
  auto renewed = s_->LeaseRenew(*kept);
  ASSERT_TRUE(renewed.ok()) << renewed.status().ToString();
  EXPECT_EQ(30, *renewed);
  EXPECT_EQ(0, s_->lessor().Persisted(*kept).second);
  Open(/*checkpoint=*/true);  // restart
  auto ttl = TTL(*id);
  EXPECT_EQ(30, ttl.grantedttl());
  EXPECT_LE(ttl.ttl(), recorded) << "restarted from the checkpoint, not the full TTL";
  EXPECT_GE(ttl.ttl(), 1);
  ASSERT_EQ(1, ttl.keys_size());
  // The renewed lease's cleared checkpoint survived too: full TTL again.
  EXPECT_GE(TTL(*kept).ttl(), 28);
  // Without the feature the stored remaining TTL is not used (etcd without
  // checkpointing: full TTL at start).
  Open(/*checkpoint=*/false);
  EXPECT_GE(TTL(*id).ttl(), 29);
}

// A stopping server revokes nothing: a lease that runs out while the
// server shuts down is renewed at the next start instead (as etcd).
TEST_F(LeaseTest, NoRevokesOnceQuiesced) {
  auto id = Grant(1);
  ASSERT_TRUE(id.ok());
  ASSERT_TRUE(Put("q/1", *id).ok());
  s_->Quiesce();
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));  // past the TTL and a few revoke passes
  EXPECT_EQ(1, Count("q/"));
  EXPECT_EQ(0, s_->lease_probe().expired.Value());
  Open();  // restart: the lease is back with its full TTL, then expires
  EXPECT_GE(TTL(*id).ttl(), 1);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (Count("q/") > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(0, Count("q/"));
}

}  // namespace
}  // namespace engram::kv
