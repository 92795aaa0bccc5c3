#include "server/concurrency_service.h"

#include <deque>
#include <mutex>

#include "server/services.h"

namespace engram::server {
namespace {

using concurrency::Handle;

// Holds a wait's handle for a reactor that may be gone by the time the wait
// starts (its answer can come before Lock/Campaign return).
struct CancelBox {
  std::mutex mu;
  std::shared_ptr<Handle> h;
  bool cancelled = false;
  void Set(std::shared_ptr<Handle> handle) {
    std::lock_guard<std::mutex> lk(mu);
    h = std::move(handle);
    if (cancelled) h->Cancel();
  }
  void Cancel() {
    std::shared_ptr<Handle> handle;
    {
      std::lock_guard<std::mutex> lk(mu);
      cancelled = true;
      handle = h;
    }
    if (handle) handle->Cancel();
  }
};

// A unary call whose wait the client can cancel.
class WaitReactor final : public grpc::ServerUnaryReactor {
 public:
  std::shared_ptr<CancelBox> box = std::make_shared<CancelBox>();
  void OnCancel() override { box->Cancel(); }
  void OnDone() override { delete this; }
};

// etcd serves these through an embedded client, whose errors carry no gRPC
// status: every failure reaches the client as Unknown with etcd's text
// (docs/design/concurrency.md), except a cancelled call.
grpc::Status ConcStatus(const Status& s) {
  if (s.ok()) return grpc::Status::OK;
  if (s.code() == Code::kCancelled) return grpc::Status(grpc::StatusCode::CANCELLED, "context canceled");
  return grpc::Status(grpc::StatusCode::UNKNOWN, s.message());
}

// The header of the KV response the answer comes from (its revision), with
// this member's IDs and term, as the gRPC KV service fills them.
void CopyHeader(kv::KvServer* kv, const etcdserverpb::ResponseHeader& h, etcdserverpb::ResponseHeader* out) {
  *out = h;
  kv->FillHeader(out);
}

concurrency::LeaderKey FromProto(const v3electionpb::LeaderKey& l) {
  return {l.name(), l.key(), l.rev(), l.lease()};
}

}  // namespace

grpc::ServerUnaryReactor* LockService::Lock(grpc::CallbackServerContext*, const v3lockpb::LockRequest* req,
                                            v3lockpb::LockResponse* resp) {
  auto* r = new WaitReactor();
  auto box = r->box;
  box->Set(c_->Lock(req->name(), req->lease(),
                    [r, resp, kv = c_->kv()](const Status& s, const etcdserverpb::ResponseHeader& h, const std::string& key) {
                      if (s.ok()) {
                        CopyHeader(kv, h, resp->mutable_header());
                        resp->set_key(key);
                      }
                      r->Finish(ConcStatus(s));
                    }));
  return r;
}

grpc::ServerUnaryReactor* LockService::Unlock(grpc::CallbackServerContext* ctx, const v3lockpb::UnlockRequest* req,
                                              v3lockpb::UnlockResponse* resp) {
  auto* r = ctx->DefaultReactor();
  c_->Unlock(req->key(), [r, resp, kv = c_->kv()](const Status& s, const etcdserverpb::ResponseHeader& h) {
    if (s.ok()) CopyHeader(kv, h, resp->mutable_header());
    r->Finish(ConcStatus(s));
  });
  return r;
}

grpc::ServerUnaryReactor* ElectionService::Campaign(grpc::CallbackServerContext*,
                                                    const v3electionpb::CampaignRequest* req,
                                                    v3electionpb::CampaignResponse* resp) {
  auto* r = new WaitReactor();
  auto box = r->box;
  box->Set(c_->Campaign(req->name(), req->lease(), req->value(),
                        [r, resp, kv = c_->kv()](const Status& s, const etcdserverpb::ResponseHeader& h,
                                  const concurrency::LeaderKey& l) {
                          if (s.ok()) {
                            CopyHeader(kv, h, resp->mutable_header());
                            auto* lk = resp->mutable_leader();
                            lk->set_name(l.name);
                            lk->set_key(l.key);
                            lk->set_rev(l.rev);
                            lk->set_lease(l.lease);
                          }
                          r->Finish(ConcStatus(s));
                        }));
  return r;
}

grpc::ServerUnaryReactor* ElectionService::Proclaim(grpc::CallbackServerContext* ctx,
                                                    const v3electionpb::ProclaimRequest* req,
                                                    v3electionpb::ProclaimResponse* resp) {
  auto* r = ctx->DefaultReactor();
  if (!req->has_leader()) {
    r->Finish(ConcStatus(concurrency::ErrMissingLeaderKey()));
    return r;
  }
  c_->Proclaim(FromProto(req->leader()), req->value(), [r, resp, kv = c_->kv()](const Status& s, const etcdserverpb::ResponseHeader& h) {
    if (s.ok()) CopyHeader(kv, h, resp->mutable_header());
    r->Finish(ConcStatus(s));
  });
  return r;
}

grpc::ServerUnaryReactor* ElectionService::Leader(grpc::CallbackServerContext* ctx,
                                                  const v3electionpb::LeaderRequest* req,
                                                  v3electionpb::LeaderResponse* resp) {
  auto* r = ctx->DefaultReactor();
  c_->Leader(req->name(), [r, resp, k = c_->kv()](const Status& s, const etcdserverpb::ResponseHeader& h,
                                                  const mvccpb::KeyValue& kv) {
    if (s.ok()) {
      CopyHeader(k, h, resp->mutable_header());
      *resp->mutable_kv() = kv;
    }
    r->Finish(ConcStatus(s));
  });
  return r;
}

grpc::ServerUnaryReactor* ElectionService::Resign(grpc::CallbackServerContext* ctx,
                                                  const v3electionpb::ResignRequest* req,
                                                  v3electionpb::ResignResponse* resp) {
  auto* r = ctx->DefaultReactor();
  if (!req->has_leader()) {
    r->Finish(ConcStatus(concurrency::ErrMissingLeaderKey()));
    return r;
  }
  c_->Resign(FromProto(req->leader()), [r, resp, kv = c_->kv()](const Status& s, const etcdserverpb::ResponseHeader& h) {
    if (s.ok()) CopyHeader(kv, h, resp->mutable_header());
    r->Finish(ConcStatus(s));
  });
  return r;
}

namespace {

// Observe: the observations are written one at a time, in order; the call
// finishes once the observation ended and everything queued is written.
class ObserveReactor final : public grpc::ServerWriteReactor<v3electionpb::LeaderResponse> {
 public:
  std::shared_ptr<CancelBox> box = std::make_shared<CancelBox>();

