#include "server/grpc_metrics.h"

#include <chrono>
#include <memory>
#include <vector>

#include <google/protobuf/message_lite.h>
#include <grpcpp/server_context.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/server_interceptor.h>

namespace engram::server {
namespace {

using grpc::experimental::InterceptionHookPoints;
using grpc::experimental::InterceptorBatchMethods;
using grpc::experimental::ServerRpcInfo;

// One per RPC; gRPC creates it when the call starts and destroys it with the
// call. Intercept() calls of one RPC never run concurrently with each other
// for the same batch, but a stream's send and receive batches may overlap, so
// the once-only handled flag is atomic.
class MetricsInterceptor final : public grpc::experimental::Interceptor {
 public:
  MetricsInterceptor(ServerRpcInfo* info, kv::RpcProbe* probe, int index)
      : info_(info), probe_(probe), m_(probe->method(index)), stream_(kv::kRpcMethods[index].type != kv::GrpcType::kUnary),
        start_(std::chrono::steady_clock::now()) {
    m_.started.Inc();
  }

  ~MetricsInterceptor() override {
    // The call is gone without any status sent and without a recv-close
    // notice: it can only have been cancelled.
    Handle(grpc::StatusCode::CANCELLED);
  }

  void Intercept(InterceptorBatchMethods* m) override {
    if (m->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_INITIAL_METADATA)) {
      // etcd counts requests that carry metadata, by client-api-version.
      auto* md = m->GetRecvInitialMetadata();
      if (md != nullptr && !md->empty()) {
        auto it = md->find("client-api-version");
        std::string_view v = "unknown";
        if (it != md->end()) v = std::string_view(it->second.data(), it->second.size());
        probe_->client_requests.Inc(stream_, v);
      }
    }
    if (m->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_MESSAGE)) {
      // nullptr: no message (end of the client's stream, or a parse failure).
      if (void* msg = m->GetRecvMessage()) {
        m_.msg_received.Inc();
        probe_->received_bytes.Inc(static_cast<google::protobuf::MessageLite*>(msg)->ByteSizeLong());
      }
    }
    if (m->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_MESSAGE)) {
      // Counted when handed to gRPC: gRPC 1.51 never delivers POST_SEND_MESSAGE
      // (CallOpSendMessage::FinishOp clears the buffer before the hook is
      // set), so a stream write that fails later is still counted. A unary
      // reply is only sent with an OK status, as go-grpc-prometheus counts it.
      m_.msg_sent.Inc();
      // Serializing here is not extra work: gRPC then sends this buffer as is.
      if (grpc::ByteBuffer* bb = m->GetSerializedSendMessage()) probe_->sent_bytes.Inc(bb->Length());
    }
    if (m->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      grpc::StatusCode code = m->GetSendStatus().error_code();
      // A reactor answering a call its client already cancelled (e.g. from
      // OnCancel) is counted as Canceled whatever code it sends.
      if (code != grpc::StatusCode::CANCELLED && info_->server_context()->IsCancelled())
        code = grpc::StatusCode::CANCELLED;
      Handle(code);
    }
    if (m->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_CLOSE)) {
      // The call is over. If no status was sent before, the peer cancelled
      // (or the deadline passed, or the connection dropped): Canceled, as
      // etcd ends a Watch whose client went away. (Otherwise the destructor
      // still counts it once.)
      if (info_->server_context()->IsCancelled()) Handle(grpc::StatusCode::CANCELLED);
    }
    m->Proceed();
  }

 private:
  void Handle(grpc::StatusCode code) {
    if (handled_.exchange(true, std::memory_order_acq_rel)) return;
    int c = static_cast<int>(code);
    if (c < 0 || c >= kv::kGrpcCodes) c = static_cast<int>(grpc::StatusCode::UNKNOWN);
    m_.handled[c].Inc();
    m_.handling_seconds.ObserveSince(start_);
  }

  ServerRpcInfo* info_;
  kv::RpcProbe* probe_;
  kv::RpcProbe::Method& m_;
  const bool stream_;
  const std::chrono::steady_clock::time_point start_;
  std::atomic<bool> handled_{false};
};

class MetricsInterceptorFactory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit MetricsInterceptorFactory(kv::RpcProbe* probe) : probe_(probe) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(ServerRpcInfo* info) override {
    if (info->method() == nullptr) return nullptr;
    int i = kv::RpcProbe::Find(info->method());
    if (i < 0) return nullptr;  // not an etcd method: not counted
    return new MetricsInterceptor(info, probe_, i);
  }

 private:
  kv::RpcProbe* probe_;
};

}  // namespace

void InstallGrpcMetrics(grpc::ServerBuilder& builder, kv::RpcProbe* probe) {
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> creators;
  creators.push_back(std::make_unique<MetricsInterceptorFactory>(probe));
  builder.experimental().SetInterceptorCreators(std::move(creators));
}

}  // namespace engram::server
