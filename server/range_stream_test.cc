// KV.RangeStream over real gRPC: the chunks merge into exactly what Range
// answers at one revision; only the final chunk carries header, more and
// count; chunks are bounded in bytes; etcd 3.7's refusals.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>

#include <grpcpp/grpcpp.h>

#include "server/services.h"
#include "src/kv/testing.h"

namespace engram::server {
namespace {

using namespace std::chrono_literals;

class RangeStreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/rangestream-" + std::to_string(::getpid()) + "-" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
    kv::Options o = kv::kvtest::TestOptions(dir_, "m1");
    o.max_request_bytes = 64 * 1024;  // chunks of at most 32 KiB
    auto s = kv::KvServer::Open(o);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    kv_ = std::move(*s);
    svc_ = std::make_unique<KVService>(kv_.get());
    grpc::ServerBuilder b;
    int port = 0;
    b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    b.RegisterService(svc_.get());
    server_ = b.BuildAndStart();
    ASSERT_TRUE(server_ != nullptr);
    stub_ = etcdserverpb::KV::NewStub(
        grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
  }
  void TearDown() override {
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + 2s);
    if (kv_) kv_->Stop();
    std::filesystem::remove_all(dir_);
  }
  grpc::Status Stream(const etcdserverpb::RangeRequest& req, std::vector<etcdserverpb::RangeStreamResponse>* out) {
    grpc::ClientContext ctx;
    auto reader = stub_->RangeStream(&ctx, req);
    etcdserverpb::RangeStreamResponse r;
    while (reader->Read(&r)) out->push_back(r);
    return reader->Finish();
  }
  etcdserverpb::RangeResponse Range(const etcdserverpb::RangeRequest& req) {
    grpc::ClientContext ctx;
    etcdserverpb::RangeResponse r;
    EXPECT_TRUE(stub_->Range(&ctx, req, &r).ok());
    return r;
  }

  std::string dir_;
  std::unique_ptr<kv::KvServer> kv_;
  std::unique_ptr<KVService> svc_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<etcdserverpb::KV::Stub> stub_;
};

TEST_F(RangeStreamTest, ChunksMergeIntoTheRangeAtOneRevision) {
  const std::string value(1000, 'v');
  for (int i = 0; i < 300; i++) {
    char k[32];
    std::snprintf(k, sizeof k, "/registry/pods/p%04d", i);
    ASSERT_TRUE(kv::kvtest::PutSync(*kv_, k, value).ok());
  }
  etcdserverpb::RangeRequest req;
  req.set_key("/registry/pods/");
  req.set_range_end("/registry/pods0");
  std::vector<etcdserverpb::RangeStreamResponse> chunks;
  ASSERT_TRUE(Stream(req, &chunks).ok());
  ASSERT_GT(chunks.size(), 5u) << "300 KB in chunks of at most 32 KiB";
  etcdserverpb::RangeResponse merged;
  for (size_t i = 0; i < chunks.size(); i++) {
    const auto& c = chunks[i].range_response();
    if (i + 1 < chunks.size()) {
      EXPECT_FALSE(c.has_header()) << "only the final chunk has the header";
      EXPECT_EQ(0, c.count());
      EXPECT_GT(c.kvs_size(), 0) << "a non-final chunk is never empty";
      EXPECT_LE(c.ByteSizeLong(), 32u * 1024 + 2048);
    }
    for (const auto& kv : c.kvs()) *merged.add_kvs() = kv;
  }
  const auto& last = chunks.back().range_response();
  ASSERT_TRUE(last.has_header());
  EXPECT_EQ(300, last.count());
  EXPECT_FALSE(last.more());
  auto want = Range(req);
  ASSERT_EQ(want.kvs_size(), merged.kvs_size());
  for (int i = 0; i < want.kvs_size(); i++) EXPECT_EQ(want.kvs(i).SerializeAsString(), merged.kvs(i).SerializeAsString());
  EXPECT_EQ(want.header().revision(), last.header().revision());
  EXPECT_NE(0u, last.header().cluster_id());

  // A limit: more and the total count, as Range.
  req.set_limit(120);
  chunks.clear();
  ASSERT_TRUE(Stream(req, &chunks).ok());
  int n = 0;
  for (const auto& c : chunks) n += c.range_response().kvs_size();
  EXPECT_EQ(120, n);
  EXPECT_TRUE(chunks.back().range_response().more());
  EXPECT_EQ(300, chunks.back().range_response().count());

  // count_only: one message; an empty range: one final message with a header.
  req.set_limit(0);
  req.set_count_only(true);
  chunks.clear();
  ASSERT_TRUE(Stream(req, &chunks).ok());
  ASSERT_EQ(1u, chunks.size());
  EXPECT_EQ(300, chunks[0].range_response().count());
  etcdserverpb::RangeRequest none;
  none.set_key("/nothing/");
  none.set_range_end("/nothing0");
  chunks.clear();
  ASSERT_TRUE(Stream(none, &chunks).ok());
  ASSERT_EQ(1u, chunks.size());
  EXPECT_TRUE(chunks[0].range_response().has_header());
  EXPECT_EQ(0, chunks[0].range_response().count());
}

TEST_F(RangeStreamTest, RefusesWhatEtcdRefuses) {
  etcdserverpb::RangeRequest req;
  req.set_key("a");
  req.set_range_end("b");
  req.set_sort_order(etcdserverpb::RangeRequest::DESCEND);
  std::vector<etcdserverpb::RangeStreamResponse> chunks;
  grpc::Status s = Stream(req, &chunks);
  EXPECT_EQ(grpc::StatusCode::UNIMPLEMENTED, s.error_code());
  EXPECT_EQ("RangeStream does not support custom sort orders", s.error_message());
  req.clear_sort_order();
  req.set_min_mod_revision(2);
  s = Stream(req, &chunks);
  EXPECT_EQ(grpc::StatusCode::UNIMPLEMENTED, s.error_code());
  EXPECT_EQ("RangeStream does not support revision filters", s.error_message());
  req.clear_min_mod_revision();
  req.set_revision(1000);
  s = Stream(req, &chunks);
  EXPECT_EQ(grpc::StatusCode::OUT_OF_RANGE, s.error_code());
  EXPECT_EQ("etcdserver: mvcc: required revision is a future revision", s.error_message());
  etcdserverpb::RangeRequest empty;
  s = Stream(empty, &chunks);
  EXPECT_EQ(grpc::StatusCode::INVALID_ARGUMENT, s.error_code());
  EXPECT_EQ("etcdserver: key is not provided", s.error_message());
}

}  // namespace
}  // namespace engram::server
