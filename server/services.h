// gRPC services (callback API): decode, call the core (src/kv), map Status to
// gRPC status with etcd's codes and texts. No logic of their own beyond that.
//
// Served: KV (all), Maintenance.Status, Maintenance.Alarm (get, activate,
// deactivate) and Maintenance.Defragment, Cluster.MemberList, Watch
// (server/watch_service.h), Lease (server/lease_service.h), v3lock and
// v3election (server/concurrency_service.h).
// Every other method of etcd's services answers UNIMPLEMENTED (the generated
// base class does that).
#pragma once

#include <memory>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "etcdserverpb/rpc.grpc.pb.h"
#include "server/concurrency_service.h"
#include "server/lease_service.h"
#include "server/watch_service.h"
#include "src/kv/server.h"

namespace engram::server {

grpc::Status ToGrpc(const Status& s);

class KVService final : public etcdserverpb::KV::CallbackService {
 public:
  explicit KVService(kv::KvServer* kv) : kv_(kv) {}
  grpc::ServerUnaryReactor* Range(grpc::CallbackServerContext*, const etcdserverpb::RangeRequest*,
                                  etcdserverpb::RangeResponse*) override;
  grpc::ServerUnaryReactor* Put(grpc::CallbackServerContext*, const etcdserverpb::PutRequest*,
                                etcdserverpb::PutResponse*) override;
  grpc::ServerUnaryReactor* DeleteRange(grpc::CallbackServerContext*, const etcdserverpb::DeleteRangeRequest*,
                                        etcdserverpb::DeleteRangeResponse*) override;
  grpc::ServerUnaryReactor* Txn(grpc::CallbackServerContext*, const etcdserverpb::TxnRequest*,
                                etcdserverpb::TxnResponse*) override;
  grpc::ServerUnaryReactor* Compact(grpc::CallbackServerContext*, const etcdserverpb::CompactionRequest*,
                                    etcdserverpb::CompactionResponse*) override;
  // etcd 3.7's chunked Range (server/range_stream.cc).
  grpc::ServerWriteReactor<etcdserverpb::RangeStreamResponse>* RangeStream(grpc::CallbackServerContext*,
                                                                          const etcdserverpb::RangeRequest*) override;

 private:
  kv::KvServer* kv_;
};

class MaintenanceService final : public etcdserverpb::Maintenance::CallbackService {
 public:
  explicit MaintenanceService(kv::KvServer* kv) : kv_(kv) {}
  grpc::ServerUnaryReactor* Status(grpc::CallbackServerContext*, const etcdserverpb::StatusRequest*,
                                   etcdserverpb::StatusResponse*) override;
  grpc::ServerUnaryReactor* Alarm(grpc::CallbackServerContext*, const etcdserverpb::AlarmRequest*,
                                  etcdserverpb::AlarmResponse*) override;
  grpc::ServerUnaryReactor* Defragment(grpc::CallbackServerContext*, const etcdserverpb::DefragmentRequest*,
                                       etcdserverpb::DefragmentResponse*) override;
  grpc::ServerUnaryReactor* Hash(grpc::CallbackServerContext*, const etcdserverpb::HashRequest*,
                                 etcdserverpb::HashResponse*) override;
  grpc::ServerUnaryReactor* HashKV(grpc::CallbackServerContext*, const etcdserverpb::HashKVRequest*,
                                   etcdserverpb::HashKVResponse*) override;
  grpc::ServerUnaryReactor* MoveLeader(grpc::CallbackServerContext*, const etcdserverpb::MoveLeaderRequest*,
                                       etcdserverpb::MoveLeaderResponse*) override;

 private:
  kv::KvServer* kv_;
};

class ClusterService final : public etcdserverpb::Cluster::CallbackService {
 public:
  explicit ClusterService(kv::KvServer* kv) : kv_(kv) {}
  grpc::ServerUnaryReactor* MemberList(grpc::CallbackServerContext*, const etcdserverpb::MemberListRequest*,
                                       etcdserverpb::MemberListResponse*) override;

 private:
  kv::KvServer* kv_;
};

// Registers etcd's services on a builder; owns the service objects.
class Services {
 public:
  explicit Services(kv::KvServer* kv);
  void Register(grpc::ServerBuilder& b);
  // Ends streams that would otherwise hold grpc::Server::Shutdown for its
  // whole grace period (watches, lease keepalives). Call right before it.
  void Shutdown() {
    concurrency_.Stop();  // waiting Lock/Campaign/Observe calls
    watch_.Shutdown();
    lease_.Shutdown();
  }

 private:
  KVService kv_;
  MaintenanceService maintenance_;
  ClusterService cluster_;
  WatchService watch_;                              // server/watch_service.h
  LeaseService lease_;                              // server/lease_service.h
  concurrency::Service concurrency_;                // src/concurrency
  LockService lock_;                                // server/concurrency_service.h
  ElectionService election_;
  etcdserverpb::Auth::CallbackService auth_;        // UNIMPLEMENTED until auth lands
};

}  // namespace engram::server
