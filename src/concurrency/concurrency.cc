#include "src/concurrency/concurrency.h"

#include <atomic>
#include <chrono>
#include <cstdio>

#include "src/kv/errors.h"
#include "src/kv/watch.h"

namespace engram::concurrency {

using etcdserverpb::RangeRequest;
using etcdserverpb::RangeResponse;
using etcdserverpb::ResponseHeader;
using etcdserverpb::TxnRequest;
using etcdserverpb::TxnResponse;

std::string PrefixEnd(const std::string& prefix) {
  std::string end = prefix;
  while (!end.empty()) {
    if (static_cast<unsigned char>(end.back()) < 0xff) {
      end.back() = static_cast<char>(static_cast<unsigned char>(end.back()) + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');  // every key
}

namespace {

std::string LeaseHex(int64_t lease) {
  char b[24];
  std::snprintf(b, sizeof b, "%lx", static_cast<unsigned long>(lease));
  return b;
}

// etcd's WithFirstCreate / WithLastCreate: the oldest (newest) key under the
// prefix by create revision.
void TopByCreate(RangeRequest* r, const std::string& pfx, bool newest, int64_t max_create_rev = 0) {
  r->set_key(pfx);
  r->set_range_end(PrefixEnd(pfx));
  r->set_sort_target(RangeRequest::CREATE);
  r->set_sort_order(newest ? RangeRequest::DESCEND : RangeRequest::ASCEND);
  r->set_limit(1);
  if (max_create_rev > 0) r->set_max_create_revision(max_create_rev);
}

mvccpb::KeyValue ToProto(const mvcc::KeyValue& kv) {
  mvccpb::KeyValue out;
  out.set_key(kv.key);
  out.set_create_revision(kv.create_revision);
  out.set_mod_revision(kv.mod_revision);
  out.set_version(kv.version);
  out.set_value(kv.value);
  out.set_lease(kv.lease);
  return out;
}

}  // namespace

// ------------------------------------------------------------------ ops

// A running wait. Its steps run one at a time (each step starts the next
// from its completion callback), so the fields need no lock; Cancel only
// sets a flag and closes the watch stream, under mu.
struct Service::Op : Handle, std::enable_shared_from_this<Op> {
  explicit Op(Service* s) : svc(s) {}
  ~Op() override = default;

  void Cancel() override {
    std::shared_ptr<kv::WatchStream> w;
    {
      std::lock_guard<std::mutex> lk(mu);
      if (cancelled) return;
      cancelled = true;
      w = stream;
    }
    // Wake a watch wait: the stream's callback sees the flag.
    if (w) OnCancelWhileWatching();
  }
  bool Cancelled() {
    std::lock_guard<std::mutex> lk(mu);
    return cancelled;
  }
  virtual void OnCancelWhileWatching() = 0;

  // Watches key from rev; on_event gets each event (true: stop watching),
  // on_end the end (Cancelled, or the watch was cancelled by compaction).
  void Watch(const std::string& key, const std::string& range_end, int64_t rev,
             std::function<bool(const kv::WatchReply&, const kv::WatchEvent&)> on_event,
             std::function<void(const Status&)> on_end) {
    auto s = svc->kv()->watch_hub().NewStream();
    {
      std::lock_guard<std::mutex> lk(mu);
      if (cancelled) {
        on_end(ErrCanceled());
        return;
      }
      stream = s;
      watch_event = std::move(on_event);
      watch_end = std::move(on_end);
      watch_done = false;
    }
    std::weak_ptr<Op> weak = shared_from_this();
    s->SetReadyCallback([weak] {
      if (auto self = weak.lock()) self->Drain();
    });
    kv::WatchSpec spec;
    spec.key = key;
    spec.range_end = range_end;
    spec.start_revision = rev;
    s->Create(spec);
    Drain();
  }

  // Takes the stream's replies (notifier thread, or the caller of Watch).
  void Drain() {
    std::unique_lock<std::mutex> dl(drain_mu, std::try_to_lock);
    if (!dl.owns_lock()) {
      redrain = true;
      return;
    }
    do {
      redrain = false;
      std::shared_ptr<kv::WatchStream> s;
      bool was_cancelled;
      {
        std::lock_guard<std::mutex> lk(mu);
        if (watch_done) return;
        s = stream;
        was_cancelled = cancelled;
      }
      if (was_cancelled) return EndWatch(ErrCanceled());  // EndWatch takes mu itself
      if (!s) return;
      kv::WatchReply r;
      while (s->Next(&r)) {
        if (r.canceled) return EndWatch(ErrLostWatcher());  // compacted under the wait
        for (const auto& ev : r.events) {
          if (watch_event(r, ev)) return EndWatch(Status::OK());
        }
        if (Cancelled()) return EndWatch(ErrCanceled());
      }
    } while (redrain.exchange(false));
  }

  void EndWatch(const Status& st) {
    std::shared_ptr<kv::WatchStream> s;
    std::function<void(const Status&)> end;
    {
      std::lock_guard<std::mutex> lk(mu);
      if (watch_done) return;
      watch_done = true;
      s = std::move(stream);
      end = std::move(watch_end);
      watch_event = nullptr;
    }
    // Close from another thread than the stream's callback: Close waits for
    // a running callback, which may be us.
    if (s) {
      std::thread([s] { s->Close(); }).detach();
    }
    end(st);
  }

  Service* const svc;
  std::mutex mu;
  bool cancelled = false;                   // guarded by mu
  std::shared_ptr<kv::WatchStream> stream;  // guarded by mu: the current watch
  std::function<bool(const kv::WatchReply&, const kv::WatchEvent&)> watch_event;
  std::function<void(const Status&)> watch_end;
  bool watch_done = true;  // guarded by mu
  std::mutex drain_mu;
  std::atomic<bool> redrain{false};
};

namespace {

// etcd's waitDeletes: until no key under pfx with create revision <= max_rev
// is left. done(status, header of the last read).
class WaitDeletes {
 public:
  static void Run(std::shared_ptr<Service::Op> op, std::string pfx, int64_t max_rev,
                  std::function<void(const Status&, const ResponseHeader&)> done) {
    auto req = std::make_shared<RangeRequest>();
    TopByCreate(req.get(), pfx, /*newest=*/true, max_rev);
    auto resp = std::make_shared<RangeResponse>();
    if (op->Cancelled()) return done(ErrCanceled(), ResponseHeader());
    op->svc->kv()->RangeAsync(req.get(), resp.get(), [op, pfx, max_rev, req, resp, done](const Status& s) {
      if (!s.ok()) return done(s, resp->header());
      if (resp->kvs_size() == 0) return done(Status::OK(), resp->header());
      // Wait for the newest older key's delete, then look again.
      const std::string key = resp->kvs(0).key();
      op->Watch(
          key, "", resp->header().revision(),
          [](const kv::WatchReply&, const kv::WatchEvent& ev) { return ev.tombstone; },
          [op, pfx, max_rev, done, resp](const Status& ws) {
            if (!ws.ok()) return done(ws, resp->header());
            Run(op, pfx, max_rev, done);
          });
    });
  }
};

// The session of a request: its lease, or a new one of 60 s (etcd's
// concurrency.NewSession default TTL) when the request has none.
void WithLease(Service* svc, int64_t lease, std::function<void(const Status&, int64_t)> then) {
  if (lease != 0) return then(Status::OK(), lease);
  auto req = std::make_shared<etcdserverpb::LeaseGrantRequest>();
  req->set_ttl(60);
  auto resp = std::make_shared<etcdserverpb::LeaseGrantResponse>();
  svc->kv()->LeaseGrant(req.get(), resp.get(), [req, resp, then](const Status& s) { then(s, resp->id()); });
}

void TxnCall(Service* svc, std::shared_ptr<TxnRequest> req,
             std::function<void(const Status&, const TxnResponse&)> then) {
  auto resp = std::make_shared<TxnResponse>();
  svc->kv()->Txn(req.get(), resp.get(), [req, resp, then](const Status& s) { then(s, *resp); });
}

// The conditional delete Resign and a failed Lock use.
std::shared_ptr<TxnRequest> DeleteIfCreatedAt(const std::string& key, int64_t rev) {
  auto t = std::make_shared<TxnRequest>();
  auto* c = t->add_compare();
  c->set_key(key);
  c->set_target(etcdserverpb::Compare::CREATE);
  c->set_result(etcdserverpb::Compare::EQUAL);
  c->set_create_revision(rev);
  t->add_success()->mutable_request_delete_range()->set_key(key);
  return t;
}

class NoWatchOp : public Service::Op {
 public:
  using Op::Op;
  void OnCancelWhileWatching() override { Drain(); }
};

}  // namespace

// ------------------------------------------------------------------ service

Service::Service(kv::KvServer* kv) : kv_(kv) {}

Service::~Service() { Stop(); }

bool Service::Track(const std::shared_ptr<Op>& op) {
  std::lock_guard<std::mutex> lk(mu_);
  if (stopped_) return false;
  live_[op.get()] = op;
  return true;
}

void Service::Untrack(const Op* op) {
  std::lock_guard<std::mutex> lk(mu_);
  live_.erase(op);
  cv_.notify_all();
}

void Service::Stop() {
  std::vector<std::shared_ptr<Op>> ops;
  {
    std::lock_guard<std::mutex> lk(mu_);
    stopped_ = true;
    for (auto& [p, w] : live_)
      if (auto op = w.lock()) ops.push_back(op);
  }
  for (auto& op : ops) op->Cancel();
  ops.clear();
  std::unique_lock<std::mutex> lk(mu_);
  cv_.wait_for(lk, std::chrono::seconds(5), [&] { return live_.empty(); });
}

std::shared_ptr<Handle> Service::Lock(const std::string& name, int64_t lease, LockDone done) {
  auto op = std::make_shared<NoWatchOp>(this);
  if (!Track(op)) {
    done(kv::errors::Stopped(), ResponseHeader(), "");
    return op;
  }
  auto finish = [this, op, done](const Status& s, const ResponseHeader& h, const std::string& key) {
    done(s, h, key);
    Untrack(op.get());
  };
  WithLease(this, lease, [this, op, name, finish](const Status& ls, int64_t id) {
    if (!ls.ok()) return finish(ls, ResponseHeader(), "");
    // etcd's Mutex.Lock: put "<name>/<lease>" if absent, and read the owner.
    const std::string pfx = name + "/";
    const std::string my_key = pfx + LeaseHex(id);
    auto t = std::make_shared<TxnRequest>();
    auto* c = t->add_compare();
    c->set_key(my_key);
    c->set_target(etcdserverpb::Compare::CREATE);
    c->set_result(etcdserverpb::Compare::EQUAL);
    c->set_create_revision(0);
    auto* put = t->add_success()->mutable_request_put();
    put->set_key(my_key);
    put->set_lease(id);
    TopByCreate(t->add_success()->mutable_request_range(), pfx, false);
    t->add_failure()->mutable_request_range()->set_key(my_key);
    TopByCreate(t->add_failure()->mutable_request_range(), pfx, false);
    TxnCall(this, t, [this, op, pfx, my_key, finish](const Status& s, const TxnResponse& r) {
      if (!s.ok()) return finish(s, r.header(), "");
      int64_t my_rev = r.header().revision();
      if (!r.succeeded()) {
        const auto& kvs = r.responses(0).response_range().kvs();
        if (kvs.empty()) return finish(Status::Internal("lock key vanished"), r.header(), "");
        my_rev = kvs[0].create_revision();
      }
      const auto& owner = r.responses(1).response_range().kvs();
      if (owner.empty() || owner[0].create_revision() == my_rev) return finish(Status::OK(), r.header(), my_key);
      WaitDeletes::Run(op, pfx, my_rev - 1, [this, op, my_key, my_rev, finish](const Status& ws, const ResponseHeader& h) {
        if (ws.ok()) return finish(Status::OK(), h, my_key);
        // etcd releases the key when the wait fails (Mutex.Unlock).
        auto del = std::make_shared<etcdserverpb::DeleteRangeRequest>();
        del->set_key(my_key);
        auto dresp = std::make_shared<etcdserverpb::DeleteRangeResponse>();
        kv_->DeleteRange(del.get(), dresp.get(),
                         [del, dresp, ws, h, finish](const Status&) { finish(ws, h, ""); });
        (void)my_rev;
      });
    });
  });
  return op;
}

void Service::Unlock(const std::string& key, HeaderDone done) {
  auto del = std::make_shared<etcdserverpb::DeleteRangeRequest>();
  del->set_key(key);
  auto resp = std::make_shared<etcdserverpb::DeleteRangeResponse>();
  kv_->DeleteRange(del.get(), resp.get(), [del, resp, done](const Status& s) { done(s, resp->header()); });
}

std::shared_ptr<Handle> Service::Campaign(const std::string& name, int64_t lease, const std::string& value,
                                          CampaignDone done) {
  auto op = std::make_shared<NoWatchOp>(this);
  if (!Track(op)) {
    done(kv::errors::Stopped(), ResponseHeader(), LeaderKey());
    return op;
  }
  auto finish = [this, op, done](const Status& s, const ResponseHeader& h, const LeaderKey& l) {
    done(s, h, l);
    Untrack(op.get());
  };
  WithLease(this, lease, [this, op, name, value, finish](const Status& ls, int64_t id) {
    if (!ls.ok()) return finish(ls, ResponseHeader(), LeaderKey());
    const std::string pfx = name + "/";
    LeaderKey lk{name, pfx + LeaseHex(id), 0, id};
    auto t = std::make_shared<TxnRequest>();
    auto* c = t->add_compare();
    c->set_key(lk.key);
    c->set_target(etcdserverpb::Compare::CREATE);
    c->set_result(etcdserverpb::Compare::EQUAL);
    c->set_create_revision(0);
    auto* put = t->add_success()->mutable_request_put();
    put->set_key(lk.key);
    put->set_value(value);
    put->set_lease(id);
    t->add_failure()->mutable_request_range()->set_key(lk.key);
    TxnCall(this, t, [this, op, pfx, lk, value, finish](const Status& s, const TxnResponse& r) mutable {
      if (!s.ok()) return finish(s, r.header(), LeaderKey());
      lk.rev = r.header().revision();
      const ResponseHeader campaign_hdr = r.header();
      auto wait = [this, op, pfx, lk, campaign_hdr, finish]() {
        WaitDeletes::Run(op, pfx, lk.rev - 1, [this, op, lk, campaign_hdr, finish](const Status& ws, const ResponseHeader&) {
          if (ws.ok()) return finish(Status::OK(), campaign_hdr, lk);
          if (ws.code() != Code::kCancelled) return finish(ws, campaign_hdr, LeaderKey());
          // Cancelled: etcd resigns (deletes the key if it is still ours).
          TxnCall(this, DeleteIfCreatedAt(lk.key, lk.rev),
                  [ws, campaign_hdr, finish](const Status&, const TxnResponse&) { finish(ws, campaign_hdr, LeaderKey()); });
        });
      };
      if (r.succeeded()) return wait();
      const auto& kvs = r.responses(0).response_range().kvs();
      if (kvs.empty()) return finish(Status::Internal("campaign key vanished"), r.header(), LeaderKey());
      lk.rev = kvs[0].create_revision();
      if (kvs[0].value() == value) return wait();
      // Already a candidate with another value: proclaim the new one first.
      ProclaimWithLease(lk, value, [this, lk, wait, finish, campaign_hdr](const Status& ps, const ResponseHeader&) {
        if (ps.ok()) return wait();
        TxnCall(this, DeleteIfCreatedAt(lk.key, lk.rev),
                [ps, campaign_hdr, finish](const Status&, const TxnResponse&) { finish(ps, campaign_hdr, LeaderKey()); });
      });
    });
  });
  return op;
}

void Service::Proclaim(const LeaderKey& leader_in, const std::string& value, HeaderDone done) {
  // etcd opens a session on the request's lease: lease 0 grants a new one,
  // which the put then moves the key onto.
  WithLease(this, leader_in.lease, [this, leader_in, value, done](const Status& ls, int64_t id) {
    if (!ls.ok()) return done(ls, ResponseHeader());
    LeaderKey l = leader_in;
    l.lease = id;
    ProclaimWithLease(l, value, done);
  });
}

void Service::ProclaimWithLease(const LeaderKey& leader, const std::string& value, HeaderDone done) {
  auto t = std::make_shared<TxnRequest>();
  auto* c = t->add_compare();
  c->set_key(leader.key);
  c->set_target(etcdserverpb::Compare::CREATE);
  c->set_result(etcdserverpb::Compare::EQUAL);
  c->set_create_revision(leader.rev);
  auto* put = t->add_success()->mutable_request_put();
  put->set_key(leader.key);
  put->set_value(value);
  put->set_lease(leader.lease);
  TxnCall(this, t, [done](const Status& s, const TxnResponse& r) {
    if (!s.ok()) return done(s, r.header());
    if (!r.succeeded()) return done(ErrElectionNotLeader(), r.header());
    done(Status::OK(), r.header());
  });
}

void Service::Leader(const std::string& name, LeaderDone done) {
  auto req = std::make_shared<RangeRequest>();
  TopByCreate(req.get(), name + "/", false);
  auto resp = std::make_shared<RangeResponse>();
  kv_->RangeAsync(req.get(), resp.get(), [req, resp, done](const Status& s) {
    if (!s.ok()) return done(s, resp->header(), mvccpb::KeyValue());
    if (resp->kvs_size() == 0) return done(ErrElectionNoLeader(), resp->header(), mvccpb::KeyValue());
    done(Status::OK(), resp->header(), resp->kvs(0));
  });
}

void Service::Resign(const LeaderKey& leader, HeaderDone done) {
  // etcd opens a session first: lease 0 grants a (then unused) lease.
  WithLease(this, leader.lease, [this, leader, done](const Status& ls, int64_t) {
    if (!ls.ok()) return done(ls, ResponseHeader());
    TxnCall(this, DeleteIfCreatedAt(leader.key, leader.rev),
            [done](const Status& s, const TxnResponse& r) { done(s, r.header()); });
  });
}

namespace {

// etcd's Election.observe: the oldest key's value, then each change of it;
// after its delete, the next leader.
class Observer : public NoWatchOp {
 public:
  Observer(Service* s, std::string pfx, Service::OnLeader on_leader, std::function<void(const Status&)> done)
      : NoWatchOp(s), pfx_(std::move(pfx)), on_leader_(std::move(on_leader)), done_(std::move(done)) {}

  void Start() {
    auto self = std::static_pointer_cast<Observer>(shared_from_this());
    if (Cancelled()) return End(ErrCanceled());
    auto req = std::make_shared<RangeRequest>();
    TopByCreate(req.get(), pfx_, false);
    auto resp = std::make_shared<RangeResponse>();
    svc->kv()->RangeAsync(req.get(), resp.get(), [self, req, resp](const Status& s) {
      if (!s.ok()) return self->End(s);
      if (resp->kvs_size() > 0) return self->Follow(resp->header(), resp->kvs(0));
      // No leader yet: the first put under the prefix.
      self->Watch(
          self->pfx_, PrefixEnd(self->pfx_), resp->header().revision(),
          [self](const kv::WatchReply&, const kv::WatchEvent& ev) {
            if (ev.tombstone) return false;
            self->first_ = ToProto(*ev.kv);
            return true;
          },
          [self, resp](const Status& ws) {
            if (!ws.ok()) return self->End(ws);
            ResponseHeader h = resp->header();
            h.set_revision(self->first_.mod_revision());  // etcd: the put's revision
            self->Follow(h, self->first_);
          });
    });
  }

 private:
  void Follow(const ResponseHeader& h, const mvccpb::KeyValue& kv) {
    auto self = std::static_pointer_cast<Observer>(shared_from_this());
    if (Cancelled()) return End(ErrCanceled());
    on_leader_(h, kv);
    header_ = h;
    Watch(
        kv.key(), "", h.revision() + 1,
        [self](const kv::WatchReply& r, const kv::WatchEvent& ev) {
          if (ev.tombstone) return true;
          ResponseHeader hh = self->header_;
          hh.set_revision(r.revision);
          self->on_leader_(hh, ToProto(*ev.kv));
          return false;
        },
        [self](const Status& ws) {
          if (!ws.ok()) return self->End(ws);
          self->Start();  // the leader is gone: find the next one
        });
  }

  void End(const Status& s) {
    auto done = std::move(done_);
    if (done) done(s);
    svc->Untrack(this);
  }

  std::string pfx_;
  Service::OnLeader on_leader_;
  std::function<void(const Status&)> done_;
  mvccpb::KeyValue first_;
  ResponseHeader header_;
};

}  // namespace

std::shared_ptr<Handle> Service::Observe(const std::string& name, OnLeader on_leader,
                                         std::function<void(const Status&)> done) {
  auto op = std::make_shared<Observer>(this, name + "/", std::move(on_leader), std::move(done));
  if (!Track(op)) {
    op->Cancel();
  }
  op->Start();
  return op;
}

}  // namespace engram::concurrency
