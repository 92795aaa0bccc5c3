#include "src/kv/watch.h"

#include <algorithm>
#include <limits>
#include <random>

#include "src/common/log.h"

namespace engram::kv {

using Clock = std::chrono::steady_clock;

namespace {
// What one reply costs a stream's budget: the reply and its events, each
// event's key-value counted in full (it is shared by the watchers that got it,
// but a stream that holds it keeps it alive), prev_kv once filled.
size_t KvBytes(const mvcc::KeyValue& kv) { return sizeof(mvcc::KeyValue) + kv.key.size() + kv.value.size(); }
size_t ReplyBytes(const WatchReply& r) {
  size_t n = sizeof(WatchReply) + r.cancel_reason.size();
  for (const auto& e : r.events) {
    n += sizeof(WatchEvent) + KvBytes(*e.kv);
    if (e.prev_kv) n += KvBytes(*e.prev_kv);
  }
  return n;
}
}  // namespace

struct Watcher {
  enum class State { kSynced, kUnsynced, kCompacted, kRemoved };

  int64_t id = 0;
  std::string key;  // never empty ("\0" stands for the smallest key)
  std::string end;  // range end when range && !from_key
  bool range = false;
  bool from_key = false;
  bool no_put = false, no_delete = false, prev_kv = false, fragment = false, progress_notify = false;
  // The next revision to deliver. For a synced watcher it is only a lower
  // bound (its start revision): it has everything up to NotifiedRev.
  int64_t next = 0;
  // The explicit start revision asked for (0: none). Until the store reaches
  // it, no progress notification covers this watcher (etcd 3.6.2+, etcd
  // #20229): a bookmark below the revision a client asked to start from
  // would let it resume below it.
  int64_t start_rev = 0;
  State state = State::kSynced;
  bool events_since_tick = false;  // got events since the last progress tick
  WatchStream* stream = nullptr;

