#include "server/lease_service.h"

#include <mutex>

#include "server/services.h"

namespace engram::server {

using etcdserverpb::LeaseKeepAliveRequest;
using etcdserverpb::LeaseKeepAliveResponse;

grpc::ServerUnaryReactor* LeaseService::LeaseGrant(grpc::CallbackServerContext* ctx,
                                                   const etcdserverpb::LeaseGrantRequest* req,
                                                   etcdserverpb::LeaseGrantResponse* resp) {
  auto* r = ctx->DefaultReactor();
  kv_->LeaseGrant(req, resp, [this, r, resp](const Status& s) {
    if (s.ok()) kv_->FillHeader(resp->mutable_header());
    r->Finish(ToGrpc(s));
  });
  return r;
}

grpc::ServerUnaryReactor* LeaseService::LeaseRevoke(grpc::CallbackServerContext* ctx,
                                                    const etcdserverpb::LeaseRevokeRequest* req,
                                                    etcdserverpb::LeaseRevokeResponse* resp) {
  auto* r = ctx->DefaultReactor();
  kv_->LeaseRevoke(req, resp, [this, r, resp](const Status& s) {
    if (s.ok()) kv_->FillHeader(resp->mutable_header());
    r->Finish(ToGrpc(s));
  });
  return r;
}

grpc::ServerUnaryReactor* LeaseService::LeaseTimeToLive(grpc::CallbackServerContext* ctx,
                                                        const etcdserverpb::LeaseTimeToLiveRequest* req,
                                                        etcdserverpb::LeaseTimeToLiveResponse* resp) {
  auto* r = ctx->DefaultReactor();
  kv_->LeaseTimeToLive(*req, resp);
  kv_->FillHeader(resp->mutable_header());
  r->Finish(grpc::Status::OK);
  return r;
}

grpc::ServerUnaryReactor* LeaseService::LeaseLeases(grpc::CallbackServerContext* ctx,
                                                    const etcdserverpb::LeaseLeasesRequest*,
                                                    etcdserverpb::LeaseLeasesResponse* resp) {
  auto* r = ctx->DefaultReactor();
  kv_->LeaseLeases(resp);
  kv_->FillHeader(resp->mutable_header());
  r->Finish(grpc::Status::OK);
  return r;
}

// One request at a time: read, renew, write the answer, read the next.
class KeepAliveReactor final : public grpc::ServerBidiReactor<LeaseKeepAliveRequest, LeaseKeepAliveResponse> {
 public:
  KeepAliveReactor(LeaseService* svc, kv::KvServer* kv) : svc_(svc), kv_(kv) {
    std::lock_guard<std::mutex> lk(mu_);
    StartRead(&req_);
  }

  // Ends the call now with status (server shutdown).
  void Abort(const grpc::Status& status) {
    std::lock_guard<std::mutex> lk(mu_);
    abort_status_ = status;
    aborted_ = true;
    FinishLocked(status);
  }

  void OnReadDone(bool ok) override {
    std::lock_guard<std::mutex> lk(mu_);
    if (!ok) {
      // The client half-closed (etcd ends the stream OK) or went away.
      FinishLocked(grpc::Status::OK);
      return;
    }
    if (finished_ || finish_) return;  // cancelled meanwhile
    resp_.Clear();
    kv_->FillHeader(resp_.mutable_header());  // the revision before the renew, as etcd
    resp_.set_id(req_.id());
    auto ttl = kv_->LeaseRenew(req_.id());
    if (!ttl.ok() && ttl.status().code() != Code::kNotFound) {
      FinishLocked(ToGrpc(ttl.status()));  // stopping
      return;
    }
    resp_.set_ttl(ttl.ok() ? *ttl : 0);  // an unknown lease: TTL 0, the stream goes on
    writing_ = true;
    StartWrite(&resp_);
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lk(mu_);
    writing_ = false;
    if (!ok || finish_) {
      finish_ = false;
      FinishLocked(aborted_ ? abort_status_ : grpc::Status(grpc::StatusCode::CANCELLED, "context canceled"));
      return;
    }
    StartRead(&req_);
  }

  void OnCancel() override {
    std::lock_guard<std::mutex> lk(mu_);
    // etcd 3.4 answers a client that went away with Unavailable "no leader",
    // which the mixin counts as a failed request (etcd issue 13632); etcd's
    // main branch says Canceled, as here.
    FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "context canceled"));
  }

  void OnDone() override {
    svc_->Unregister(this);
    { std::lock_guard<std::mutex> lk(mu_); }  // whoever called Finish has let go
    delete this;
  }

 private:
  void FinishLocked(const grpc::Status& s) {
    if (finished_) return;
    if (writing_) {  // one op at a time: finish once the write is done
      finish_ = true;
      return;
    }
    finished_ = true;
    Finish(s);
  }

  LeaseService* const svc_;
  kv::KvServer* const kv_;
  std::mutex mu_;
  LeaseKeepAliveRequest req_;
  LeaseKeepAliveResponse resp_;
  bool writing_ = false, finish_ = false, finished_ = false;
  bool aborted_ = false;
  grpc::Status abort_status_;
};

grpc::ServerBidiReactor<LeaseKeepAliveRequest, LeaseKeepAliveResponse>* LeaseService::LeaseKeepAlive(
    grpc::CallbackServerContext*) {
  std::lock_guard<std::mutex> lk(mu_);
  auto* r = new KeepAliveReactor(this, kv_);
  live_.insert(r);
  if (shutdown_) r->Abort(grpc::Status(grpc::StatusCode::UNAVAILABLE, "etcdserver: server stopped"));
  return r;
}

void LeaseService::Unregister(KeepAliveReactor* r) {
  std::lock_guard<std::mutex> lk(mu_);
  live_.erase(r);
}

void LeaseService::Shutdown() {
  std::lock_guard<std::mutex> lk(mu_);
  shutdown_ = true;
  // Abort only calls Finish; OnDone (which unregisters, taking mu_) runs
  // later on a gRPC thread.
  for (KeepAliveReactor* r : live_) r->Abort(grpc::Status(grpc::StatusCode::UNAVAILABLE, "etcdserver: server stopped"));
}

}  // namespace engram::server
