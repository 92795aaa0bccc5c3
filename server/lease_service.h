// etcd's Lease service (gRPC callback API) on top of KvServer's leases
// (src/lease). Grant and Revoke go through raft; KeepAlive is a bidi stream
// that answers each request in order with the lease's TTL (0 for an unknown
// lease, and the stream goes on), ending OK when the client half-closes and
// CANCELLED when it goes away; TimeToLive and Leases read the lessor.
#pragma once

#include <mutex>
#include <set>

#include <grpcpp/grpcpp.h>

#include "etcdserverpb/rpc.grpc.pb.h"
#include "src/kv/server.h"

namespace engram::server {

class KeepAliveReactor;

class LeaseService final : public etcdserverpb::Lease::CallbackService {
 public:
  explicit LeaseService(kv::KvServer* kv) : kv_(kv) {}
  // Server shutdown: ends every open keepalive stream at once with
  // UNAVAILABLE "etcdserver: server stopped" (clients retry elsewhere) and
  // refuses new ones, so grpc::Server::Shutdown need not wait out its grace
  // period for streams that never end by themselves. Call before it.
  void Shutdown();
  grpc::ServerUnaryReactor* LeaseGrant(grpc::CallbackServerContext* ctx, const etcdserverpb::LeaseGrantRequest* req,
                                       etcdserverpb::LeaseGrantResponse* resp) override;
  grpc::ServerUnaryReactor* LeaseRevoke(grpc::CallbackServerContext* ctx, const etcdserverpb::LeaseRevokeRequest* req,
                                        etcdserverpb::LeaseRevokeResponse* resp) override;
  grpc::ServerBidiReactor<etcdserverpb::LeaseKeepAliveRequest, etcdserverpb::LeaseKeepAliveResponse>* LeaseKeepAlive(
      grpc::CallbackServerContext* ctx) override;
  grpc::ServerUnaryReactor* LeaseTimeToLive(grpc::CallbackServerContext* ctx,
                                            const etcdserverpb::LeaseTimeToLiveRequest* req,
                                            etcdserverpb::LeaseTimeToLiveResponse* resp) override;
  grpc::ServerUnaryReactor* LeaseLeases(grpc::CallbackServerContext* ctx, const etcdserverpb::LeaseLeasesRequest* req,
                                        etcdserverpb::LeaseLeasesResponse* resp) override;

 private:
  friend class KeepAliveReactor;
  void Unregister(KeepAliveReactor* r);

  kv::KvServer* kv_;
  std::mutex mu_;
  std::set<KeepAliveReactor*> live_;  // guarded by mu_
  bool shutdown_ = false;             // guarded by mu_
};

}  // namespace engram::server
