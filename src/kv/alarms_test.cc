// Alarms, the backend quota and defragmentation through KvServer (etcd's
// quotaKVServer, applierV3Capped/Corrupt, Maintenance.Alarm/Defragment).
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <thread>
#include <vector>

#include "src/common/failpoint.h"
#include "src/kv/alarms.h"
#include "src/kv/server.h"
#include "src/kv/testing.h"

namespace engram::kv {
namespace {

using etcdserverpb::AlarmRequest;
using etcdserverpb::AlarmResponse;

constexpr const char* kNoSpace = "etcdserver: mvcc: database space exceeded";
constexpr const char* kCorrupt = "etcdserver: corrupt cluster";


class AlarmTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/kvalarm-" + std::to_string(::getpid()) + "-" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override {
    failpoint::Set("apply-before-commit", "off");
    s_.reset();
    std::filesystem::remove_all(dir_);
  }

  Options Opts(int64_t quota) {
    Options o = kvtest::TestOptions(dir_);
    o.quota_bytes = quota;
    return o;
  }
  void Open(int64_t quota) {
    s_.reset();
    auto s = KvServer::Open(Opts(quota));
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    s_ = std::move(*s);
  }

  Status Put(const std::string& k, const std::string& v) {
    etcdserverpb::PutRequest req;
    req.set_key(k);
    req.set_value(v);
    etcdserverpb::PutResponse resp;
    return Await([&](KvServer::Done d) { s_->Put(&req, &resp, std::move(d)); });
  }
  Status Delete(const std::string& k) {
    etcdserverpb::DeleteRangeRequest req;
    req.set_key(k);
    etcdserverpb::DeleteRangeResponse resp;
    return Await([&](KvServer::Done d) { s_->DeleteRange(&req, &resp, std::move(d)); });
  }
  Status Txn(const etcdserverpb::TxnRequest& req) {
    etcdserverpb::TxnResponse resp;
    return Await([&](KvServer::Done d) { s_->Txn(&req, &resp, std::move(d)); });
  }
  Status Compact(int64_t rev) {
    etcdserverpb::CompactionRequest req;
    req.set_revision(rev);
    etcdserverpb::CompactionResponse resp;
    return Await([&](KvServer::Done d) { s_->Compact(&req, &resp, std::move(d)); });
  }
  Status Alarm(AlarmRequest::AlarmAction action, uint64_t member, etcdserverpb::AlarmType type,
               AlarmResponse* resp) {
    AlarmRequest req;
    req.set_action(action);
    req.set_memberid(member);
    req.set_alarm(type);
    return Await([&](KvServer::Done d) { s_->Alarm(&req, resp, std::move(d)); });
  }
  std::vector<AlarmInfo> List() {
    AlarmResponse resp;
    EXPECT_TRUE(Alarm(AlarmRequest::GET, 0, etcdserverpb::NONE, &resp).ok());
    EXPECT_FALSE(resp.has_header());  // etcd 3.4 answers without one
    std::vector<AlarmInfo> out;
    for (const auto& m : resp.alarms()) out.push_back({m.memberid(), m.alarm()});
    return out;
  }
  std::string Get(const std::string& k) {
    etcdserverpb::RangeRequest req;
    req.set_key(k);
    etcdserverpb::RangeResponse resp;
    Status st = s_->Range(req, &resp);
    EXPECT_TRUE(st.ok()) << st.ToString();
    return resp.kvs_size() ? resp.kvs(0).value() : "<missing>";
  }
  static etcdserverpb::TxnRequest TxnPut(const std::string& k, const std::string& v, bool in_failure = false) {
    etcdserverpb::TxnRequest t;
    auto* op = in_failure ? t.add_failure() : t.add_success();
    op->mutable_request_put()->set_key(k);
    op->mutable_request_put()->set_value(v);
    return t;
  }
  // Puts 4 KiB values under new keys until the quota refuses one.
  int FillUntilNoSpace() {
    std::string v(4096, 'b');
    for (int i = 0; i < 1000; i++) {
      Status st = Put("fill" + std::to_string(i), v);
      if (!st.ok()) {
        EXPECT_EQ(Code::kResourceExhausted, st.code());
        EXPECT_EQ(kNoSpace, st.message());
        return i;
      }
    }
    ADD_FAILURE() << "the quota never refused a put";
    return -1;
  }

  std::string dir_;
  std::unique_ptr<KvServer> s_;
};

