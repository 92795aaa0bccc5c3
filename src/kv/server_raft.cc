// KvServer's raft side: proposals in, the raft loop (WAL append + one
// fdatasync per Ready, committed entries handed to the apply thread), read
// indexes for linearizable reads, the timeout thread and the backend syncer.
// server.h has the picture.
#include <chrono>
#include <cstring>

#include "src/common/crc32c.h"
#include "src/common/log.h"
#include "src/kv/errors.h"
#include "src/kv/server.h"
#include "src/kv/server_internal.h"

namespace engram::kv {

using Clock = std::chrono::steady_clock;
using internal::Hex;

// ---------------------------------------------------------------- proposals

Status KvServer::ProposeAndWait(engrampb::InternalRequest ir) {
  return Await([&](Done done) {
    Proposal p;
    p.id = ids_->Next();
    ir.set_id(p.id);
    p.data = ir.SerializeAsString();
    p.done = std::move(done);
    Propose(std::move(p));
  });
}

void KvServer::Propose(Proposal p) {
  if (p.data.size() > opts_.max_request_bytes) {
    p.done(errors::RequestTooLarge());
    return;
  }
  p.deadline = Clock::now() + request_timeout_;
  {
    std::unique_lock<std::mutex> lk(prop_mu_);
    if (!stopping_.load()) {
      // Inline only for a lone writer: no other write in flight anywhere
      // (queued, in raft or waiting for its apply), and few lately (the
      // average in flight at a proposal, 1/8 weight each, below one half).
      // A lone writer gains two thread wake-ups; concurrent writers do
      // better in the pipeline (the raft thread fsyncs the next group while
      // the apply thread applies this one, and gRPC threads keep serving):
      // running even the raft pass inline under 16 clients cost 5-20 % of
      // their throughput (docs/performance.md).
      const int64_t in_flight = probe_.proposals_pending.Value();
      probe_.proposals_pending.Add(1);
      in_flight_avg_ += (std::min<int64_t>(in_flight, 1024) * 256 - in_flight_avg_) / 8;
      const bool alone = in_flight == 0 && in_flight_avg_ < 128;
      if (p.caller == Caller::kClient && alone && !raft_running_ && !inline_writer_) {
        return WriteInline(std::move(lk), std::move(p));
      }
      prop_queue_.push_back(std::move(p));
      prop_cv_.notify_one();
      return;
    }
  }
  p.done(errors::Stopped());
}

void KvServer::WriteInline(std::unique_lock<std::mutex> lk, Proposal p) {
  // The caller takes the raft stage, with whatever else queued before it
  // (in order: the queue first) and the reads waiting for a read index.
  raft_running_ = true;
  inline_writer_ = true;
  std::vector<Proposal> batch;
  std::vector<std::shared_ptr<ReadWaiter>> reads;
  batch.swap(prop_queue_);
  batch.push_back(std::move(p));
  reads.swap(read_queue_);
  raft_wakeup_ = false;
  lk.unlock();
  probe_.inline_writes.Inc();
  std::vector<raft::Entry> entries;
  const bool apply = RaftPass(batch, reads, &entries);
  lk.lock();
  raft_running_ = false;
  // Wake the raft thread only when it has something to do (work queued
  // meanwhile, or a tick that waits for the stage): not once per write.
  if (raft_stage_wanted_ || !prop_queue_.empty() || !read_queue_.empty() || raft_wakeup_) prop_cv_.notify_one();
  lk.unlock();
  if (apply) {
    // RaftPass handed this caller the apply stage with the entries (the
    // raft stage is free again: the raft thread keeps ticking meanwhile).
    probe_.inline_applies.Inc();
    ApplyEntries(entries);
    AnswerPhysicalWaiters();
  }
  lk.lock();
  inline_writer_ = false;
  lk.unlock();
  if (apply) {
    std::lock_guard<std::mutex> alk(apply_mu_);
    // The apply thread, only if it has something to do: entries queued
    // meanwhile, a defragmentation, a compaction step, a physical Compact.
    const bool work = !apply_queue_.empty() || apply_done_ || !defrag_waiters_.empty() ||
                      store_->CompactionPending() || !physical_waiters_.empty();
    apply_running_ = false;
    if (work) apply_cv_.notify_one();
  }
}

void KvServer::FailProposal(Done& done, const Status& s) {
  probe_.proposals_pending.Add(-1);
  probe_.proposals_failed.Inc();
  done(s);
}

// ---------------------------------------------------------- linearizable reads

namespace {
int64_t SteadyNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}
}  // namespace

