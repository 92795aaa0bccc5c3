// etcd_mvcc_{range,put,delete,txn}_total count as etcd 3.4.23 does: per mvcc
// transaction, txn_total only for a transaction of more than one call; a
// write Txn's compares are a transaction of their own. The expected deltas
// are what real etcd 3.4.23 showed for the same requests
// (docs/design/truthful-signals.md section 3.3).
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <string>

#include "src/kv/server.h"
#include "src/kv/testing.h"

namespace engram::kv {
namespace {

struct Counts {
  uint64_t range, put, del, txn;
  bool operator==(const Counts& o) const { return range == o.range && put == o.put && del == o.del && txn == o.txn; }
};
std::ostream& operator<<(std::ostream& os, const Counts& c) {
  return os << c.range << "/" << c.put << "/" << c.del << "/" << c.txn;
}

class MvccCountersTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = kvtest::FreshDir(::testing::TempDir(), "mvcccounters",
                            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    auto s = KvServer::Open(kvtest::TestOptions(dir_));
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    s_ = std::move(*s);
    ASSERT_TRUE(kvtest::PutSync(*s_, "foo", "bar").ok());
  }
  void TearDown() override {
    s_.reset();
    std::filesystem::remove_all(dir_);
  }
  Counts Now() {
    auto& p = s_->mvcc_probe();
    return {p.range_total.Value(), p.put_total.Value(), p.delete_total.Value(), p.txn_total.Value()};
  }
  Counts Delta(const std::function<void()>& op) {
    Counts a = Now();
    op();
    Counts b = Now();
    return {b.range - a.range, b.put - a.put, b.del - a.del, b.txn - a.txn};
  }
  void Put(const std::string& k, bool prev_kv = false) {
    etcdserverpb::PutRequest r;
    r.set_key(k);
    r.set_value("v");
    r.set_prev_kv(prev_kv);
    etcdserverpb::PutResponse resp;
    ASSERT_TRUE(Await([&](Done d) { s_->Put(&r, &resp, std::move(d)); }).ok());
  }
  void Del(const std::string& k, bool prev_kv = false) {
    etcdserverpb::DeleteRangeRequest r;
    r.set_key(k);
    r.set_prev_kv(prev_kv);
    etcdserverpb::DeleteRangeResponse resp;
    ASSERT_TRUE(Await([&](Done d) { s_->DeleteRange(&r, &resp, std::move(d)); }).ok());
  }
  void Get(const std::string& k) {
    etcdserverpb::RangeRequest r;
    r.set_key(k);
    etcdserverpb::RangeResponse resp;
    ASSERT_TRUE(s_->Range(r, &resp).ok());
  }
  void Txn(const etcdserverpb::TxnRequest& t) {
    etcdserverpb::TxnResponse resp;
    ASSERT_TRUE(Await([&](Done d) { s_->Txn(&t, &resp, std::move(d)); }).ok());
  }
  static void AddCompare(etcdserverpb::TxnRequest* t, const std::string& key, bool holds) {
    auto* c = t->add_compare();
    c->set_key(key);
    c->set_target(etcdserverpb::Compare::VALUE);
    c->set_result(etcdserverpb::Compare::EQUAL);
    c->set_value(holds ? "bar" : "nope");
  }
  static void AddPut(google::protobuf::RepeatedPtrField<etcdserverpb::RequestOp>* ops, const std::string& k) {
    auto* p = ops->Add()->mutable_request_put();
    p->set_key(k);
    p->set_value("v");
  }
  static void AddGet(google::protobuf::RepeatedPtrField<etcdserverpb::RequestOp>* ops, const std::string& k) {
    ops->Add()->mutable_request_range()->set_key(k);
  }
  static void AddDel(google::protobuf::RepeatedPtrField<etcdserverpb::RequestOp>* ops, const std::string& k) {
    ops->Add()->mutable_request_delete_range()->set_key(k);
  }

