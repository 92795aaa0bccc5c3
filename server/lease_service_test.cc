// The Lease gRPC service over a real KvServer on loopback: grant, the
// keepalive stream (TTL for a live lease, 0 for an unknown one, OK on
// half-close) and server shutdown ending open keepalive streams at once with
// UNAVAILABLE "etcdserver: server stopped" (so Server::Shutdown does not wait
// out its grace period for them).
#include "server/lease_service.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "src/kv/testing.h"

namespace engram::server {
namespace {

class LeaseServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = kv::kvtest::FreshDir(::testing::TempDir(), "leasesvc",
                                ::testing::UnitTest::GetInstance()->current_test_info()->name());
    auto s = kv::KvServer::Open(kv::kvtest::TestOptions(dir_));
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    kv_ = std::move(*s);
    svc_ = std::make_unique<LeaseService>(kv_.get());
    grpc::ServerBuilder b;
    int port = 0;
    b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    b.RegisterService(svc_.get());
    server_ = b.BuildAndStart();
    ASSERT_TRUE(server_ != nullptr);
    stub_ = etcdserverpb::Lease::NewStub(
        grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
  }
  void TearDown() override {
    if (server_) {
      svc_->Shutdown();
      server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    }
    if (kv_) kv_->Stop();
    std::filesystem::remove_all(dir_);
  }
  int64_t Grant(int64_t ttl) {
    grpc::ClientContext ctx;
    etcdserverpb::LeaseGrantRequest req;
    req.set_ttl(ttl);
    etcdserverpb::LeaseGrantResponse resp;
    grpc::Status st = stub_->LeaseGrant(&ctx, req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    EXPECT_EQ(ttl, resp.ttl());
    EXPECT_NE(0u, resp.header().cluster_id());
    return resp.id();
  }

  std::string dir_;
  std::unique_ptr<kv::KvServer> kv_;
  std::unique_ptr<LeaseService> svc_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<etcdserverpb::Lease::Stub> stub_;
};

TEST_F(LeaseServiceTest, KeepAliveAnswersEachRequestAndEndsOkOnHalfClose) {
  const int64_t id = Grant(30);
  grpc::ClientContext ctx;
  auto stream = stub_->LeaseKeepAlive(&ctx);
  etcdserverpb::LeaseKeepAliveRequest req;
  etcdserverpb::LeaseKeepAliveResponse resp;
  req.set_id(id);
  ASSERT_TRUE(stream->Write(req));
  ASSERT_TRUE(stream->Read(&resp));
  EXPECT_EQ(id, resp.id());
  EXPECT_EQ(30, resp.ttl());
  req.set_id(id + 12345);  // unknown: TTL 0, and the stream goes on
  ASSERT_TRUE(stream->Write(req));
  ASSERT_TRUE(stream->Read(&resp));
  EXPECT_EQ(0, resp.ttl());
  req.set_id(id);
  ASSERT_TRUE(stream->Write(req));
  ASSERT_TRUE(stream->Read(&resp));
  EXPECT_EQ(30, resp.ttl());
  ASSERT_TRUE(stream->WritesDone());
  EXPECT_FALSE(stream->Read(&resp));
  grpc::Status st = stream->Finish();
  EXPECT_TRUE(st.ok()) << st.error_code() << " " << st.error_message();
}

TEST_F(LeaseServiceTest, ShutdownEndsOpenKeepAliveStreams) {
  const int64_t id = Grant(30);
  grpc::ClientContext ctx;
  auto stream = stub_->LeaseKeepAlive(&ctx);
  etcdserverpb::LeaseKeepAliveRequest req;
  etcdserverpb::LeaseKeepAliveResponse resp;
  req.set_id(id);
  ASSERT_TRUE(stream->Write(req));
  ASSERT_TRUE(stream->Read(&resp));  // the stream is open and idle (a read pending on the server)
  svc_->Shutdown();
  EXPECT_FALSE(stream->Read(&resp));
  grpc::Status st = stream->Finish();
  EXPECT_EQ(grpc::StatusCode::UNAVAILABLE, st.error_code());
  EXPECT_EQ("etcdserver: server stopped", st.error_message());
  // New streams are refused the same way.
  grpc::ClientContext ctx2;
  auto again = stub_->LeaseKeepAlive(&ctx2);
  again->Write(req);
  EXPECT_FALSE(again->Read(&resp));
  EXPECT_EQ(grpc::StatusCode::UNAVAILABLE, again->Finish().error_code());
}

}  // namespace
}  // namespace engram::server
