#include "server/watch_service.h"

#include <chrono>
#include <deque>
#include <memory>
#include <mutex>
#include <utility>

namespace engram::server {
namespace {

using etcdserverpb::WatchRequest;
using etcdserverpb::WatchResponse;

constexpr size_t kGrpcOverheadBytes = 512 * 1024;  // etcd's grpcOverheadBytes

void ToProto(const mvcc::KeyValue& kv, mvccpb::KeyValue* out) {
  out->set_key(kv.key);
  out->set_value(kv.value);
  out->set_create_revision(kv.create_revision);
  out->set_mod_revision(kv.mod_revision);
  out->set_version(kv.version);
  out->set_lease(kv.lease);
}

}  // namespace

class WatchReactor final : public grpc::ServerBidiReactor<WatchRequest, WatchResponse> {
 public:
  WatchReactor(WatchService* svc, kv::KvServer* kv)
      : svc_(svc),
        kv_(kv),
        max_bytes_(kv->options().max_request_bytes + kGrpcOverheadBytes),
        stream_(kv->watch_hub().NewStream()) {
    stream_->SetReadyCallback([this] { MaybeWrite(); });
    std::lock_guard<std::mutex> lk(mu_);
    StartRead(&req_);
  }

  // Ends the call now with status (server shutdown).
  void Abort(const grpc::Status& status) {
    std::lock_guard<std::mutex> lk(mu_);
    if (finish_called_) return;
    finish_called_ = true;
    status_ = status;
    FinishIfReadyLocked();
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      // Half-close or the end of the call. etcd keeps sending to a client
      // that closed its side until the client goes away (OnCancel).
      return;
    }
    Handle(req_);
    MaybeWrite();
    std::lock_guard<std::mutex> lk(mu_);
    if (finish_called_) return;
    if (stream_->OverBudget()) {
      // Over the stream's buffer budget: read nothing more until the client
      // drains what is buffered (OnWriteDone resumes). gRPC stops granting
      // HTTP/2 flow-control window, so the client's sends block, as with etcd.
      read_paused_ = true;
      kv_->watch_probe().streams_read_paused.Add(1);
      return;
    }
    StartRead(&req_);
  }

  void OnWriteDone(bool ok) override {
    {
      std::lock_guard<std::mutex> lk(mu_);
      writing_ = false;
      stream_->Release(resp_bytes_);
      resp_bytes_ = 0;
      if (ok) ObserveSendLocked();
      if (!ok) finish_called_ = true;  // the client is gone (a cancelled call fails its writes)
      if (finish_called_) {
        FinishIfReadyLocked();
        return;
      }
    }
    MaybeWrite();
    ResumeReadIfRoom();
  }

  void OnCancel() override { FinishOnce(); }

  void OnDone() override {
    stream_->Close();  // no ready callback runs after this; drops the buffered bytes
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (read_paused_) kv_->watch_probe().streams_read_paused.Add(-1);
      read_paused_ = false;
    }
    svc_->Unregister(this);
    { std::lock_guard<std::mutex> lk(mu_); }  // whoever called Finish has let go
    delete this;
  }

 private:
  void Handle(const WatchRequest& req) {
    switch (req.request_union_case()) {
      case WatchRequest::kCreateRequest: {
        const auto& c = req.create_request();
        kv::WatchSpec spec;
        spec.key = c.key();
        spec.range_end = c.range_end();
        spec.start_revision = c.start_revision();
        spec.progress_notify = c.progress_notify();
        for (int f : c.filters()) {
          if (f == etcdserverpb::WatchCreateRequest::NOPUT) spec.no_put = true;
          if (f == etcdserverpb::WatchCreateRequest::NODELETE) spec.no_delete = true;
        }
        spec.prev_kv = c.prev_kv();
        spec.fragment = c.fragment();
        spec.watch_id = c.watch_id();
        stream_->Create(spec);
        break;
      }
      case WatchRequest::kCancelRequest:
        stream_->Cancel(req.cancel_request().watch_id());
        break;
      case WatchRequest::kProgressRequest:
        stream_->RequestProgress();
        break;
      default:
        break;  // etcd ignores what it does not know
    }
  }

  // Starts the next write if none is outstanding. Runs on gRPC threads and on
  // the hub's notifier thread (the stream's ready callback).
  void MaybeWrite() {
    std::lock_guard<std::mutex> lk(mu_);
    if (finish_called_ || writing_) return;
    if (pending_.empty()) {
      kv::WatchReply r;
      size_t estimate = 0;
      if (!stream_->Next(&r, &estimate)) return;
      std::vector<WatchResponse> out;
      BuildWatchResponses(kv_, std::move(r), max_bytes_, &out);
      // The budget now holds the wire form (one response or its fragments)
      // instead of the reply; each response's bytes go when it is written.
      size_t wire = 0;
      for (auto& x : out) {
        size_t b = x.ByteSizeLong();
        wire += b;
        pending_.push_back({std::move(x), b});
      }
      stream_->Hold(wire);
      stream_->Release(estimate);
      if (pending_.empty()) return;
    }
    resp_ = std::move(pending_.front().first);
    resp_bytes_ = pending_.front().second;
    pending_.pop_front();
    writing_ = true;
    write_start_ = std::chrono::steady_clock::now();
    StartWrite(&resp_);
  }

  // Starts reading requests again once the stream's buffer is below budget.
  void ResumeReadIfRoom() {
    std::lock_guard<std::mutex> lk(mu_);
    if (!read_paused_ || finish_called_ || stream_->OverBudget()) return;
    read_paused_ = false;
    kv_->watch_probe().streams_read_paused.Add(-1);
    StartRead(&req_);
  }

  // etcd 3.7's send-loop histograms, by kind of reply.
  void ObserveSendLocked() {
    kv::WatchProbe& p = kv_->watch_probe();
    double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - write_start_).count();
    if (resp_.events_size() > 0) {
      p.send_events_seconds.Observe(took);
      p.send_per_event_seconds.Observe(took / resp_.events_size());
    } else if (resp_.created() || resp_.canceled()) {
      p.send_control_seconds.Observe(took);
    } else {
      p.send_progress_seconds.Observe(took);
    }
  }

  // Ends the call with etcd's code for a client that went away.
  void FinishOnce() {
    std::lock_guard<std::mutex> lk(mu_);
    if (finish_called_) return;
    finish_called_ = true;
    FinishIfReadyLocked();
  }

  // Finish once no write is outstanding (one op of each kind at a time).
  void FinishIfReadyLocked() {
    if (!finish_called_ || finished_ || writing_) return;
    finished_ = true;
    Finish(status_);
  }

  WatchService* const svc_;
  kv::KvServer* const kv_;
  const size_t max_bytes_;
  std::shared_ptr<kv::WatchStream> stream_;
  WatchRequest req_;

  std::mutex mu_;
  WatchResponse resp_;                 // the outstanding write
  std::chrono::steady_clock::time_point write_start_;  // when resp_ was handed to gRPC
  size_t resp_bytes_ = 0;              // resp_'s bytes in the stream's budget
  std::deque<std::pair<WatchResponse, size_t>> pending_;  // fragments of a reply still to write, with their bytes
  bool writing_ = false;
  bool read_paused_ = false;           // over budget: no read outstanding until the client drains
  bool finish_called_ = false;
  bool finished_ = false;
  // etcd's ErrGRPCWatchCanceled: the client cancelled or went away.
  grpc::Status status_{grpc::StatusCode::CANCELLED, "etcdserver: watch canceled"};
};

