// etcd's Watch service (gRPC callback API) on top of kv::WatchHub.
//
// One grpc::ServerBidiReactor per stream: each WatchRequest is handed to the
// stream's kv::WatchStream (create / cancel / progress); replies are popped
// from its ordered queue and written one at a time (one outstanding write),
// converted to etcdserverpb.WatchResponse with etcd's header (cluster, member,
// raft term, the reply's revision), fragmented as etcd's sendFragments when
// the watcher asked for it and the response exceeds --max-request-bytes plus
// gRPC overhead. When the client cancels the stream or goes away the RPC ends
// with CANCELLED "etcdserver: watch canceled" (etcd's ErrGRPCWatchCanceled);
// a client that only half-closes keeps receiving, as in etcd.
#pragma once

#include <mutex>
#include <set>

#include <grpcpp/grpcpp.h>

#include "etcdserverpb/rpc.grpc.pb.h"
#include "src/kv/server.h"

namespace engram::server {

class WatchReactor;

class WatchService final : public etcdserverpb::Watch::CallbackService {
 public:
  explicit WatchService(kv::KvServer* kv) : kv_(kv) {}
  grpc::ServerBidiReactor<etcdserverpb::WatchRequest, etcdserverpb::WatchResponse>* Watch(
      grpc::CallbackServerContext* ctx) override;

  // Server shutdown: ends every open stream at once with UNAVAILABLE (clients
  // retry elsewhere, as when an etcd member goes away) and refuses new ones,
  // so grpc::Server::Shutdown need not wait out its grace period for streams
  // that never end by themselves. Call before grpc::Server::Shutdown.
  void Shutdown();

 private:
  friend class WatchReactor;
  void Unregister(WatchReactor* r);

  kv::KvServer* kv_;
  std::mutex mu_;
  std::set<WatchReactor*> live_;  // guarded by mu_
  bool shutdown_ = false;         // guarded by mu_
};

// Builds the responses for one reply (several when fragmented). Exposed for
// tests.
void BuildWatchResponses(kv::KvServer* kv, kv::WatchReply&& r, size_t max_bytes,
                         std::vector<etcdserverpb::WatchResponse>* out);

}  // namespace engram::server