TEST(AlarmText, AsGogoprotoPrintsIt) {
  EXPECT_EQ("memberID:13668033151171901709 alarm:NOSPACE ", AlarmText({13668033151171901709ull, etcdserverpb::NOSPACE}));
  EXPECT_EQ("alarm:CORRUPT ", AlarmText({0, etcdserverpb::CORRUPT}));
  EXPECT_EQ("memberID:7 ", AlarmText({7, etcdserverpb::NONE}));
}

TEST(QuotaCost, AsEtcds) {
  etcdserverpb::PutRequest p;
  p.set_key("abc");
  p.set_value(std::string(100, 'x'));
  EXPECT_EQ(256 + 3 + 100, QuotaCost(p));
  etcdserverpb::TxnRequest t;
  EXPECT_EQ(0, QuotaCost(t));
  t.add_success()->mutable_request_range()->set_key("a");
  t.add_failure()->mutable_request_delete_range()->set_key("a");
  EXPECT_EQ(0, QuotaCost(t));  // no puts: always within the quota
  *t.add_success()->mutable_request_put() = p;
  auto* f = t.add_failure()->mutable_request_put();
  f->set_key("k");
  f->set_value(std::string(500, 'y'));
  EXPECT_EQ(256 + 1 + 500, QuotaCost(t));  // the larger branch
}

TEST_F(AlarmTest, QuotaRaisesNoSpaceOnceAndCapsWrites) {
  Open(0);  // learn the fresh file size
  const int64_t fresh = s_->store().FileBytes();
  ASSERT_GT(fresh, 0);
  Open(fresh + 64 * 1024);
  EXPECT_TRUE(List().empty());
  EXPECT_TRUE(s_->ActiveAlarms().empty());
  ASSERT_TRUE(Put("small", "v").ok());
  int written = FillUntilNoSpace();
  EXPECT_GT(written, 3);
  const int64_t rev = s_->GetStatus().revision;

  // One alarm, for this member, whatever the number of refusals.
  for (int i = 0; i < 3; i++) EXPECT_EQ(kNoSpace, Put("fill-more", std::string(8192, 'c')).message());
  std::vector<AlarmInfo> want = {{0x1234, etcdserverpb::NOSPACE}};
  EXPECT_EQ(want, List());
  EXPECT_EQ(want, s_->Alarms());
  EXPECT_EQ(std::vector<std::string>{"NOSPACE"}, s_->ActiveAlarms());
  auto seen = s_->AlarmsForMetrics();
  ASSERT_EQ(1u, seen.size());
  EXPECT_TRUE(seen[0].active);

  // Capped: any put fails at apply, even one that would fit the quota.
  Status st = Put("tiny", "");
  EXPECT_EQ(Code::kResourceExhausted, st.code());
  EXPECT_EQ(kNoSpace, st.message());
  EXPECT_EQ(kNoSpace, Txn(TxnPut("t", "1")).message());
  EXPECT_EQ(kNoSpace, Txn(TxnPut("t", "1", /*in_failure=*/true)).message());
  EXPECT_EQ(rev, s_->GetStatus().revision);  // nothing was written
  EXPECT_EQ("<missing>", Get("tiny"));

  // Reads, deletes, delete-only txns and compaction still work.
  EXPECT_EQ("v", Get("small"));
  etcdserverpb::TxnRequest ro;
  ro.add_success()->mutable_request_range()->set_key("small");
  EXPECT_TRUE(Txn(ro).ok());
  EXPECT_TRUE(Delete("fill0").ok());
  etcdserverpb::TxnRequest del;
  del.add_success()->mutable_request_delete_range()->set_key("fill1");
  EXPECT_TRUE(Txn(del).ok());
  EXPECT_EQ(rev + 2, s_->GetStatus().revision);
  EXPECT_TRUE(Compact(rev + 2).ok());
  EXPECT_EQ(want, List());  // still raised until disarmed
}