void BuildWatchResponses(kv::KvServer* kv, kv::WatchReply&& r, size_t max_bytes, std::vector<WatchResponse>* out) {
  WatchResponse wr;
  auto* h = wr.mutable_header();
  kv->FillHeader(h);
  h->set_revision(r.revision);  // etcd's header rule: the reply's own revision (0 for a compaction cancel)
  wr.set_watch_id(r.watch_id);
  wr.set_created(r.created);
  wr.set_canceled(r.canceled);
  wr.set_compact_revision(r.compact_revision);
  wr.set_cancel_reason(r.cancel_reason);
  const bool may_fragment = r.fragment && r.events.size() >= 2;
  WatchResponse base;  // a fragment's fields without events
  if (may_fragment) base = wr;
  wr.mutable_events()->Reserve(static_cast<int>(r.events.size()));
  for (auto& ev : r.events) {
    auto* e = wr.add_events();
    e->set_type(ev.tombstone ? mvccpb::Event::DELETE : mvccpb::Event::PUT);
    ToProto(*ev.kv, e->mutable_kv());
    if (ev.prev_kv) ToProto(*ev.prev_kv, e->mutable_prev_kv());
  }
  // etcd's sendFragments: only for watchers that asked, only when too big and
  // there is more than one event; each fragment holds as many events as fit
  // (at least one); all but the last have fragment = true.
  r.events.clear();  // the protos hold their own copies now
  if (!may_fragment || wr.ByteSizeLong() < max_bytes) {
    out->push_back(std::move(wr));
    return;
  }
  base.set_fragment(true);
  int idx = 0;
  const int n = wr.events_size();
  while (idx < n) {
    WatchResponse cur = base;
    size_t size = cur.ByteSizeLong();
    while (idx < n) {
      auto* ev = wr.mutable_events(idx);
      // Size of the repeated field entry: tag + length + body.
      size_t evsz = ev->ByteSizeLong();
      size_t add = 1 + google::protobuf::io::CodedOutputStream::VarintSize64(evsz) + evsz;
      if (cur.events_size() >= 1 && size + add >= max_bytes) break;
      cur.add_events()->Swap(ev);  // moved, not copied
      size += add;
      idx++;
    }
    if (idx == n) cur.set_fragment(false);
    out->push_back(std::move(cur));
  }
}

grpc::ServerBidiReactor<WatchRequest, WatchResponse>* WatchService::Watch(grpc::CallbackServerContext*) {
  std::lock_guard<std::mutex> lk(mu_);
  auto* r = new WatchReactor(this, kv_);
  live_.insert(r);
  if (shutdown_) r->Abort(grpc::Status(grpc::StatusCode::UNAVAILABLE, "etcdserver: server stopped"));
  return r;
}

void WatchService::Unregister(WatchReactor* r) {
  std::lock_guard<std::mutex> lk(mu_);
  live_.erase(r);
}

void WatchService::Shutdown() {
  std::lock_guard<std::mutex> lk(mu_);
  shutdown_ = true;
  // Abort only calls Finish; OnDone (which unregisters, taking mu_) runs
  // later on a gRPC thread.
  for (WatchReactor* r : live_) r->Abort(grpc::Status(grpc::StatusCode::UNAVAILABLE, "etcdserver: server stopped"));
}

}  // namespace engram::server