  std::string dir_;
  std::unique_ptr<KvServer> s_;
};

TEST_F(MvccCountersTest, CountLikeEtcd) {
  EXPECT_EQ((Counts{0, 1, 0, 0}), Delta([&] { Put("a"); })) << "put";
  EXPECT_EQ((Counts{1, 0, 0, 0}), Delta([&] { Get("a"); })) << "get";
  EXPECT_EQ((Counts{1, 1, 0, 1}), Delta([&] { Put("a", true); })) << "put --prev-kv";
  EXPECT_EQ((Counts{0, 0, 1, 0}), Delta([&] { Del("a"); })) << "del";
  Put("b");
  EXPECT_EQ((Counts{1, 0, 1, 1}), Delta([&] { Del("b", true); })) << "del --prev-kv";
  {
    etcdserverpb::TxnRequest t;
    AddCompare(&t, "foo", true);
    AddPut(t.mutable_success(), "t1");
    EXPECT_EQ((Counts{1, 1, 0, 0}), Delta([&] { Txn(t); })) << "txn: compare(true) + put";
  }
  {
    etcdserverpb::TxnRequest t;
    AddCompare(&t, "foo", false);
    EXPECT_EQ((Counts{1, 0, 0, 0}), Delta([&] { Txn(t); })) << "txn: compare(false), empty failure";
  }
  {
    etcdserverpb::TxnRequest t;
    AddPut(t.mutable_success(), "t2");
    EXPECT_EQ((Counts{0, 1, 0, 0}), Delta([&] { Txn(t); })) << "txn: put only";
  }
  {
    etcdserverpb::TxnRequest t;
    AddCompare(&t, "foo", true);
    AddPut(t.mutable_success(), "t3");
    AddPut(t.mutable_success(), "t4");
    EXPECT_EQ((Counts{1, 2, 0, 1}), Delta([&] { Txn(t); })) << "txn: compare + put + put";
  }
  {
    etcdserverpb::TxnRequest t;
    AddCompare(&t, "foo", true);
    AddGet(t.mutable_success(), "foo");
    EXPECT_EQ((Counts{2, 0, 0, 1}), Delta([&] { Txn(t); })) << "read-only txn: compare + get";
  }
  {
    etcdserverpb::TxnRequest t;
    AddGet(t.mutable_success(), "foo");
    EXPECT_EQ((Counts{1, 0, 0, 0}), Delta([&] { Txn(t); })) << "read-only txn: get";
  }
  {
    etcdserverpb::TxnRequest t;
    AddGet(t.mutable_success(), "foo");
    AddGet(t.mutable_success(), "t1");
    EXPECT_EQ((Counts{2, 0, 0, 1}), Delta([&] { Txn(t); })) << "read-only txn: get + get";
  }
  {
    etcdserverpb::TxnRequest t;
    AddDel(t.mutable_success(), "t3");
    EXPECT_EQ((Counts{0, 0, 1, 0}), Delta([&] { Txn(t); })) << "txn: del only";
  }
  {
    etcdserverpb::TxnRequest t;
    AddCompare(&t, "foo", true);
    AddDel(t.mutable_success(), "t4");
    EXPECT_EQ((Counts{1, 0, 1, 0}), Delta([&] { Txn(t); })) << "txn: compare + del";
  }
  {
    etcdserverpb::TxnRequest t;
    AddCompare(&t, "foo", true);
    AddGet(t.mutable_success(), "foo");
    AddPut(t.mutable_success(), "t5");
    EXPECT_EQ((Counts{2, 1, 0, 1}), Delta([&] { Txn(t); })) << "txn: compare + get + put";
  }
  {
    etcdserverpb::TxnRequest t;
    AddCompare(&t, "foo", true);
    AddCompare(&t, "foo", true);
    AddPut(t.mutable_success(), "t6");
    EXPECT_EQ((Counts{2, 1, 0, 1}), Delta([&] { Txn(t); })) << "txn: 2 compares + put";
  }
  {
    etcdserverpb::TxnRequest t;
    AddCompare(&t, "foo", false);
    AddPut(t.mutable_failure(), "t7");
    EXPECT_EQ((Counts{1, 1, 0, 0}), Delta([&] { Txn(t); })) << "txn: compare(false) + failure put";
  }
  EXPECT_EQ((Counts{1, 0, 0, 0}), Delta([&] {
              etcdserverpb::CompactionRequest r;
              r.set_revision(2);
              etcdserverpb::CompactionResponse resp;
              ASSERT_TRUE(Await([&](Done d) { s_->Compact(&r, &resp, std::move(d)); }).ok());
            }))
      << "compact (success)";
}

}  // namespace
}  // namespace engram::kv
