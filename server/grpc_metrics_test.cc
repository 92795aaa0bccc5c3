// The gRPC metrics interceptor on a real in-process gRPC server
// (127.0.0.1:0) serving etcd's services over a temporary member: started /
// handled by code / messages / bytes with go-grpc-prometheus semantics, and a
// stream the client cancels ending as Canceled.
#include "server/grpc_metrics.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "server/services.h"
#include "src/kv/testing.h"

namespace engram::server {
namespace {

using namespace std::chrono_literals;

// A Lease service whose KeepAlive stream answers a cancelled call with
// UNAVAILABLE from OnCancel: the interceptor must still count Canceled.
class RudeLease final : public etcdserverpb::Lease::CallbackService {
 public:
  grpc::ServerBidiReactor<etcdserverpb::LeaseKeepAliveRequest, etcdserverpb::LeaseKeepAliveResponse>* LeaseKeepAlive(
      grpc::CallbackServerContext*) override {
    class R : public grpc::ServerBidiReactor<etcdserverpb::LeaseKeepAliveRequest, etcdserverpb::LeaseKeepAliveResponse> {
     public:
      R() { StartRead(&req_); }
      void OnReadDone(bool ok) override {
        if (!ok) return;
        resp_.set_id(req_.id());
        resp_.set_ttl(5);
        StartWrite(&resp_);
      }
      void OnWriteDone(bool ok) override {
        if (ok) StartRead(&req_);
      }
      void OnCancel() override { Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "went away")); }
      void OnDone() override { delete this; }

     private:
      etcdserverpb::LeaseKeepAliveRequest req_;
      etcdserverpb::LeaseKeepAliveResponse resp_;
    };
    return new R;
  }
};

class GrpcMetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/grpcmetrics-" + std::to_string(::getpid()) + "-" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
    kv::Options o = kv::kvtest::TestOptions(dir_, "m1");
    auto s = kv::KvServer::Open(o);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    kv_ = std::move(*s);
    kv_service_ = std::make_unique<KVService>(kv_.get());
    watch_service_ = std::make_unique<WatchService>(kv_.get());
    grpc::ServerBuilder b;
    int port = 0;
    b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    b.RegisterService(kv_service_.get());
    b.RegisterService(watch_service_.get());
    b.RegisterService(&lease_);  // a stand-in (see RudeLease)
    InstallGrpcMetrics(b, &probe_);
    server_ = b.BuildAndStart();
    ASSERT_TRUE(server_ != nullptr);
    ASSERT_NE(port, 0);
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials());
  }
  void TearDown() override {
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + 2s);
    if (kv_) kv_->Stop();
    server_.reset();
    kv_service_.reset();
    watch_service_.reset();
    kv_.reset();
    std::filesystem::remove_all(dir_);
  }

  const kv::RpcProbe::Method& M(const char* full) {
    int i = kv::RpcProbe::Find(full);
    EXPECT_GE(i, 0) << full;
    return probe_.method(i);
  }
  static uint64_t Handled(const kv::RpcProbe::Method& m, grpc::StatusCode c) {
    return m.handled[static_cast<int>(c)].Value();
  }
  static uint64_t HandledAll(const kv::RpcProbe::Method& m) {
    uint64_t n = 0;
    for (const auto& c : m.handled) n += c.Value();
    return n;
  }
  // Waits for the server side of an RPC to be counted.
  bool WaitHandled(const kv::RpcProbe::Method& m, uint64_t n) {
    for (int i = 0; i < 500; i++) {
      if (HandledAll(m) >= n) return true;
      std::this_thread::sleep_for(10ms);
    }
    return false;
  }

  std::string dir_;
  std::unique_ptr<kv::KvServer> kv_;
  std::unique_ptr<KVService> kv_service_;
  std::unique_ptr<WatchService> watch_service_;
  RudeLease lease_;
  kv::RpcProbe probe_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
};