bool KvServer::LocalReadReady() const {
  const uint64_t floor = local_read_floor_.load(std::memory_order_acquire);
  if (floor == 0 || applied_.load(std::memory_order_acquire) < floor) return false;
  const int64_t busy = raft_busy_since_ns_.load(std::memory_order_acquire);
  return busy == 0 || SteadyNs() - busy < static_cast<int64_t>(opts_.heartbeat_ms) * 1000000;
}

void KvServer::AfterLinearizable(Done fn) {
  if (LocalReadReady() && !stopping_.load()) {
    probe_.local_reads.Inc();
    return fn(Status::OK());
  }
  auto w = std::make_shared<ReadWaiter>();
  w->fn = std::move(fn);
  w->deadline = Clock::now() + request_timeout_;
  {
    std::lock_guard<std::mutex> lk(prop_mu_);
    if (!stopping_.load()) {
      {
        std::lock_guard<std::mutex> dl(read_deadline_mu_);
        read_deadlines_.push_back(w);
      }
      read_queue_.push_back(w);
      raft_wakeup_ = true;
      prop_cv_.notify_one();
      return;
    }
  }
  FinishRead(w, errors::Stopped());
}

Status KvServer::WaitLinearizable() {
  // Always ends: the timeout thread, or Stop, completes every read.
  return Await([&](Done done) { AfterLinearizable(std::move(done)); });
}

void KvServer::FinishRead(const std::shared_ptr<ReadWaiter>& w, const Status& s) {
  if (w->finished.exchange(true)) return;
  Done fn = std::move(w->fn);
  fn(s);
}

void KvServer::ReadIndexResolved(std::vector<std::shared_ptr<ReadWaiter>>& ws, uint64_t index) {
  bool ready;
  {
    // Under parked_mu_: the apply thread moves applied_ before it looks at
    // the parked reads under the same lock, so none is missed.
    std::lock_guard<std::mutex> lk(parked_mu_);
    ready = applied_.load() >= index;
    if (!ready)
      for (auto& w : ws) parked_reads_.emplace(index, std::move(w));
  }
  if (ready) {
    std::lock_guard<std::mutex> lk(reader_mu_);
    for (auto& w : ws) ready_reads_.push_back(std::move(w));
    reader_cv_.notify_all();
  }
  ws.clear();
}

void KvServer::WakeParkedReads(uint64_t applied) {
  std::vector<std::shared_ptr<ReadWaiter>> ready;
  {
    std::lock_guard<std::mutex> lk(parked_mu_);
    auto end = parked_reads_.upper_bound(applied);
    for (auto it = parked_reads_.begin(); it != end; ++it) ready.push_back(std::move(it->second));
    parked_reads_.erase(parked_reads_.begin(), end);
  }
  if (ready.empty()) return;
  std::lock_guard<std::mutex> lk(reader_mu_);
  for (auto& w : ready) ready_reads_.push_back(std::move(w));
  reader_cv_.notify_all();
}

void KvServer::ReaderLoop() {
  std::unique_lock<std::mutex> lk(reader_mu_);
  while (true) {
    reader_cv_.wait(lk, [&] { return !ready_reads_.empty() || readers_stop_; });
    if (ready_reads_.empty()) break;  // stopping, nothing left
    auto w = std::move(ready_reads_.front());
    ready_reads_.pop_front();
    lk.unlock();
    FinishRead(w, Status::OK());  // the read itself runs here
    w.reset();
    lk.lock();
  }
}

// ---------------------------------------------------------------- raft thread