  bool Contains(std::string_view k) const {
    if (!range) return k == key;
    if (k < std::string_view(key)) return false;
    return from_key || k < std::string_view(end);
  }
  bool Wants(bool tombstone) const { return tombstone ? !no_delete : !no_put; }
};

// ---------------------------------------------------------------------------
// WatchStream

WatchStream::WatchStream(WatchHub* hub) : hub_(hub) {}

WatchStream::~WatchStream() { Close(); }

void WatchStream::SetReadyCallback(std::function<void()> cb) {
  std::lock_guard<std::mutex> lk(cb_mu_);
  ready_ = std::move(cb);
}

void WatchStream::InvokeReady() {
  std::function<void()> cb;
  {
    std::lock_guard<std::mutex> lk(cb_mu_);
    if (!ready_) return;
    cb = ready_;
    running_ = true;
    runner_ = std::this_thread::get_id();
  }
  cb();
  {
    std::lock_guard<std::mutex> lk(cb_mu_);
    running_ = false;
  }
  cb_cv_.notify_all();
}

int64_t WatchStream::Create(const WatchSpec& spec) {
  auto w = std::make_shared<Watcher>();
  w->key = spec.key.empty() ? std::string(1, '\0') : spec.key;
  if (spec.range_end.empty()) {
    w->range = false;
  } else if (spec.range_end == std::string_view("\0", 1)) {
    w->range = w->from_key = true;  // every key >= key
  } else {
    w->range = true;
    w->end = spec.range_end;
  }
  w->no_put = spec.no_put;
  w->no_delete = spec.no_delete;
  w->prev_kv = spec.prev_kv;
  w->fragment = spec.fragment;
  w->progress_notify = spec.progress_notify;
  w->stream = this;

  WatchHub* h = hub_;
  std::lock_guard<std::mutex> lk(h->mu_);
  if (closed_) return kInvalidWatchId;
  WatchReply r;
  r.created = true;
  r.revision = h->store_->Rev();  // etcd: the store's revision when the request is handled
  auto fail = [&](const char* reason) {
    r.watch_id = kInvalidWatchId;
    r.canceled = true;
    r.cancel_reason = reason;
    h->Push(this, std::move(r));
    return kInvalidWatchId;
  };
  if (w->range && !w->from_key && w->key >= w->end) return fail(kErrWatcherRangeEmpty);
  int64_t id = spec.watch_id;
  if (id == kAutoWatchId) {
    while (watchers_.count(next_id_)) next_id_++;
    id = next_id_++;
  } else if (watchers_.count(id)) {
    return fail(kErrWatcherDuplicateId);
  }
  w->id = id;
  // 0: from the next revision. The store's revision may be ahead of the last
  // notified one (a batch between commit and Notify): that batch's events
  // below next are skipped, exactly as if the watcher came after it.
  w->next = spec.start_revision == 0 ? r.revision + 1 : spec.start_revision;
  w->start_rev = spec.start_revision;
  r.watch_id = id;
  h->Push(this, std::move(r));
  watchers_[id] = w;
  h->watchers_.fetch_add(1, std::memory_order_acq_rel);
  h->probe_->watcher_total.Add(1);
  if (w->next > h->notified_rev_) {
    w->state = Watcher::State::kSynced;
    h->AddSynced(w.get());
  } else {
    w->state = Watcher::State::kUnsynced;
    h->unsynced_.insert(w.get());
    unsynced_++;
    h->probe_->slow_watcher_total.Set(static_cast<int64_t>(h->unsynced_.size()));
    h->KickSyncer();
  }
  if (w->progress_notify && progress_watchers_++ == 0) {
    h->progress_streams_.insert(this);
    h->ScheduleTick(this, Clock::now());
  }
  return id;
}

void WatchStream::Cancel(int64_t watch_id) {
  WatchHub* h = hub_;
  std::lock_guard<std::mutex> lk(h->mu_);
  auto it = watchers_.find(watch_id);
  if (closed_ || it == watchers_.end()) return;
  h->Remove(it->second.get());
  watchers_.erase(it);
  WatchReply r;
  r.watch_id = watch_id;
  r.canceled = true;
  r.revision = h->store_->Rev();
  h->Push(this, std::move(r));
  h->MaybeSendRequestedProgress(this);
}

void WatchStream::RequestProgress() {
  WatchHub* h = hub_;
  std::lock_guard<std::mutex> lk(h->mu_);
  if (closed_) return;
  progress_requested_ = true;
  h->MaybeSendRequestedProgress(this);
}

bool WatchStream::Next(WatchReply* out) {
  size_t bytes = 0;
  if (!Next(out, &bytes)) return false;
  Release(bytes);
  return true;
}

bool WatchStream::Next(WatchReply* out, size_t* bytes) {
  WatchHub* h = hub_;
  {
    std::lock_guard<std::mutex> lk(h->mu_);
    if (queue_.empty()) {
      waiting_ = true;
      return false;
    }
    *out = std::move(queue_.front());
    queue_.pop_front();
    const size_t b = ReplyBytes(*out);
    *bytes = b;
    if (!closed_) {
      queued_bytes_ -= b;  // now held by the caller until Release
      held_bytes_ += b;
    }
    if (size_t n = out->events.size()) {
      h->probe_->pending_events_total.Add(-static_cast<int64_t>(n));
      h->probe_->events_total.Inc(n);
    }
    if (unsynced_ > 0 && h->HasRoom(this)) h->KickSyncer();
  }
  if (out->prev_kv && !out->events.empty()) h->FillPrevKv(out);
  return true;
}

void WatchStream::Hold(size_t bytes) {
  WatchHub* h = hub_;
  std::lock_guard<std::mutex> lk(h->mu_);
  if (closed_) return;  // Close dropped this stream's bytes from the gauge
  h->AddBuffered(this, 0, static_cast<int64_t>(bytes));
}

void WatchStream::Release(size_t bytes) {
  WatchHub* h = hub_;
  std::lock_guard<std::mutex> lk(h->mu_);
  if (closed_) return;
  bytes = std::min(bytes, held_bytes_);
  h->AddBuffered(this, 0, -static_cast<int64_t>(bytes));
  if (unsynced_ > 0 && h->HasRoom(this)) h->KickSyncer();
}

bool WatchStream::OverBudget() const {
  std::lock_guard<std::mutex> lk(hub_->mu_);
  return queued_bytes_ + held_bytes_ >= hub_->opts_.stream_buffer_bytes;
}

void WatchStream::Close() {
  {
    std::unique_lock<std::mutex> lk(cb_mu_);
    ready_ = nullptr;
    if (running_ && runner_ != std::this_thread::get_id()) cb_cv_.wait(lk, [&] { return !running_; });
  }
  WatchHub* h = hub_;
  std::lock_guard<std::mutex> lk(h->mu_);
  if (closed_) return;
  closed_ = true;
  for (auto& [id, w] : watchers_) h->Remove(w.get());
  watchers_.clear();
  size_t n = 0;
  for (const auto& r : queue_) n += r.events.size();
  if (n) {
    // etcd's send loop drains its channel at close and counts those events.
    h->probe_->pending_events_total.Add(-static_cast<int64_t>(n));
    h->probe_->events_total.Inc(n);
  }
  queue_.clear();
  h->probe_->buffered_bytes.Add(-static_cast<int64_t>(queued_bytes_ + held_bytes_));
  queued_bytes_ = held_bytes_ = 0;
  h->progress_streams_.erase(this);
  h->probe_->watch_stream_total.Add(-1);
}

size_t WatchStream::QueuedForTesting() const {
  std::lock_guard<std::mutex> lk(hub_->mu_);
  return queue_.size();
}

size_t WatchStream::BufferedBytesForTesting() const {
  std::lock_guard<std::mutex> lk(hub_->mu_);
  return queued_bytes_ + held_bytes_;
}

// ---------------------------------------------------------------------------
// WatchHub: bookkeeping (all under mu_)

WatchHub::WatchHub(const mvcc::Store* store, const WatchOptions& opts, WatchProbe* probe)
    : store_(store), opts_(opts), probe_(probe ? probe : &own_probe_), notified_rev_(store->Rev()) {}

WatchHub::~WatchHub() { Stop(); }

void WatchHub::Start() {
  std::lock_guard<std::mutex> lk(mu_);
  if (started_ || stop_) return;
  started_ = true;
  syncer_ = std::thread([this] { SyncLoop(); });
  notifier_ = std::thread([this] { NotifierLoop(); });
}

void WatchHub::Stop() {
  std::vector<std::shared_ptr<WatchStream>> ready;  // released below, not under mu_
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
    ready.swap(ready_);
  }
  sync_cv_.notify_all();
  notify_cv_.notify_all();
  if (syncer_.joinable()) syncer_.join();
  if (notifier_.joinable()) notifier_.join();
}

