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
    std::unique_lock<std::mutex> lk(mu_);
    if (!ok) {
      // The client half-closed (etcd ends the stream OK) or went away.
      FinishLocked(grpc::Status::OK);
      return;
    }
    if (finished_ || finish_) return;  // cancelled meanwhile
    resp_.Clear();
    kv_->FillHeader(resp_.mutable_header());  // the revision before the renew, as etcd
    resp_.set_id(req_.id());
    // Busy until the renew is answered (it may wait for a checkpoint to be
    // applied, on another thread): a cancel meanwhile finishes after it.
    writing_ = true;
    in_renew_call_ = true;
    renewed_early_ = false;
    const int64_t id = req_.id();
    lk.unlock();
    kv_->LeaseRenew(id, [this](Result<int64_t> ttl) {
      std::lock_guard<std::mutex> l2(mu_);
      renewed_ttl_ = std::move(ttl);
      // Answered before OnReadDone got mu_ back: it finishes the job.
      if (in_renew_call_) {
        renewed_early_ = true;
        return;
      }
      AfterRenewLocked();
    });
    lk.lock();
    in_renew_call_ = false;
    if (renewed_early_) AfterRenewLocked();
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
  void AfterRenewLocked() {
    writing_ = false;
    if (finish_ || finished_) {  // cancelled or aborted while renewing
      finish_ = false;
      FinishLocked(aborted_ ? abort_status_ : grpc::Status(grpc::StatusCode::CANCELLED, "context canceled"));
      return;
    }
    if (!renewed_ttl_.ok() && renewed_ttl_.status().code() != Code::kNotFound) {
      FinishLocked(ToGrpc(renewed_ttl_.status()));  // stopping, or the checkpoint failed
      return;
    }
    resp_.set_ttl(renewed_ttl_.ok() ? *renewed_ttl_ : 0);  // an unknown lease: TTL 0, the stream goes on
    writing_ = true;
    StartWrite(&resp_);
  }

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
  bool in_renew_call_ = false;   // OnReadDone is inside kv_->LeaseRenew (mu_ released)
  bool renewed_early_ = false;   // and the answer came meanwhile
  Result<int64_t> renewed_ttl_ = Status::NotFound("");
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