void KvServer::RaftLoop() {
  const auto tick = std::chrono::milliseconds(opts_.heartbeat_ms);
  auto next_tick = Clock::now() + tick;
  std::vector<Proposal> batch;
  std::vector<std::shared_ptr<ReadWaiter>> reads;
  bool campaign = true;  // single voter: campaign without waiting for the election timeout
  while (true) {
    {
      std::unique_lock<std::mutex> lk(prop_mu_);
      prop_cv_.wait_until(lk, next_tick, [&] {
        return !raft_running_ && (!prop_queue_.empty() || raft_wakeup_ || stopping_.load());
      });
      if (raft_running_) {
        // A caller writing inline holds the raft stage: the tick (or the
        // work) waits for its pass to end.
        raft_stage_wanted_ = true;
        prop_cv_.wait(lk, [&] { return !raft_running_; });
        raft_stage_wanted_ = false;
      }
      raft_running_ = true;
      batch.swap(prop_queue_);
      reads.swap(read_queue_);
      raft_wakeup_ = false;
    }
    if (stopping_.load()) {
      {
        // Proposals queued after the swap above, before stopping_ was set.
        std::lock_guard<std::mutex> lk(prop_mu_);
        for (auto& p : prop_queue_) batch.push_back(std::move(p));
        prop_queue_.clear();
        for (auto& w : read_queue_) reads.push_back(std::move(w));
        read_queue_.clear();
      }
      reads.clear();  // failed with "server stopped" by Stop (read_deadlines_ holds them all)
      for (auto& p : batch) {
        probe_.proposals_pending.Add(-1);
        p.done(errors::Stopped());
      }
      break;  // the raft stage stays taken: nobody writes inline any more
    }
    if (Clock::now() >= next_tick) {
      node_->Tick();
      ticks_.fetch_add(1, std::memory_order_relaxed);
      next_tick += tick;
      if (next_tick < Clock::now()) next_tick = Clock::now() + tick;
    }
    RaftPass(batch, reads, nullptr);
    bool wakeup = false;
    if (campaign) {
      auto st = node_->Status();
      if (st.state == raft::StateType::kLeader) {
        campaign = false;
      } else if (st.applied >= st.commit) {
        Status cs = node_->Campaign();
        if (!cs.ok()) LOG_WARN("campaign failed", {{"error", cs.ToString()}});
        campaign = false;
        wakeup = true;  // handle the campaign's Ready at once
      }
    }
    std::lock_guard<std::mutex> lk(prop_mu_);
    raft_running_ = false;
    if (wakeup) raft_wakeup_ = true;
  }
  reads_in_flight_.clear();  // Stop fails them with "server stopped"
  // Drain: let the apply thread finish what is committed.
  {
    std::lock_guard<std::mutex> lk(apply_mu_);
    apply_done_ = true;
    apply_cv_.notify_one();
  }
}