  void Push(const etcdserverpb::ResponseHeader& h, const mvccpb::KeyValue& kv) {
    std::lock_guard<std::mutex> lk(mu_);
    v3electionpb::LeaderResponse r;
    *r.mutable_header() = h;
    *r.mutable_kv() = kv;
    queue_.push_back(std::move(r));
    if (!writing_) WriteNextLocked();
  }
  void End(const Status& s) {
    std::lock_guard<std::mutex> lk(mu_);
    ended_ = true;
    status_ = ConcStatus(s);
    if (!writing_) WriteNextLocked();
  }
  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lk(mu_);
    writing_ = false;
    if (!ok) {
      queue_.clear();
      box->Cancel();  // the client is gone: End follows
      return;
    }
    queue_.pop_front();
    WriteNextLocked();
  }
  void OnCancel() override { box->Cancel(); }
  void OnDone() override { delete this; }

 private:
  void WriteNextLocked() {
    if (!queue_.empty()) {
      writing_ = true;
      StartWrite(&queue_.front());
      return;
    }
    if (ended_ && !finished_) {
      finished_ = true;
      Finish(status_);
    }
  }
  std::mutex mu_;
  std::deque<v3electionpb::LeaderResponse> queue_;
  bool writing_ = false, ended_ = false, finished_ = false;
  grpc::Status status_;
};

}  // namespace

grpc::ServerWriteReactor<v3electionpb::LeaderResponse>* ElectionService::Observe(
    grpc::CallbackServerContext*, const v3electionpb::LeaderRequest* req) {
  auto* r = new ObserveReactor();
  auto box = r->box;
  box->Set(c_->Observe(
      req->name(),
      [r, k = c_->kv()](const etcdserverpb::ResponseHeader& h, const mvccpb::KeyValue& kv) {
        etcdserverpb::ResponseHeader full;
        CopyHeader(k, h, &full);
        r->Push(full, kv);
      },
      [r](const Status& s) { r->End(s); }));
  return r;
}

}  // namespace engram::server