TEST_F(AlarmTest, AlarmSurvivesRestartAndDisarmReenablesWrites) {
  Open(0);
  Open(s_->store().FileBytes() + 32 * 1024);
  FillUntilNoSpace();
  ASSERT_EQ(1u, List().size());
  // Restart without a quota: the alarm is in the backend, writes stay capped.
  Open(-1);
  std::vector<AlarmInfo> want = {{0x1234, etcdserverpb::NOSPACE}};
  EXPECT_EQ(want, List());
  EXPECT_EQ(kNoSpace, Put("after-restart", "v").message());

  AlarmResponse resp;
  ASSERT_TRUE(Alarm(AlarmRequest::DEACTIVATE, 0x1234, etcdserverpb::NOSPACE, &resp).ok());
  ASSERT_EQ(1, resp.alarms_size());  // the disarmed alarm, as etcd answers
  EXPECT_EQ(0x1234u, resp.alarms(0).memberid());
  EXPECT_EQ(etcdserverpb::NOSPACE, resp.alarms(0).alarm());
  EXPECT_FALSE(resp.has_header());
  AlarmResponse again;
  ASSERT_TRUE(Alarm(AlarmRequest::DEACTIVATE, 0x1234, etcdserverpb::NOSPACE, &again).ok());
  EXPECT_EQ(0, again.alarms_size());  // nothing left to disarm
  EXPECT_TRUE(List().empty());
  EXPECT_TRUE(s_->ActiveAlarms().empty());
  EXPECT_FALSE(s_->AlarmsForMetrics().at(0).active);
  ASSERT_TRUE(Put("after-disarm", "v").ok());
  Open(-1);
  EXPECT_TRUE(List().empty());
  EXPECT_EQ("v", Get("after-disarm"));
  ASSERT_TRUE(Put("after-restart", std::string(100000, 'x')).ok());  // no quota at all
}

TEST_F(AlarmTest, ActivateGetDeactivateLikeEtcd) {
  Open(-1);
  AlarmResponse r1, r2, r3;
  ASSERT_TRUE(Alarm(AlarmRequest::ACTIVATE, 7, etcdserverpb::CORRUPT, &r1).ok());
  ASSERT_EQ(1, r1.alarms_size());
  ASSERT_TRUE(Alarm(AlarmRequest::ACTIVATE, 7, etcdserverpb::CORRUPT, &r2).ok());
  ASSERT_EQ(1, r2.alarms_size());  // the existing one
  ASSERT_TRUE(Alarm(AlarmRequest::ACTIVATE, 9, etcdserverpb::NOSPACE, &r3).ok());
  std::vector<AlarmInfo> all = {{7, etcdserverpb::CORRUPT}, {9, etcdserverpb::NOSPACE}};
  EXPECT_EQ(all, List());
  AlarmResponse only;
  ASSERT_TRUE(Alarm(AlarmRequest::GET, 12345, etcdserverpb::NOSPACE, &only).ok());  // member id ignored
  ASSERT_EQ(1, only.alarms_size());
  EXPECT_EQ(9u, only.alarms(0).memberid());
  EXPECT_EQ((std::vector<std::string>{"CORRUPT", "NOSPACE"}), s_->ActiveAlarms());

  // CORRUPT refuses every write and compaction; reads work.
  EXPECT_EQ(kCorrupt, Put("k", "v").message());
  EXPECT_EQ(Code::kDataLoss, Put("k", "v").code());
  EXPECT_EQ(kCorrupt, Delete("k").message());
  EXPECT_EQ(kCorrupt, Compact(1).message());
  EXPECT_EQ("<missing>", Get("k"));
  AlarmResponse d;
  ASSERT_TRUE(Alarm(AlarmRequest::DEACTIVATE, 7, etcdserverpb::CORRUPT, &d).ok());
  EXPECT_EQ(kNoSpace, Put("k", "v").message());  // NOSPACE (from member 9) still caps
  EXPECT_TRUE(Delete("k").ok());
  ASSERT_TRUE(Alarm(AlarmRequest::DEACTIVATE, 9, etcdserverpb::NOSPACE, &d).ok());
  EXPECT_TRUE(Put("k", "v").ok());
}

// An alarm entry and a capped put replayed from the WAL after a crash are
// applied like the originals.
TEST_F(AlarmTest, ReplayedEntriesSeeTheAlarm) {
  ASSERT_EXIT(
      {
        auto s = KvServer::Open(Opts(-1));
        if (!s.ok()) _exit(3);
        s_ = std::move(*s);
        AlarmResponse r;
        if (!Alarm(AlarmRequest::ACTIVATE, 0x1234, etcdserverpb::NOSPACE, &r).ok()) _exit(4);
        failpoint::Set("apply-before-commit", "panic");
        etcdserverpb::PutRequest req;
        req.set_key("replayed");
        req.set_value("v");
        etcdserverpb::PutResponse resp;
        s_->Put(&req, &resp, [](const Status&) {});
        std::this_thread::sleep_for(std::chrono::seconds(10));
        _exit(5);
      },
      ::testing::KilledBySignal(SIGABRT), "apply-before-commit");
  Open(-1);
  EXPECT_EQ(1u, List().size());
  EXPECT_EQ("<missing>", Get("replayed"));
  EXPECT_EQ(1, s_->GetStatus().revision);
}

