#include <gtest/gtest.h>

#include "src/kv/compactor.h"

namespace engram::kv {
namespace {

using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::minutes;

TEST(PeriodicPolicy, OneHourRetention) {
  auto t0 = CompactClock::time_point{};
  PeriodicPolicy p(hours(1), t0);
  EXPECT_EQ(milliseconds(minutes(6)), p.TickInterval());
  // Revisions grow by 100 every 6 minutes; nothing is compacted in the first hour.
  int64_t rev = 1;
  auto now = t0;
  std::optional<int64_t> got;
  int ticks = 0;
  while (!got) {
    p.Record(rev);
    now += minutes(6);
    rev += 100;
    got = p.Due(now);
    ticks++;
    ASSERT_LT(ticks, 100);
  }
  EXPECT_EQ(10, ticks);  // due exactly one period after start
  EXPECT_EQ(1, *got);    // the revision sampled one period ago
  p.OnResult(now, true);
  // Next compaction one compact interval (1h) later, at the revision of 1h before.
  got.reset();
  ticks = 0;
  while (!got) {
    p.Record(rev);
    now += minutes(6);
    rev += 100;
    got = p.Due(now);
    ticks++;
  }
  EXPECT_EQ(10, ticks);
  EXPECT_EQ(rev - 100 - 1000, *got);
}

TEST(PeriodicPolicy, FailureRetriesEveryTick) {
  auto t0 = CompactClock::time_point{};
  PeriodicPolicy p(minutes(10), t0);
  auto now = t0;
  for (int i = 0; i < 10; i++) {
    p.Record(5);
    now += minutes(1);
    if (i < 9) {
      EXPECT_FALSE(p.Due(now).has_value()) << i;
    }
  }
  ASSERT_TRUE(p.Due(now).has_value());
  p.OnResult(now, false);
  p.Record(6);
  now += minutes(1);
  EXPECT_TRUE(p.Due(now).has_value());  // retried after one tick
}

TEST(RevisionPolicy, KeepsLastN) {
  RevisionPolicy p(1000);
  EXPECT_FALSE(p.OnTick(500).has_value());
  EXPECT_FALSE(p.OnTick(1000).has_value());
  ASSERT_EQ(500, p.OnTick(1500).value());
  p.OnResult(500, true);
  EXPECT_FALSE(p.OnTick(1500).has_value());  // same revision as the last success
  EXPECT_EQ(501, p.OnTick(1501).value());
}

TEST(ParseCompaction, EtcdForms) {
  auto a = ParseCompaction("periodic", "1");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(milliseconds(hours(1)), a->period);
  auto b = ParseCompaction("periodic", "30m");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(milliseconds(minutes(30)), b->period);
  auto c = ParseCompaction("revision", "1000");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(1000, c->revisions);
  EXPECT_FALSE(ParseCompaction("revision", "1h").ok());
  EXPECT_FALSE(ParseCompaction("periodic", "abc").ok());
  EXPECT_FALSE(ParseCompaction("periodic", "0")->enabled());
}

}  // namespace
}  // namespace engram::kv