TEST(RpcProbeTest, MethodTable) {
  EXPECT_EQ(kv::RpcProbe::Find("/etcdserverpb.KV/Range"), 0);
  EXPECT_GE(kv::RpcProbe::Find("/etcdserverpb.Maintenance/Downgrade"), 0);
  EXPECT_GE(kv::RpcProbe::Find("/etcdserverpb.Auth/AuthStatus"), 0);
  EXPECT_GE(kv::RpcProbe::Find("/etcdserverpb.KV/RangeStream"), 0);
  EXPECT_GE(kv::RpcProbe::Find("/grpc.health.v1.Health/Check"), 0);
  EXPECT_EQ(kv::RpcProbe::Find("/etcdserverpb.KV/Nope"), -1);
  EXPECT_GE(kv::RpcProbe::Find("/v3lockpb.Lock/Lock"), 0);  // counted, shown once used
  // Every method of rpc.proto's services is in the table, with its streaming kind.
  for (const auto* svc : {etcdserverpb::KV::service_full_name(), etcdserverpb::Watch::service_full_name(),
                          etcdserverpb::Lease::service_full_name(), etcdserverpb::Cluster::service_full_name(),
                          etcdserverpb::Maintenance::service_full_name(), etcdserverpb::Auth::service_full_name(),
                          v3lockpb::Lock::service_full_name(), v3electionpb::Election::service_full_name()}) {
    const auto* d = google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(svc);
    ASSERT_NE(d, nullptr) << svc;
    for (int i = 0; i < d->method_count(); i++) {
      const auto* m = d->method(i);
      int idx = kv::RpcProbe::Find("/" + std::string(svc) + "/" + m->name());
      ASSERT_GE(idx, 0) << m->full_name();
      kv::GrpcType want = m->client_streaming()
                              ? (m->server_streaming() ? kv::GrpcType::kBidiStream : kv::GrpcType::kClientStream)
                              : (m->server_streaming() ? kv::GrpcType::kServerStream : kv::GrpcType::kUnary);
      EXPECT_EQ(kv::kRpcMethods[idx].type, want) << m->full_name();
    }
  }
}

TEST(RpcProbeTest, ClientVersionsAreBounded) {
  kv::ClientRequestCounter c;
  for (int i = 0; i < 40; i++) c.Inc(i % 2 == 0, "3." + std::to_string(i));
  c.Inc(false, "3.0");
  std::map<std::string, std::pair<uint64_t, uint64_t>> got;
  c.ForEach([&](std::string_view v, uint64_t u, uint64_t st) { got[std::string(v)] = {u, st}; });
  EXPECT_EQ(got.size(), static_cast<size_t>(kv::ClientRequestCounter::kSlots));
  EXPECT_EQ(got["3.0"], std::make_pair(uint64_t{1}, uint64_t{1}));
  EXPECT_EQ(got["other"], std::make_pair(uint64_t{13}, uint64_t{12}));  // 3.15 .. 3.39: 13 odd (unary), 12 even
}

TEST_F(GrpcMetricsTest, UnaryCountsCodesMessagesAndBytes) {
  auto stub = etcdserverpb::KV::NewStub(channel_);
  uint64_t req_bytes = 0, resp_bytes = 0;
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("client-api-version", "3.5");
    etcdserverpb::PutRequest req;
    req.set_key("foo");
    req.set_value("bar");
    etcdserverpb::PutResponse resp;
    ASSERT_TRUE(stub->Put(&ctx, req, &resp).ok());
    req_bytes += req.ByteSizeLong();
    resp_bytes += resp.ByteSizeLong();
  }
  {
    grpc::ClientContext ctx;
    etcdserverpb::RangeRequest req;
    req.set_key("foo");
    etcdserverpb::RangeResponse resp;
    ASSERT_TRUE(stub->Range(&ctx, req, &resp).ok());
    ASSERT_EQ(resp.kvs_size(), 1);
    req_bytes += req.ByteSizeLong();
    resp_bytes += resp.ByteSizeLong();
  }
  {
    grpc::ClientContext ctx;
    etcdserverpb::RangeRequest req;  // no key: etcd's InvalidArgument
    etcdserverpb::RangeResponse resp;
    grpc::Status s = stub->Range(&ctx, req, &resp);
    ASSERT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    req_bytes += req.ByteSizeLong();
  }
  {
    auto lease = etcdserverpb::Lease::NewStub(channel_);
    grpc::ClientContext ctx;
    etcdserverpb::LeaseGrantRequest req;
    req.set_ttl(10);
    etcdserverpb::LeaseGrantResponse resp;
    EXPECT_EQ(lease->LeaseGrant(&ctx, req, &resp).error_code(), grpc::StatusCode::UNIMPLEMENTED);
    req_bytes += req.ByteSizeLong();
  }
  const auto& range = M("/etcdserverpb.KV/Range");
  ASSERT_TRUE(WaitHandled(range, 2));
  EXPECT_EQ(range.started.Value(), 2u);
  EXPECT_EQ(range.msg_received.Value(), 2u);
  EXPECT_EQ(range.msg_sent.Value(), 1u) << "unary: a reply only on success";
  EXPECT_EQ(Handled(range, grpc::StatusCode::OK), 1u);
  EXPECT_EQ(Handled(range, grpc::StatusCode::INVALID_ARGUMENT), 1u);
  EXPECT_EQ(HandledAll(range), 2u);
  EXPECT_EQ(range.handling_seconds.Snapshot().count, 2u);

  const auto& put = M("/etcdserverpb.KV/Put");
  ASSERT_TRUE(WaitHandled(put, 1));
  EXPECT_EQ(put.started.Value(), 1u);
  EXPECT_EQ(Handled(put, grpc::StatusCode::OK), 1u);
  EXPECT_EQ(put.msg_sent.Value(), 1u);

  const auto& grant = M("/etcdserverpb.Lease/LeaseGrant");
  ASSERT_TRUE(WaitHandled(grant, 1));
  EXPECT_EQ(Handled(grant, grpc::StatusCode::UNIMPLEMENTED), 1u);
  EXPECT_EQ(grant.started.Value(), 1u);

  EXPECT_EQ(probe_.received_bytes.Value(), req_bytes);
  EXPECT_EQ(probe_.sent_bytes.Value(), resp_bytes);

  // etcd_server_client_requests_total: by client-api-version ("unknown" without one).
  std::map<std::string, uint64_t> unary;
  probe_.client_requests.ForEach([&](std::string_view v, uint64_t u, uint64_t) { unary[std::string(v)] = u; });
  EXPECT_EQ(unary["3.5"], 1u);
  EXPECT_EQ(unary["unknown"], 3u);
  // Methods nobody called stay at zero.
  EXPECT_EQ(M("/etcdserverpb.KV/Txn").started.Value(), 0u);
}