TEST_F(AlarmTest, DefragShrinksTheFileAndKeepsEveryRevision) {
  Open(-1);
  std::string v(2000, 'd');
  for (int i = 0; i < 300; i++) ASSERT_TRUE(Put("k" + std::to_string(i % 100), v + std::to_string(i)).ok());
  for (int i = 0; i < 50; i++) ASSERT_TRUE(Delete("k" + std::to_string(i)).ok());
  const int64_t rev = s_->GetStatus().revision;
  ASSERT_TRUE(Compact(rev - 20).ok());
  // Everything readable: each revision from the compact revision on.
  auto dump = [&] {
    std::string out;
    for (int64_t r = rev - 20; r <= rev; r++) {
      etcdserverpb::RangeRequest req;
      req.set_key(std::string(1, '\0'));
      req.set_range_end(std::string(1, '\0'));
      req.set_revision(r);
      etcdserverpb::RangeResponse resp;
      EXPECT_TRUE(s_->Range(req, &resp).ok());
      for (const auto& kv : resp.kvs()) {
        out += kv.key() + "@" + std::to_string(kv.mod_revision()) + "/" + std::to_string(kv.create_revision()) +
               "/" + std::to_string(kv.version()) + "=" + std::to_string(kv.value().size()) + " ";
      }
      out += "\n";
    }
    return out;
  };
  const std::string before_dump = dump();
  const int64_t before = s_->GetStatus().db_size;
  ASSERT_TRUE(Await([&](KvServer::Done d) { s_->Defragment(std::move(d)); }).ok());
  const int64_t after = s_->GetStatus().db_size;
  EXPECT_LT(after, before / 2) << before << " -> " << after;
  EXPECT_EQ(after, static_cast<int64_t>(std::filesystem::file_size(dir_ + "/member/snap/db")));
  EXPECT_EQ(before_dump, dump());
  EXPECT_EQ(rev, s_->GetStatus().revision);
  EXPECT_EQ(1u, s_->probe().defrag_seconds.Snapshot().count);
  EXPECT_EQ(0, s_->probe().defrag_inflight.Value());
  // Concurrent defrags and writes.
  std::vector<std::thread> ts;
  std::atomic<int> failures{0};
  for (int t = 0; t < 3; t++) {
    ts.emplace_back([&, t] {
      for (int i = 0; i < 20; i++) {
        if (t == 0) {
          if (!Await([&](KvServer::Done d) { s_->Defragment(std::move(d)); }).ok()) failures++;
        } else if (!Put("c" + std::to_string(t) + "-" + std::to_string(i), "x").ok()) {
          failures++;
        }
      }
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(0, failures.load());
  const std::string final_dump = dump();
  Open(-1);
  EXPECT_EQ(final_dump, dump());
  EXPECT_EQ(rev + 40, s_->GetStatus().revision);
  EXPECT_TRUE(Put("after", "reopen").ok());
}

// kill -9 in the middle of a defrag (before and after the compacted copy
// replaces the file): the member restarts with every acknowledged write.
TEST_F(AlarmTest, CrashDuringDefragLosesNothing) {
  int round = 0;
  for (const char* fp : {"mvcc-defrag-after-copy", "mvcc-defrag-before-reopen"}) {
    ASSERT_EXIT(
        {
          Open(-1);
          for (int i = 0; i < 50; i++) {
            if (!Put("k" + std::to_string(i % 10), std::string(3000, 'a' + round)).ok()) _exit(3);
          }
          if (!Delete("k0").ok()) _exit(4);
          failpoint::Set(fp, "panic");
          Await([&](KvServer::Done d) { s_->Defragment(std::move(d)); }).ok();
          _exit(5);
        },
        ::testing::KilledBySignal(SIGABRT), "")
        << fp;
    Open(-1);
    EXPECT_EQ(52 * (round + 1), s_->GetStatus().revision) << fp;  // 50 puts + 1 delete per round, + 1 put
    EXPECT_EQ("<missing>", Get("k0")) << fp;
    EXPECT_EQ(std::string(3000, 'a' + round), Get("k9")) << fp;
    ASSERT_TRUE(Put("k0", "back").ok());
    ASSERT_TRUE(Await([&](KvServer::Done d) { s_->Defragment(std::move(d)); }).ok());
    EXPECT_EQ("back", Get("k0"));
    s_.reset();
    round++;
  }
}

TEST_F(AlarmTest, NegativeQuotaDisablesIt) {
  Open(-1);
  for (int i = 0; i < 20; i++) ASSERT_TRUE(Put("big" + std::to_string(i), std::string(200000, 'x')).ok());
  EXPECT_TRUE(List().empty());
}

}  // namespace
}  // namespace engram::kv
