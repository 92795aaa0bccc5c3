// KV.RangeStream (etcd 3.7, K3 of docs/design/kubernetes.md): the answer to
// a Range as a stream of chunks bounded in bytes, all at one revision, with
// header, more and count in the final chunk only. kube-apiserver 1.37 lists
// through it (its EtcdRangeStream gate is on by default).
//
// Engram reads the whole range once, at one revision (RangeAsync: a
// linearizable read gets its ReadIndex first), then sends it in chunks of at
// most half of --max-request-bytes each (at least one key per chunk; etcd
// adapts its chunk size toward the same bound). Unlike etcd 3.7, the range is
// materialized before the first chunk leaves: the memory a huge list needs is
// that of a Range.
#include <deque>
#include <mutex>

#include "server/services.h"

namespace engram::server {
namespace {

using etcdserverpb::RangeRequest;
using etcdserverpb::RangeResponse;
using etcdserverpb::RangeStreamResponse;

class RangeStreamReactor final : public grpc::ServerWriteReactor<RangeStreamResponse> {
 public:
  RangeStreamReactor(kv::KvServer* kv, const RangeRequest* req) : kv_(kv) {
    // etcd 3.7 refuses what a stream cannot keep in order or filter cheaply.
    const bool default_order = req->sort_order() == RangeRequest::NONE ||
                               (req->sort_target() == RangeRequest::KEY && req->sort_order() == RangeRequest::ASCEND);
    if (!default_order) {
      Finish(grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "RangeStream does not support custom sort orders"));
      return;
    }
    if (req->min_mod_revision() != 0 || req->max_mod_revision() != 0 || req->min_create_revision() != 0 ||
        req->max_create_revision() != 0) {
      Finish(grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "RangeStream does not support revision filters"));
      return;
    }
    req_ = *req;
    kv_->RangeAsync(&req_, &resp_, [this](const Status& s) { OnRange(s); });
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lk(mu_);
    if (!ok) {
      chunks_.clear();
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "context canceled"));
      return;
    }
    chunks_.pop_front();
    WriteNextLocked();
  }
  void OnDone() override { delete this; }

 private:
  void OnRange(const Status& s) {
    std::lock_guard<std::mutex> lk(mu_);
    if (!s.ok()) {
      Finish(ToGrpc(s));
      return;
    }
    kv_->FillHeader(resp_.mutable_header());
    const size_t limit = std::max<size_t>(1, kv_->options().max_request_bytes / 2);
    // Every chunk but the last: kvs only, never empty.
    RangeStreamResponse cur;
    size_t bytes = 0;
    const int n = resp_.kvs_size();
    for (int i = 0; i < n; i++) {
      const size_t sz = resp_.kvs(i).ByteSizeLong();
      if (bytes > 0 && bytes + sz > limit) {
        chunks_.push_back(std::move(cur));
        cur = RangeStreamResponse();
        bytes = 0;
      }
      cur.mutable_range_response()->add_kvs()->Swap(resp_.mutable_kvs(i));
      bytes += sz;
    }
    // The final chunk: the last kvs (if any) with header, more and count.
    auto* last = cur.mutable_range_response();
    *last->mutable_header() = resp_.header();
    last->set_more(resp_.more());
    last->set_count(resp_.count());
    chunks_.push_back(std::move(cur));
    WriteNextLocked();
  }

  void WriteNextLocked() {
    if (chunks_.empty()) {
      Finish(grpc::Status::OK);
      return;
    }
    StartWrite(&chunks_.front());
  }

  kv::KvServer* const kv_;
  RangeRequest req_;
  RangeResponse resp_;
  std::mutex mu_;
  std::deque<RangeStreamResponse> chunks_;
};

}  // namespace

grpc::ServerWriteReactor<RangeStreamResponse>* KVService::RangeStream(grpc::CallbackServerContext*,
                                                                      const RangeRequest* req) {
  return new RangeStreamReactor(kv_, req);
}

}  // namespace engram::server