TEST_F(GrpcMetricsTest, CancelledWatchEndsAsCanceled) {
  auto stub = etcdserverpb::Watch::NewStub(channel_);
  grpc::ClientContext ctx;
  auto stream = stub->Watch(&ctx);
  etcdserverpb::WatchRequest req;
  req.mutable_create_request()->set_key("foo");
  ASSERT_TRUE(stream->Write(req));
  etcdserverpb::WatchResponse resp;
  ASSERT_TRUE(stream->Read(&resp));
  EXPECT_TRUE(resp.created());
  ctx.TryCancel();
  const auto& w = M("/etcdserverpb.Watch/Watch");
  ASSERT_TRUE(WaitHandled(w, 1));
  EXPECT_EQ(Handled(w, grpc::StatusCode::CANCELLED), 1u);
  EXPECT_EQ(HandledAll(w), 1u) << "one handled per stream";
  EXPECT_EQ(w.started.Value(), 1u);
  EXPECT_EQ(w.msg_received.Value(), 1u);
  EXPECT_GE(w.msg_sent.Value(), 1u);
  stream->Finish();
}

TEST_F(GrpcMetricsTest, StreamAnsweredAfterCancelStillCountsCanceled) {
  auto stub = etcdserverpb::Lease::NewStub(channel_);
  grpc::ClientContext ctx;
  auto stream = stub->LeaseKeepAlive(&ctx);
  etcdserverpb::LeaseKeepAliveRequest req;
  req.set_id(7);
  ASSERT_TRUE(stream->Write(req));
  etcdserverpb::LeaseKeepAliveResponse resp;
  ASSERT_TRUE(stream->Read(&resp));
  EXPECT_EQ(resp.id(), 7);
  ctx.TryCancel();
  const auto& ka = M("/etcdserverpb.Lease/LeaseKeepAlive");
  ASSERT_TRUE(WaitHandled(ka, 1));
  EXPECT_EQ(Handled(ka, grpc::StatusCode::CANCELLED), 1u);
  EXPECT_EQ(Handled(ka, grpc::StatusCode::UNAVAILABLE), 0u);
  EXPECT_EQ(ka.started.Value(), 1u);
  EXPECT_EQ(ka.msg_received.Value(), 1u);
  EXPECT_EQ(ka.msg_sent.Value(), 1u);
  stream->Finish();
}

TEST_F(GrpcMetricsTest, DeadlinePassingMidStreamCountsCanceled) {
  const auto& w = M("/etcdserverpb.Watch/Watch");
  {
    auto stub = etcdserverpb::Watch::NewStub(channel_);
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_deadline(std::chrono::system_clock::now() + 300ms);
    auto stream = stub->Watch(ctx.get());
    etcdserverpb::WatchRequest req;
    req.mutable_create_request()->set_key("bar");
    ASSERT_TRUE(stream->Write(req));
    etcdserverpb::WatchResponse resp;
    ASSERT_TRUE(stream->Read(&resp));
    // The deadline passes with the stream open.
    while (stream->Read(&resp)) {
    }
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  }
  ASSERT_TRUE(WaitHandled(w, 1));
  EXPECT_EQ(Handled(w, grpc::StatusCode::CANCELLED), 1u);
}

}  // namespace
}  // namespace engram::server
