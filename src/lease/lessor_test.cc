// Lessor: grant/revoke/attach with etcd's rules and errors, expiry listing
// with marks, renew, promotion, and rollback of an aborted apply batch. Time
// is an input: no sleeps.
#include "src/lease/lessor.h"

#include <gtest/gtest.h>

#include <map>

namespace engram::lease {
namespace {

using std::chrono::seconds;
const Clock::time_point T0 = Clock::time_point() + std::chrono::hours(1);

TEST(Lessor, GrantRaisesToMinimumAndRefusesDuplicatesAndHugeTTLs) {
  Lessor l(2);
  int64_t granted = 0;
  ASSERT_TRUE(l.Grant(1, 1, T0, &granted).ok());
  EXPECT_EQ(2, granted);  // etcd raises a TTL below the minimum
  ASSERT_TRUE(l.Grant(2, 60, T0, &granted).ok());
  EXPECT_EQ(60, granted);
  Status dup = l.Grant(2, 60, T0, &granted);
  EXPECT_EQ(Code::kFailedPrecondition, dup.code());
  EXPECT_EQ("etcdserver: lease already exists", dup.message());
  Status big = l.Grant(3, kMaxLeaseTTL + 1, T0, &granted);
  EXPECT_EQ("etcdserver: too large lease TTL", big.message());
  EXPECT_EQ((std::vector<int64_t>{1, 2}), l.Leases());
}

TEST(Lessor, RevokeReturnsAttachedKeysAndDetachesThem) {
  Lessor l(1);
  int64_t g;
  ASSERT_TRUE(l.Grant(7, 10, T0, &g).ok());
  ASSERT_TRUE(l.Grant(8, 10, T0, &g).ok());
  l.Attach("b", 7);
  l.Attach("a", 7);
  l.Attach("c", 8);
  l.Attach("c", 7);  // moves from 8 to 7
  EXPECT_EQ(7, l.LeaseOf("c"));
  auto ttl8 = l.TimeToLive(8, T0, true);
  ASSERT_TRUE(ttl8.ok());
  EXPECT_TRUE(ttl8->keys.empty());
  std::vector<std::string> keys;
  ASSERT_TRUE(l.Revoke(7, &keys).ok());
  EXPECT_EQ((std::vector<std::string>{"a", "b", "c"}), keys);
  EXPECT_EQ(0, l.LeaseOf("a"));
  EXPECT_FALSE(l.Exists(7));
  Status nf = l.Revoke(7, &keys);
  EXPECT_EQ(Code::kNotFound, nf.code());
  EXPECT_EQ("etcdserver: requested lease not found", nf.message());
}

TEST(Lessor, DetachRangeFollowsEtcdRangeRules) {
  Lessor l(1);
  int64_t g;
  ASSERT_TRUE(l.Grant(1, 10, T0, &g).ok());
  for (const char* k : {"a", "b", "b1", "c", "d"}) l.Attach(k, 1);
  l.DetachRange("b", "");  // the key alone
  EXPECT_EQ(0, l.LeaseOf("b"));
  EXPECT_EQ(1, l.LeaseOf("b1"));
  l.DetachRange("b", "c");  // [b, c)
  EXPECT_EQ(0, l.LeaseOf("b1"));
  EXPECT_EQ(1, l.LeaseOf("c"));
  l.DetachRange("c", std::string(1, '\0'));  // every key >= c
  EXPECT_EQ(0, l.LeaseOf("d"));
  auto info = l.TimeToLive(1, T0, true);
  EXPECT_EQ(std::vector<std::string>{"a"}, info->keys);
}

TEST(Lessor, ExpiryIsListedOnceAndRenewAndPromoteExtend) {
  Lessor l(1);
  int64_t g;
  ASSERT_TRUE(l.Grant(1, 5, T0, &g).ok());
  ASSERT_TRUE(l.Grant(2, 10, T0, &g).ok());
  ASSERT_TRUE(l.Grant(3, 10, T0, &g).ok());
  EXPECT_TRUE(l.Expired(T0 + seconds(4), 10).empty());
  auto r = l.TimeToLive(1, T0 + std::chrono::milliseconds(1500), false);
  EXPECT_EQ(3, r->remaining_ttl);  // 3.5 s left, truncated as etcd
  EXPECT_EQ(5, r->granted_ttl);
  EXPECT_EQ((std::vector<int64_t>{1}), l.Expired(T0 + seconds(5), 10));
  EXPECT_TRUE(l.Expired(T0 + seconds(6), 10).empty()) << "a marked lease is listed once";
  l.Unmark(1, T0 + seconds(7));  // its revoke proposal failed: retried after a while
  EXPECT_TRUE(l.Expired(T0 + seconds(6), 10).empty());
  EXPECT_EQ((std::vector<int64_t>{1}), l.Expired(T0 + seconds(7), 10));
  // An expired (or being revoked) lease is not renewed back to life.
  EXPECT_EQ(Code::kNotFound, l.Renew(1, T0 + seconds(7)).status().code());
  // Renew pushes the expiry to now + TTL.
  auto rn = l.Renew(2, T0 + seconds(8));
  ASSERT_TRUE(rn.ok());
  ASSERT_EQ(10, *rn);
  // At most `limit`, the longest expired first.
  auto due = l.Expired(T0 + seconds(12), 1);
  EXPECT_EQ((std::vector<int64_t>{3}), due);
  EXPECT_EQ((std::vector<int64_t>{2}), l.Expired(T0 + seconds(18), 5));
  EXPECT_EQ(-12, l.TimeToLive(2, T0 + seconds(30), false)->remaining_ttl);  // late revoke: negative, as etcd
  // Promotion (a restart): every lease gets its full TTL from now.
  l.Promote(T0 + seconds(100));
  EXPECT_TRUE(l.Expired(T0 + seconds(104), 10).empty());
  EXPECT_EQ(10, l.TimeToLive(3, T0 + seconds(100), false)->remaining_ttl);
  EXPECT_EQ(Code::kNotFound, l.Renew(99, T0).status().code());
}

TEST(Lessor, RollbackUndoesAnAbortedBatch) {
  Lessor l(1);
  int64_t g;
  ASSERT_TRUE(l.Grant(1, 10, T0, &g).ok());
  l.Attach("k1", 1);
  l.Attach("k2", 1);
  l.BeginBatch();
  ASSERT_TRUE(l.Grant(2, 10, T0, &g).ok());
  l.Attach("k1", 2);
  l.DetachRange("k2", "");
  std::vector<std::string> keys;
  ASSERT_TRUE(l.Revoke(1, &keys).ok());
  l.Attach("k3", 2);
  l.Rollback();
  EXPECT_EQ((std::vector<int64_t>{1}), l.Leases());
  EXPECT_EQ(1, l.LeaseOf("k1"));
  EXPECT_EQ(1, l.LeaseOf("k2"));
  EXPECT_EQ(0, l.LeaseOf("k3"));
  EXPECT_EQ((std::vector<std::string>{"k1", "k2"}), l.TimeToLive(1, T0, true)->keys);
  // A committed batch stays.
  l.BeginBatch();
  ASSERT_TRUE(l.Grant(3, 10, T0, &g).ok());
  l.EndBatch();
  l.Rollback();  // nothing to undo
  EXPECT_TRUE(l.Exists(3));
}

TEST(Lessor, CheckpointsRecordTheRemainingTTLForTheNextPromotion) {
  Lessor l(1, nullptr, seconds(300));  // etcd's interval: leases longer than 5 minutes
  int64_t g;
  ASSERT_TRUE(l.Grant(1, 600, T0, &g).ok());
  ASSERT_TRUE(l.Grant(2, 60, T0, &g).ok());  // not longer than the interval: never checkpointed
  EXPECT_TRUE(l.DueCheckpoints(T0 + seconds(299), 10).empty());
  auto due = l.DueCheckpoints(T0 + std::chrono::milliseconds(300500), 10);
  ASSERT_EQ(1u, due.size());
  EXPECT_EQ(1, due[0].first);
  EXPECT_EQ(300, due[0].second);  // 299.5 s left, rounded up as etcd
  EXPECT_TRUE(l.DueCheckpoints(T0 + seconds(301), 10).empty()) << "listed once until applied";
  EXPECT_FALSE(l.NeedsCheckpointReset(1));
  ASSERT_TRUE(l.Checkpoint(1, 300, T0 + seconds(301)));
  EXPECT_FALSE(l.Checkpoint(99, 5, T0)) << "unknown leases are ignored";
  EXPECT_TRUE(l.NeedsCheckpointReset(1));
  EXPECT_EQ((std::pair<int64_t, int64_t>{600, 300}), l.Persisted(1));
  // The checkpoint does not move the current expiry; the next promotion
  // starts from the recorded remaining TTL instead of the full TTL.
  EXPECT_EQ(298, l.TimeToLive(1, T0 + seconds(302), false)->remaining_ttl);
  l.Promote(T0 + seconds(1000));
  EXPECT_EQ(300, l.TimeToLive(1, T0 + seconds(1000), false)->remaining_ttl);
  EXPECT_EQ(60, l.TimeToLive(2, T0 + seconds(1000), false)->remaining_ttl);
  // A restart restores it the same way.
  Lessor r(1, nullptr, seconds(300));
  r.Restore(1, 600, 300, T0);
  r.Restore(2, 0, 0, T0);  // a stored TTL below the minimum is raised (etcd)
  EXPECT_EQ(300, r.TimeToLive(1, T0, false)->remaining_ttl);
  EXPECT_EQ(1, r.TimeToLive(2, T0, false)->granted_ttl);
  // Cleared by a checkpoint of 0 (what a keepalive proposes first).
  ASSERT_TRUE(l.Checkpoint(1, 0, T0 + seconds(1001)));
  EXPECT_FALSE(l.NeedsCheckpointReset(1));
  l.Promote(T0 + seconds(2000));
  EXPECT_EQ(600, l.TimeToLive(1, T0 + seconds(2000), false)->remaining_ttl);
  // Rolled back with its batch.
  l.BeginBatch();
  ASSERT_TRUE(l.Checkpoint(1, 42, T0 + seconds(2001)));
  l.Rollback();
  EXPECT_FALSE(l.NeedsCheckpointReset(1));
  // Without checkpointing nothing is ever due.
  Lessor off(1);
  ASSERT_TRUE(off.Grant(1, 600, T0, &g).ok());
  EXPECT_TRUE(off.DueCheckpoints(T0 + seconds(400), 10).empty());
  EXPECT_FALSE(off.checkpointing());
}

TEST(Lessor, PromoteSpreadsAThousandSimultaneousExpiries) {
  // etcd: at most 750 expiries in any one-second window after a promotion
  // (3/4 of the 1000/s revoke rate), so a restart never floods the revokes.
  Lessor l(1);
  int64_t g;
  for (int64_t id = 1; id <= 3000; id++) ASSERT_TRUE(l.Grant(id, 10, T0, &g).ok());
  l.Promote(T0 + seconds(100));
  // Count expiries per second of the next minute.
  std::map<int64_t, int> per_second;
  for (int64_t id = 1; id <= 3000; id++) {
    auto info = l.TimeToLive(id, T0 + seconds(100), false);
    ASSERT_TRUE(info.ok());
    EXPECT_GE(info->remaining_ttl, 9) << "never earlier than its TTL";
  }
  size_t total = 0;
  for (int s = 0; s < 60; s++) {
    const auto expired = l.Expired(T0 + seconds(100) + seconds(s) + std::chrono::milliseconds(999), 100000);
    per_second[s] = static_cast<int>(expired.size());
    total += expired.size();
    EXPECT_LE(expired.size(), 760u) << "second " << s;
  }
  EXPECT_EQ(3000u, total) << "every lease still expires, later";
  // Fewer than 1000 leases: not spread (all at their TTL).
  Lessor few(1);
  for (int64_t id = 1; id <= 999; id++) ASSERT_TRUE(few.Grant(id, 10, T0, &g).ok());
  few.Promote(T0);
  EXPECT_EQ(999u, few.Expired(T0 + seconds(10), 100000).size());
}

}  // namespace
}  // namespace engram::lease
