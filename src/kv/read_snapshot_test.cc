// A read's header revision is the revision of the snapshot its data came from
// (issue 15): with writers putting one key and readers ranging it, every reply
// must say header.revision == the key's mod_revision, for a Range, a
// serializable Range and a read-only Txn (and each range inside the Txn).
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "src/kv/server.h"
#include "src/kv/testing.h"

namespace engram::kv {
namespace {

TEST(ReadSnapshot, HeaderRevisionIsTheRevisionTheDataWasReadAt) {
  const std::string dir = kvtest::FreshDir(::testing::TempDir(), "readsnap", "header");
  auto opened = KvServer::Open(kvtest::TestOptions(dir));
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  KvServer& s = **opened;
  ASSERT_TRUE(kvtest::PutSync(s, "k", "0").ok());

  std::atomic<bool> stop{false};
  std::atomic<int64_t> replies{0}, mismatches{0}, errors{0};
  std::string first_mismatch;
  std::mutex first_mu;
  auto mismatch = [&](const std::string& what) {
    mismatches++;
    std::lock_guard<std::mutex> lk(first_mu);
    if (first_mismatch.empty()) first_mismatch = what;
  };

  std::vector<std::thread> threads;
  for (int w = 0; w < 3; w++) {
    threads.emplace_back([&, w] {
      for (int i = 0; !stop.load(); i++) {
        if (!kvtest::PutSync(s, "k", std::to_string(w) + "-" + std::to_string(i)).ok()) errors++;
      }
    });
  }
  for (int r = 0; r < 3; r++) {
    threads.emplace_back([&, r] {
      for (int i = 0; !stop.load(); i++) {
        const int kind = (r + i) % 3;
        if (kind < 2) {
          etcdserverpb::RangeRequest req;
          req.set_key("k");
          req.set_serializable(kind == 1);
          etcdserverpb::RangeResponse resp;
          if (!s.Range(req, &resp).ok() || resp.kvs_size() != 1) {
            errors++;
            continue;
          }
          replies++;
          if (resp.header().revision() != resp.kvs(0).mod_revision()) {
            mismatch("range header " + std::to_string(resp.header().revision()) + " mod_revision " +
                     std::to_string(resp.kvs(0).mod_revision()));
          }
        } else {
          etcdserverpb::TxnRequest req;
          for (int j = 0; j < 2; j++) req.add_success()->mutable_request_range()->set_key("k");
          etcdserverpb::TxnResponse resp;
          Status st = Await([&](Done done) { s.Txn(&req, &resp, std::move(done)); });
          if (!st.ok() || resp.responses_size() != 2) {
            errors++;
            continue;
          }
          replies++;
          const int64_t h = resp.header().revision();
          for (const auto& op : resp.responses()) {
            const auto& rr = op.response_range();
            if (rr.kvs_size() != 1 || rr.header().revision() != h || rr.kvs(0).mod_revision() != h) {
              mismatch("txn header " + std::to_string(h) + " inner header " +
                       std::to_string(rr.header().revision()) + " mod_revision " +
                       (rr.kvs_size() ? std::to_string(rr.kvs(0).mod_revision()) : "none"));
            }
          }
        }
      }
    });
  }
  // Enough concurrent revisions that a header loaded after the read would
  // show up (today's code: dozens per run).
  while (s.GetStatus().revision < 6000) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  stop = true;
  for (auto& t : threads) t.join();
  EXPECT_EQ(0, errors.load());
  EXPECT_GT(replies.load(), 1000);
  EXPECT_EQ(0, mismatches.load()) << "of " << replies.load() << " replies; first: " << first_mismatch;
  opened->reset();
  std::filesystem::remove_all(dir);
}

// A read-only Txn pinned at revision V asks for a revision above V: etcd
// answers "future revision" (its txn reads at V), even if the store moved on.
TEST(ReadSnapshot, PinnedViewRefusesRevisionsAfterIt) {
  const std::string dir = kvtest::FreshDir(::testing::TempDir(), "readsnap", "future");
  auto opened = KvServer::Open(kvtest::TestOptions(dir));
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  KvServer& s = **opened;
  int64_t rev = 0;
  ASSERT_TRUE(kvtest::PutSync(s, "k", "v", &rev).ok());
  etcdserverpb::TxnRequest req;
  req.add_success()->mutable_request_range()->set_key("k");
  req.mutable_success(0)->mutable_request_range()->set_revision(rev + 1);
  etcdserverpb::TxnResponse resp;
  Status st = Await([&](Done done) { s.Txn(&req, &resp, std::move(done)); });
  EXPECT_EQ(Code::kOutOfRange, st.code());
  EXPECT_EQ("etcdserver: mvcc: required revision is a future revision", st.message());
  opened->reset();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace engram::kv