bool KvServer::RaftPass(std::vector<Proposal>& batch, std::vector<std::shared_ptr<ReadWaiter>>& reads,
                      std::vector<raft::Entry>* apply_here) {
  raft_busy_since_ns_.store(SteadyNs(), std::memory_order_release);  // LocalReadReady
  bool took_apply = false;
  if (!batch.empty()) {
    const auto now = Clock::now();
    for (auto& p : batch) {
      if (p.deadline <= now) {  // waited in the queue past its deadline: never proposed
        FailProposal(p.done, errors::Timeout());
        continue;
      }
      const uint32_t crc = crc32c::Value(p.data.data(), p.data.size());
      const uint64_t id = p.id;
      waits_.Register({id, crc, p.data.size(), p.resp, p.deadline, std::move(p.done)});
      Status s = node_->Propose(std::move(p.data));
      if (!s.ok()) {
        // Raft refused it (no leader): it will never commit.
        if (auto w = waits_.Cancel(id, crc)) FailProposal(w->done, errors::NoLeader());
      }
    }
    batch.clear();
  }
  if (!reads.empty()) {
    // One read index for every read that queued since the last pass.
    std::string ctx(8, '\0');
    const uint64_t seq = ++read_seq_;
    std::memcpy(ctx.data(), &seq, sizeof seq);
    reads_in_flight_[ctx] = ReadBatch{std::move(reads), Clock::now()};
    reads.clear();
    node_->ReadIndex(ctx);
  }
  if (!reads_in_flight_.empty()) {
    // A read index raft dropped (no leader) never comes back; its readers
    // time out on their own. Forget it after the request timeout.
    const auto now = Clock::now();
    std::erase_if(reads_in_flight_, [&](const auto& kv) { return now - kv.second.sent > request_timeout_; });
  }
  if (uint64_t r = release_to_.exchange(0)) {
    // The store holds everything up to r durably: record r as the start of
    // the log (so a replay knows the term before its first entry), then drop
    // the segments and in-memory entries below it.
    auto term = storage_->Term(r);
    if (term.ok() && r > storage_->FirstIndex() - 1) {
      Status s = wal_->SaveSnapshot(wal::SnapshotMarker{r, *term, storage_->conf_state()});
      if (!s.ok()) ENGRAM_PANIC("failed to record the WAL release point", {{"error", s.ToString()}});
      s = wal_->ReleaseTo(r);
      if (!s.ok()) LOG_WARN("failed to release WAL segments", {{"error", s.ToString()}});
      Status cs = storage_->Compact(r);
      if (!cs.ok()) LOG_WARN("raft log compaction failed", {{"error", cs.ToString()}});
    }
  }
  while (node_->HasReady()) {
    raft::Ready rd = node_->GetReady();
    if (!rd.entries.empty() || !rd.hard_state.Empty()) {
      Status s = wal_->Append(rd.hard_state, rd.entries);
      if (s.ok() && (rd.must_sync || !rd.entries.empty())) s = wal_->Sync();
      if (!s.ok()) ENGRAM_PANIC("failed to save raft state and entries to the WAL", {{"error", s.ToString()}});
      if (!rd.entries.empty()) {
        s = storage_->Append(rd.entries);
        if (!s.ok()) ENGRAM_PANIC("failed to append to raft storage", {{"error", s.ToString()}});
      }
      if (!rd.hard_state.Empty()) {
        storage_->SetHardState(rd.hard_state);
        term_.store(rd.hard_state.term);
      }
    }
    // No transport yet: a single member has nobody to send to. A message
    // here would be lost without anyone noticing, so it is a broken
    // invariant until the peer transport exists.
    if (!rd.messages.empty()) {
      ENGRAM_PANIC("raft produced messages for peers but this member has no transport",
                   {{"count", static_cast<uint64_t>(rd.messages.size())},
                    {"to", Hex(rd.messages.front().to)}});
    }
    for (auto& rs : rd.read_states) {
      auto it = reads_in_flight_.find(rs.request_ctx);
      if (it == reads_in_flight_.end()) {
        probe_.slow_read_indexes.Inc();  // etcd: a read state for an older request
        continue;
      }
      ReadIndexResolved(it->second.waiters, rs.index);
      reads_in_flight_.erase(it);
    }
    if (rd.soft_state) {
      uint64_t lead = rd.soft_state->lead;
      leader_.store(lead);
      probe_.has_leader.Set(lead != 0);
      probe_.is_leader.Set(rd.soft_state->state == raft::StateType::kLeader);
      if (lead != 0 && lead != last_lead_) {
        probe_.leader_changes.Inc();
        LOG_INFO("raft.node: elected leader",
                 {{"local-member-id", Hex(member_id_)}, {"leader", Hex(lead)}, {"term", term_.load()}});
      }
      last_lead_ = lead;
    }
    if (!rd.committed_entries.empty()) {
      commit_.store(rd.committed_entries.back().index);
      probe_.proposals_committed.Set(static_cast<int64_t>(rd.committed_entries.back().index));
      // The apply stage applies them; the raft stage never touches LMDB.
      // Element-wise: rd.committed_entries keeps its indexes for Advance
      // (moved-from entries keep index and term).
      std::lock_guard<std::mutex> lk(apply_mu_);
      if (apply_here && !took_apply && !apply_running_ && !apply_done_ && defrag_waiters_.empty()) {
        // The caller takes the apply stage, after anything queued for it.
        apply_running_ = true;
        took_apply = true;
        apply_here->swap(apply_queue_);
      }
      auto& to = took_apply ? *apply_here : apply_queue_;
      for (auto& e : rd.committed_entries) to.push_back(std::move(e));
      if (!took_apply) apply_cv_.notify_one();
    }
    node_->Advance(rd);
  }
  {
    // Local reads: allowed from the first pass where raft's rule holds in
    // this term, with the commit index of that moment as the floor.
    const uint64_t local = node_->LocalReadIndex();
    const uint64_t term = node_->Status().term;
    if (local == 0) {
      local_read_floor_.store(0, std::memory_order_release);
      local_read_term_ = 0;
    } else if (local_read_term_ != term) {
      local_read_floor_.store(local, std::memory_order_release);
      local_read_term_ = term;
    }
  }
  raft_busy_since_ns_.store(0, std::memory_order_release);
  return took_apply;
}