std::shared_ptr<WatchStream> WatchHub::NewStream() {
  std::shared_ptr<WatchStream> s(new WatchStream(this));
  probe_->watch_stream_total.Add(1);
  return s;
}

int64_t WatchHub::NotifiedRev() const {
  std::lock_guard<std::mutex> lk(mu_);
  return notified_rev_;
}

bool WatchHub::HasRoom(const WatchStream* s) const {
  return s->queue_.size() < opts_.stream_queue_len && s->queued_bytes_ + s->held_bytes_ < opts_.stream_buffer_bytes;
}

size_t WatchHub::Room(const WatchStream* s) const {
  const size_t used = s->queued_bytes_ + s->held_bytes_;
  return used >= opts_.stream_buffer_bytes ? 0 : opts_.stream_buffer_bytes - used;
}

void WatchHub::AddBuffered(WatchStream* s, int64_t queued, int64_t held) {
  s->queued_bytes_ = static_cast<size_t>(static_cast<int64_t>(s->queued_bytes_) + queued);
  s->held_bytes_ = static_cast<size_t>(static_cast<int64_t>(s->held_bytes_) + held);
  probe_->buffered_bytes.Add(queued + held);
}

void WatchHub::Push(WatchStream* s, WatchReply r) {
  if (size_t n = r.events.size()) probe_->pending_events_total.Add(static_cast<int64_t>(n));
  if (!s->closed_) AddBuffered(s, static_cast<int64_t>(ReplyBytes(r)), 0);
  s->queue_.push_back(std::move(r));
  if (s->waiting_) {
    s->waiting_ = false;
    if (started_ && !stop_) {
      // The stream may be mid-destruction (its destructor closes it, waiting
      // for mu_): then there is nobody to tell.
      if (auto sp = s->weak_from_this().lock()) {
        ready_.push_back(std::move(sp));
        notify_cv_.notify_one();
      }
    }
  }
}

