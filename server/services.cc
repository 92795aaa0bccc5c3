#include "server/services.h"

#include "src/kv/errors.h"

namespace engram::server {

grpc::Status ToGrpc(const Status& s) {
  using grpc::StatusCode;
  StatusCode c;
  switch (s.code()) {
    case Code::kOk: return grpc::Status::OK;
    case Code::kInvalidArgument: c = StatusCode::INVALID_ARGUMENT; break;
    case Code::kNotFound: c = StatusCode::NOT_FOUND; break;
    case Code::kOutOfRange: c = StatusCode::OUT_OF_RANGE; break;
    case Code::kFailedPrecondition: c = StatusCode::FAILED_PRECONDITION; break;
    case Code::kResourceExhausted: c = StatusCode::RESOURCE_EXHAUSTED; break;
    case Code::kUnavailable: c = StatusCode::UNAVAILABLE; break;
    case Code::kUnimplemented: c = StatusCode::UNIMPLEMENTED; break;
    case Code::kCancelled: c = StatusCode::CANCELLED; break;
    case Code::kDeadlineExceeded: c = StatusCode::DEADLINE_EXCEEDED; break;
    case Code::kDataLoss:
    case Code::kCorruption: c = StatusCode::DATA_LOSS; break;
    case Code::kAborted: c = StatusCode::ABORTED; break;
    case Code::kUnknown: c = StatusCode::UNKNOWN; break;
    default: c = StatusCode::INTERNAL; break;
  }
  return grpc::Status(c, s.message());
}

namespace {

// Finishes a unary reactor once the core is done; fills the header on success.
template <class Resp>
kv::KvServer::Done Finisher(kv::KvServer* kv, grpc::ServerUnaryReactor* r, Resp* resp) {
  return [kv, r, resp](const Status& s) {
    if (s.ok()) kv->FillHeader(resp->mutable_header());
    r->Finish(ToGrpc(s));
  };
}

}  // namespace

grpc::ServerUnaryReactor* KVService::Range(grpc::CallbackServerContext* ctx, const etcdserverpb::RangeRequest* req,
                                           etcdserverpb::RangeResponse* resp) {
  auto* r = ctx->DefaultReactor();
  // A linearizable Range completes on a reader thread once its read index is
  // applied: no gRPC thread waits for raft.
  kv_->RangeAsync(req, resp, [r](const Status& s) { r->Finish(ToGrpc(s)); });
  return r;
}

// Writes come as Caller::kClient: a lone write runs on this gRPC thread and
// finishes the reactor before the handler returns (KvServer::Caller).
grpc::ServerUnaryReactor* KVService::Put(grpc::CallbackServerContext* ctx, const etcdserverpb::PutRequest* req,
                                         etcdserverpb::PutResponse* resp) {
  auto* r = ctx->DefaultReactor();
  kv_->Put(req, resp, Finisher(kv_, r, resp), kv::KvServer::Caller::kClient);
  return r;
}

grpc::ServerUnaryReactor* KVService::DeleteRange(grpc::CallbackServerContext* ctx,
                                                 const etcdserverpb::DeleteRangeRequest* req,
                                                 etcdserverpb::DeleteRangeResponse* resp) {
  auto* r = ctx->DefaultReactor();
  kv_->DeleteRange(req, resp, Finisher(kv_, r, resp), kv::KvServer::Caller::kClient);
  return r;
}

grpc::ServerUnaryReactor* KVService::Txn(grpc::CallbackServerContext* ctx, const etcdserverpb::TxnRequest* req,
                                         etcdserverpb::TxnResponse* resp) {
  auto* r = ctx->DefaultReactor();
  kv_->Txn(req, resp, Finisher(kv_, r, resp), kv::KvServer::Caller::kClient);
  return r;
}

grpc::ServerUnaryReactor* KVService::Compact(grpc::CallbackServerContext* ctx,
                                             const etcdserverpb::CompactionRequest* req,
                                             etcdserverpb::CompactionResponse* resp) {
  auto* r = ctx->DefaultReactor();
  kv_->Compact(req, resp, Finisher(kv_, r, resp));
  return r;
}

grpc::ServerUnaryReactor* MaintenanceService::Status(grpc::CallbackServerContext* ctx,
                                                     const etcdserverpb::StatusRequest*,
                                                     etcdserverpb::StatusResponse* resp) {
  auto* r = ctx->DefaultReactor();
  kv::StatusInfo st = kv_->GetStatus();
  kv_->FillHeader(resp->mutable_header());
  resp->set_version(kv::EmulatedVersion().server.c_str());
  resp->set_dbsize(st.db_size);
  resp->set_leader(st.leader);
  resp->set_raftindex(st.commit_index);
  resp->set_raftterm(st.term);
  resp->set_raftappliedindex(st.applied_index);
  resp->set_dbsizeinuse(st.db_size_in_use);
  resp->set_islearner(false);
  // Fields 11-13 came with etcd 3.6 (which always sends downgradeInfo); an
  // emulated 3.4/3.5 member leaves them out, as those versions do.
  if (kv::EmulatedVersion().cluster >= "3.6") {
    resp->set_storageversion(kv::kStorageVersion);
    resp->set_dbsizequota(kv_->options().quota_bytes);
    resp->mutable_downgradeinfo();
  }
  // etcd lists "no leader" and the active alarms as errors
  // ("memberID:<id> alarm:NOSPACE ").
  if (st.leader == 0) resp->add_errors("etcdserver: no leader");
  for (const auto& a : kv_->Alarms()) resp->add_errors(kv::AlarmText(a));
  r->Finish(grpc::Status::OK);
  return r;
}

grpc::ServerUnaryReactor* MaintenanceService::Alarm(grpc::CallbackServerContext* ctx,
                                                    const etcdserverpb::AlarmRequest* req,
                                                    etcdserverpb::AlarmResponse* resp) {
  auto* r = ctx->DefaultReactor();
  // Through raft, as etcd; etcd 3.4 answers without a header (so etcdctl's
  // `alarm list -w fields` crashes on both).
  kv_->Alarm(req, resp, [r](const engram::Status& s) { r->Finish(ToGrpc(s)); });
  return r;
}

grpc::ServerUnaryReactor* MaintenanceService::Defragment(grpc::CallbackServerContext* ctx,
                                                         const etcdserverpb::DefragmentRequest*,
                                                         etcdserverpb::DefragmentResponse*) {
  auto* r = ctx->DefaultReactor();
  // etcd 3.4 answers an empty DefragmentResponse (no header).
  kv_->Defragment([r](const engram::Status& s) { r->Finish(ToGrpc(s)); });
  return r;
}

grpc::ServerUnaryReactor* MaintenanceService::Hash(grpc::CallbackServerContext* ctx, const etcdserverpb::HashRequest*,
                                                   etcdserverpb::HashResponse* resp) {
  auto* r = ctx->DefaultReactor();
  r->Finish(ToGrpc(kv_->Hash(resp)));
  return r;
}

grpc::ServerUnaryReactor* MaintenanceService::HashKV(grpc::CallbackServerContext* ctx,
                                                     const etcdserverpb::HashKVRequest* req,
                                                     etcdserverpb::HashKVResponse* resp) {
  auto* r = ctx->DefaultReactor();
  r->Finish(ToGrpc(kv_->HashKV(req->revision(), resp)));
  return r;
}

grpc::ServerUnaryReactor* MaintenanceService::MoveLeader(grpc::CallbackServerContext* ctx,
                                                         const etcdserverpb::MoveLeaderRequest* req,
                                                         etcdserverpb::MoveLeaderResponse*) {
  auto* r = ctx->DefaultReactor();
  // etcd answers an empty MoveLeaderResponse (no header).
  r->Finish(ToGrpc(kv_->MoveLeader(req->targetid())));
  return r;
}

grpc::ServerUnaryReactor* ClusterService::MemberList(grpc::CallbackServerContext* ctx,
                                                     const etcdserverpb::MemberListRequest*,
                                                     etcdserverpb::MemberListResponse* resp) {
  auto* r = ctx->DefaultReactor();
  kv_->FillHeader(resp->mutable_header());
  resp->mutable_header()->set_revision(0);  // etcd leaves the revision out of member responses
  for (const auto& m : kv_->Members()) {
    auto* pm = resp->add_members();
    pm->set_id(m.id);
    pm->set_name(m.name);
    for (const auto& u : m.peer_urls) pm->add_peerurls(u);
    for (const auto& u : m.client_urls) pm->add_clienturls(u);
    pm->set_islearner(m.is_learner);
  }
  r->Finish(grpc::Status::OK);
  return r;
}

Services::Services(kv::KvServer* kv)
    : kv_(kv), maintenance_(kv), cluster_(kv), watch_(kv), lease_(kv), concurrency_(kv), lock_(&concurrency_),
      election_(&concurrency_) {}

void Services::Register(grpc::ServerBuilder& b) {
  b.RegisterService(&kv_);
  b.RegisterService(&maintenance_);
  b.RegisterService(&cluster_);
  b.RegisterService(&watch_);
  b.RegisterService(&lease_);
  b.RegisterService(&lock_);
  b.RegisterService(&election_);
  b.RegisterService(&auth_);
}

}  // namespace engram::server