// -------------------------------------------------------------- timeout thread

void KvServer::TimeoutLoop() {
  // Runs apart from the raft and apply threads so that a stuck fsync or a
  // long apply cannot keep a client waiting past its request timeout.
  const auto period = std::min<std::chrono::milliseconds>(std::chrono::milliseconds(100), request_timeout_ / 4);
  std::unique_lock<std::mutex> lk(timeout_mu_);
  while (!timeout_stop_) {
    timeout_cv_.wait_for(lk, period, [&] { return timeout_stop_; });
    if (timeout_stop_) break;
    lk.unlock();
    const auto now = Clock::now();
    for (auto& w : waits_.TakeExpired(now)) FailProposal(w.done, errors::Timeout());
    std::vector<Proposal> expired;
    {
      std::lock_guard<std::mutex> plk(prop_mu_);
      for (auto it = prop_queue_.begin(); it != prop_queue_.end();) {
        if (it->deadline <= now) {
          expired.push_back(std::move(*it));
          it = prop_queue_.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (auto& p : expired) FailProposal(p.done, errors::Timeout());
    RevokeExpiredLeases();
    CheckpointLeases();
    // Linearizable reads past their deadline (in deadline order; finished
    // ones at the front are just dropped).
    std::vector<std::shared_ptr<ReadWaiter>> late;
    {
      std::lock_guard<std::mutex> dl(read_deadline_mu_);
      while (!read_deadlines_.empty() &&
             (read_deadlines_.front()->finished.load() || read_deadlines_.front()->deadline <= now)) {
        if (!read_deadlines_.front()->finished.load()) late.push_back(read_deadlines_.front());
        read_deadlines_.pop_front();
      }
    }
    for (auto& w : late) {
      if (w->finished.load()) continue;
      // etcd_server_slow_read_indexes_total: the read index did not come
      // back (or was not applied) within the request timeout.
      probe_.slow_read_indexes.Inc();
      FinishRead(w, errors::Timeout());
    }
    lk.lock();
  }
}

// -------------------------------------------------------------- syncer thread

void KvServer::SyncLoop() {
  uint64_t last_release = synced_applied_.load();
  const auto interval = std::chrono::milliseconds(std::max<uint64_t>(1, opts_.backend_batch_interval_ms));
  while (true) {
    bool stop;
    {
      std::unique_lock<std::mutex> lk(sync_mu_);
      sync_cv_.wait_for(lk, interval, [&] {
        return sync_stop_ || applied_.load() - synced_applied_.load() >= opts_.backend_batch_limit;
      });
      stop = sync_stop_;
    }
    uint64_t a = applied_.load();
    if (a > synced_applied_.load()) {
      Status s = store_->Sync();
      if (!s.ok()) ENGRAM_PANIC("failed to sync the backend", {{"error", s.ToString()}});
      synced_applied_.store(a);
    }
    if (a >= last_release + opts_.snapshot_count && a > opts_.catchup_entries) {
      LOG_INFO("triggering snapshot", {{"local-member-id", Hex(member_id_)}, {"local-member-applied-index", a},
                                       {"local-member-snapshot-count", opts_.snapshot_count}});
      release_to_.store(a - opts_.catchup_entries);
      last_release = a;
      std::lock_guard<std::mutex> lk(prop_mu_);
      raft_wakeup_ = true;
      prop_cv_.notify_one();
    }
    if (stop) break;
  }
}

}  // namespace engram::kv