void WatchHub::AddSynced(Watcher* w) {
  if (w->range) {
    synced_ranges_.push_back(w);
  } else {
    synced_keys_[w->key].push_back(w);
  }
}

void WatchHub::RemoveSynced(Watcher* w) {
  if (w->range) {
    auto it = std::find(synced_ranges_.begin(), synced_ranges_.end(), w);
    if (it != synced_ranges_.end()) synced_ranges_.erase(it);
    return;
  }
  auto it = synced_keys_.find(w->key);
  if (it == synced_keys_.end()) return;
  auto& v = it->second;
  v.erase(std::remove(v.begin(), v.end(), w), v.end());
  if (v.empty()) synced_keys_.erase(it);
}

void WatchHub::MakeUnsynced(Watcher* w) {
  RemoveSynced(w);
  w->state = Watcher::State::kUnsynced;
  unsynced_.insert(w);
  w->stream->unsynced_++;
  probe_->slow_watcher_total.Set(static_cast<int64_t>(unsynced_.size()));
  KickSyncer();
}

void WatchHub::MakeSynced(Watcher* w) {
  unsynced_.erase(w);
  w->stream->unsynced_--;
  w->state = Watcher::State::kSynced;
  AddSynced(w);
  probe_->slow_watcher_total.Set(static_cast<int64_t>(unsynced_.size()));
  MaybeSendRequestedProgress(w->stream);
}

void WatchHub::Remove(Watcher* w) {
  switch (w->state) {
    case Watcher::State::kSynced:
      RemoveSynced(w);
      break;
    case Watcher::State::kUnsynced:
      unsynced_.erase(w);
      w->stream->unsynced_--;
      probe_->slow_watcher_total.Set(static_cast<int64_t>(unsynced_.size()));
      break;
    case Watcher::State::kCompacted:
    case Watcher::State::kRemoved:
      break;
  }
  if (w->state == Watcher::State::kRemoved) return;
  if (w->progress_notify && --w->stream->progress_watchers_ == 0) progress_streams_.erase(w->stream);
  w->state = Watcher::State::kRemoved;
  watchers_.fetch_sub(1, std::memory_order_acq_rel);
  probe_->watcher_total.Add(-1);
}

void WatchHub::MaybeSendRequestedProgress(WatchStream* s) {
  if (!s->progress_requested_ || s->unsynced_ != 0 || s->closed_) return;
  s->progress_requested_ = false;
  // As etcd 3.6.2+: nothing while a watcher's explicit start revision is
  // ahead of the store (the client asks again). A stream without watchers is
  // answered, as etcd 3.4 does.
  for (const auto& [id, w] : s->watchers_)
    if (w->start_rev > notified_rev_) return;
  WatchReply r;
  r.watch_id = kInvalidWatchId;  // for every watcher of the stream
  r.revision = notified_rev_;
  Push(s, std::move(r));
}

