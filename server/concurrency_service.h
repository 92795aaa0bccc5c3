// etcd's v3lock.Lock and v3election.Election gRPC services over
// src/concurrency (the algorithms and etcd's behaviour are there). A waiting
// Lock or Campaign ends when the client cancels: the key is removed again, as
// etcd does. Shutdown() ends every wait before the gRPC server stops.
#pragma once

#include <grpcpp/grpcpp.h>

#include "src/concurrency/concurrency.h"
#include "v3electionpb/v3election.grpc.pb.h"
#include "v3lockpb/v3lock.grpc.pb.h"

namespace engram::server {

class LockService final : public v3lockpb::Lock::CallbackService {
 public:
  explicit LockService(concurrency::Service* c) : c_(c) {}
  grpc::ServerUnaryReactor* Lock(grpc::CallbackServerContext*, const v3lockpb::LockRequest*,
                                 v3lockpb::LockResponse*) override;
  grpc::ServerUnaryReactor* Unlock(grpc::CallbackServerContext*, const v3lockpb::UnlockRequest*,
                                   v3lockpb::UnlockResponse*) override;

 private:
  concurrency::Service* c_;
};

class ElectionService final : public v3electionpb::Election::CallbackService {
 public:
  explicit ElectionService(concurrency::Service* c) : c_(c) {}
  grpc::ServerUnaryReactor* Campaign(grpc::CallbackServerContext*, const v3electionpb::CampaignRequest*,
                                     v3electionpb::CampaignResponse*) override;
  grpc::ServerUnaryReactor* Proclaim(grpc::CallbackServerContext*, const v3electionpb::ProclaimRequest*,
                                     v3electionpb::ProclaimResponse*) override;
  grpc::ServerUnaryReactor* Leader(grpc::CallbackServerContext*, const v3electionpb::LeaderRequest*,
                                   v3electionpb::LeaderResponse*) override;
  grpc::ServerWriteReactor<v3electionpb::LeaderResponse>* Observe(grpc::CallbackServerContext*,
                                                                  const v3electionpb::LeaderRequest*) override;
  grpc::ServerUnaryReactor* Resign(grpc::CallbackServerContext*, const v3electionpb::ResignRequest*,
                                   v3electionpb::ResignResponse*) override;

 private:
  concurrency::Service* c_;
};

}  // namespace engram::server