void WatchHub::ScheduleTick(WatchStream* s, Clock::time_point now) {
  // etcd adds up to 10% jitter so that streams created together do not all
  // report at once.
  static thread_local std::mt19937_64 rng(std::random_device{}());
  auto interval = opts_.progress_interval;
  auto jitter_range = std::max<int64_t>(1, interval.count() / 10);
  auto jitter = std::chrono::milliseconds(static_cast<int64_t>(rng() % static_cast<uint64_t>(jitter_range)));
  s->next_tick_ = now + interval + jitter;
  notify_cv_.notify_one();
}

void WatchHub::KickSyncer() {
  sync_kick_ = true;
  sync_cv_.notify_one();
}

void WatchHub::FillPrevKv(WatchReply* r) const {
  for (auto& ev : r->events) {
    const mvcc::KeyValue& kv = *ev.kv;
    if (!ev.tombstone && kv.create_revision == kv.mod_revision) continue;  // a create has no previous version
    if (kv.mod_revision <= 1) continue;
    mvcc::RangeOptions o;
    o.rev = kv.mod_revision - 1;
    auto rr = store_->Range(kv.key, "", o);
    if (rr.ok() && !rr->kvs.empty()) ev.prev_kv = std::move(rr->kvs[0]);
  }
}

// ---------------------------------------------------------------------------
// Apply path

void WatchHub::Notify(int64_t rev, std::vector<mvcc::Event> events, bool complete) {
  std::lock_guard<std::mutex> lk(mu_);
  if (rev <= notified_rev_ && events.empty()) return;
  if (!complete) {
    // The batch's changes were not recorded: every synced watcher that wants
    // a revision of it reads them from the store instead.
    std::vector<Watcher*> lagging;
    for (auto& [k, ws] : synced_keys_)
      for (Watcher* w : ws)
        if (w->next <= rev) lagging.push_back(w);
    for (Watcher* w : synced_ranges_)
      if (w->next <= rev) lagging.push_back(w);
    for (Watcher* w : lagging) {
      w->next = std::max(w->next, notified_rev_ + 1);
      MakeUnsynced(w);
    }
  } else if (!events.empty() && (!synced_keys_.empty() || !synced_ranges_.empty())) {
    // Per watcher, its events in revision order.
    std::vector<std::pair<Watcher*, std::vector<WatchEvent>>> matched;
    std::unordered_map<Watcher*, size_t> slot;
    for (auto& e : events) {
      const int64_t mod = e.kv.mod_revision;
      std::shared_ptr<const mvcc::KeyValue> kv;
      auto add = [&](Watcher* w) {
        if (mod < w->next || !w->Wants(e.tombstone)) return;
        if (!kv) kv = std::make_shared<const mvcc::KeyValue>(e.kv);
        auto [it, inserted] = slot.emplace(w, matched.size());
        if (inserted) matched.emplace_back(w, std::vector<WatchEvent>{});
        matched[it->second].second.push_back(WatchEvent{e.tombstone, kv, std::nullopt});
      };
      if (auto it = synced_keys_.find(e.kv.key); it != synced_keys_.end()) {
        for (Watcher* w : it->second) add(w);
      }
      for (Watcher* w : synced_ranges_)
        if (w->Contains(e.kv.key)) add(w);
    }
    for (auto& [w, evs] : matched) {
      // One reply per revision, as etcd notifies once per write txn.
      size_t i = 0;
      while (i < evs.size()) {
        const int64_t r = evs[i].kv->mod_revision;
        size_t j = i;
        while (j < evs.size() && evs[j].kv->mod_revision == r) j++;
        if (!HasRoom(w->stream)) {
          // Slow stream: never block the apply loop; catch up from the store.
          w->next = r;
          MakeUnsynced(w);
          break;
        }
        WatchReply rep;
        rep.watch_id = w->id;
        rep.revision = r;
        rep.fragment = w->fragment;
        rep.prev_kv = w->prev_kv;
        rep.events.assign(std::make_move_iterator(evs.begin() + static_cast<ptrdiff_t>(i)),
                          std::make_move_iterator(evs.begin() + static_cast<ptrdiff_t>(j)));
        w->events_since_tick = true;
        Push(w->stream, std::move(rep));
        i = j;
      }
    }
  }
  if (rev > notified_rev_) notified_rev_ = rev;
}

// ---------------------------------------------------------------------------
// Syncer: catches unsynced watchers up from the store's history

struct WatchHub::Chosen {
  std::shared_ptr<Watcher> w;
  int64_t next = 0;
  std::vector<WatchEvent> evs;
  int revs = 0;          // distinct revisions in evs
  int64_t last_rev = 0;  // revision of the last event in evs
  int64_t more = 0;      // first revision left for a later round (batch full)
  size_t allowance = 0;  // bytes this reply may take of its stream's budget
  size_t bytes = 0;      // bytes of evs so far
};

bool WatchHub::SyncOnce() {
  std::vector<Chosen> chosen;
  int64_t target = 0;
  int64_t min_next = std::numeric_limits<int64_t>::max();
  bool worked = false;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (unsynced_.empty()) return false;
    target = notified_rev_;
    const int64_t compact = store_->CompactRev();
    std::vector<Watcher*> compacted;
    for (Watcher* w : unsynced_) {
      if (!HasRoom(w->stream)) continue;  // no room: wait for the stream
      if (w->next < compact) {
        compacted.push_back(w);
        continue;
      }
      if (chosen.size() >= opts_.max_watchers_per_sync) continue;
      Chosen c;
      c.w = w->stream->watchers_.at(w->id);
      c.next = w->next;
      min_next = std::min(min_next, w->next);
      chosen.push_back(std::move(c));
    }
    for (Watcher* w : compacted) {
      // etcd: the watcher is told the compact revision and is cancelled; it
      // stays registered on its stream (and counted) until cancelled.
      unsynced_.erase(w);
      w->stream->unsynced_--;
      w->state = Watcher::State::kCompacted;
      WatchReply r;
      r.watch_id = w->id;
      r.compact_revision = compact;
      r.canceled = true;
      Push(w->stream, std::move(r));
      MaybeSendRequestedProgress(w->stream);
      worked = true;
    }
    probe_->slow_watcher_total.Set(static_cast<int64_t>(unsynced_.size()));
    if (chosen.empty()) return worked;
    // The stream's room is shared by its chosen watchers; each reply holds
    // at least one revision, whatever its size, so every watcher progresses.
    std::unordered_map<const WatchStream*, size_t> per_stream;
    for (const Chosen& c : chosen) per_stream[c.w->stream]++;
    for (Chosen& c : chosen) c.allowance = std::max<size_t>(1, Room(c.w->stream) / per_stream[c.w->stream]);
  }

  // One scan for all of them, from the lowest next revision (no lock held).
  std::unordered_map<std::string_view, std::vector<size_t>> by_key;
  std::vector<size_t> ranges;
  for (size_t i = 0; i < chosen.size(); i++) {
    const Watcher& w = *chosen[i].w;
    if (w.range) {
      ranges.push_back(i);
    } else {
      by_key[w.key].push_back(i);
    }
  }
  size_t full = 0;
  auto visit = [&](const mvcc::KeyValueRef& ref, bool tombstone) {
    std::shared_ptr<const mvcc::KeyValue> kv;
    auto add = [&](size_t i) {
      Chosen& c = chosen[i];
      if (c.more != 0 || ref.mod_revision < c.next || !c.w->Wants(tombstone)) return;
      if (c.last_rev != ref.mod_revision) {
        if (c.revs == opts_.batch_max_revs || (c.revs > 0 && c.bytes >= c.allowance)) {
          c.more = ref.mod_revision;
          full++;
          return;
        }
        c.revs++;
        c.last_rev = ref.mod_revision;
      }
      if (!kv) {
        kv = std::make_shared<const mvcc::KeyValue>(
            tombstone ? mvcc::KeyValue{std::string(ref.key), {}, 0, ref.mod_revision, 0, 0} : ref.ToKeyValue());
      }
      c.evs.push_back(WatchEvent{tombstone, kv, std::nullopt});
      c.bytes += sizeof(WatchEvent) + KvBytes(*kv);
    };
    if (auto it = by_key.find(ref.key); it != by_key.end()) {
      for (size_t i : it->second) add(i);
    }
    for (size_t i : ranges)
      if (chosen[i].w->Contains(ref.key)) add(i);
    return full < chosen.size();
  };
  auto scanned = store_->ScanEvents(min_next, target, visit);
  if (!scanned.ok()) {
    if (scanned.status().code() == Code::kOutOfRange) return true;  // compacted meanwhile: the next round cancels
    LOG_WARN("watch: cannot read the history for unsynced watchers", {{"error", scanned.status().ToString()}});
    return worked;
  }
  const int64_t upto = *scanned;

  std::lock_guard<std::mutex> lk(mu_);
  for (Chosen& c : chosen) {
    Watcher* w = c.w.get();
    if (w->state != Watcher::State::kUnsynced) continue;  // cancelled or closed meanwhile
    if (!c.evs.empty()) {
      WatchReply r;
      r.watch_id = w->id;
      r.revision = upto;  // etcd: the revision the history was read at
      r.fragment = w->fragment;
      r.prev_kv = w->prev_kv;
      r.events = std::move(c.evs);
      w->events_since_tick = true;
      Push(w->stream, std::move(r));
    }
    w->next = c.more != 0 ? c.more : upto + 1;
    if (w->next > notified_rev_) MakeSynced(w);
  }
  probe_->slow_watcher_total.Set(static_cast<int64_t>(unsynced_.size()));
  return true;
}

void WatchHub::SyncLoop() {
  std::unique_lock<std::mutex> lk(mu_);
  while (!stop_) {
    sync_kick_ = false;
    lk.unlock();
    bool worked = SyncOnce();
    lk.lock();
    if (worked) continue;
    sync_cv_.wait_for(lk, opts_.sync_interval, [&] { return stop_ || sync_kick_; });
  }
}

// ---------------------------------------------------------------------------
// Notifier: ready callbacks and progress ticks

void WatchHub::Tick(Clock::time_point now) {
  for (WatchStream* s : progress_streams_) {
    if (s->next_tick_ > now) continue;
    for (auto& [id, w] : s->watchers_) {
      if (!w->progress_notify) continue;
      // etcd asks for progress only for watchers that got nothing since the
      // last tick, and the store answers only for synced ones.
      if (!w->events_since_tick && w->state == Watcher::State::kSynced && w->start_rev <= notified_rev_ &&
          HasRoom(s)) {
        WatchReply r;
        r.watch_id = id;
        r.revision = notified_rev_;
        Push(s, std::move(r));
      }
      w->events_since_tick = false;
    }
    ScheduleTick(s, now);
  }
}

void WatchHub::NotifierLoop() {
  std::unique_lock<std::mutex> lk(mu_);
  while (!stop_) {
    auto now = Clock::now();
    Tick(now);
    if (!ready_.empty()) {
      std::vector<std::shared_ptr<WatchStream>> batch;
      batch.swap(ready_);
      lk.unlock();
      for (auto& s : batch) s->InvokeReady();
      batch.clear();  // may destroy streams: not under mu_
      lk.lock();
      continue;
    }
    auto deadline = now + std::chrono::hours(1);
    for (WatchStream* s : progress_streams_) deadline = std::min(deadline, s->next_tick_);
    notify_cv_.wait_until(lk, deadline);
  }
}

}  // namespace engram::kv
