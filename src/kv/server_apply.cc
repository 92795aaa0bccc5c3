// KvServer's apply thread: the only LMDB writer. Applies committed entries
// from their own bytes (never the caller's request object; a waiting caller
// only receives the response), one LMDB write txn per batch with the applied
// index in the same txn; alarms gate writes; defragmentation runs between
// batches.
#include <chrono>
#include <optional>

#include "src/common/coding.h"
#include "src/common/crc32c.h"
#include "src/common/failpoint.h"
#include "src/common/log.h"
#include "src/kv/alarms.h"
#include "src/kv/apply.h"
#include "src/kv/errors.h"
#include "src/kv/server.h"
#include "src/kv/server_internal.h"

namespace engram::kv {

using Clock = std::chrono::steady_clock;
using engrampb::InternalRequest;
using internal::ApplyOpOf;
using internal::EncodeMembers;
using internal::Hex;

void KvServer::AnswerPhysicalWaiters() {
  // A physical Compact waiting for the removal is answered once none is
  // pending (also when its compaction had nothing to remove, e.g. at 0).
  if (physical_waiters_.empty() || store_->CompactionPending()) return;
  std::vector<Done> ws;
  ws.swap(physical_waiters_);
  for (auto& d : ws) d(Status::OK());
}

void KvServer::ApplyLoop() {
  std::vector<raft::Entry> entries;
  std::vector<Done> defrag;  // Defragment calls, run between batches
  const auto step_interval = std::chrono::milliseconds(opts_.compaction_sleep_interval_ms);
  auto last_step = Clock::now();
  while (true) {
    {
      std::unique_lock<std::mutex> lk(apply_mu_);
      apply_running_ = false;  // (taken below, in the last round)
      // The compaction state and physical_waiters_ belong to the apply
      // stage: read only while nobody holds it (and apply_mu_ keeps it so).
      apply_cv_.wait(lk, [&] {
        return !apply_running_ && (!apply_queue_.empty() || apply_done_ || !defrag_waiters_.empty() ||
                                   store_->CompactionPending() || !physical_waiters_.empty());
      });
      if (apply_queue_.empty() && apply_done_) break;
      apply_running_ = true;
      entries.swap(apply_queue_);
      defrag.swap(defrag_waiters_);
    }
    const bool idle = entries.empty() && defrag.empty();
    if (!entries.empty()) ApplyEntries(entries);
    entries.clear();
    if (!defrag.empty()) RunDefrag(defrag);
    // One step of the pending compaction: whenever there is nothing else to
    // do (each step is bounded, so a write that arrives waits for one step
    // at most), and under a steady write load once per
    // --experimental-compaction-sleep-interval, so the compaction still
    // finishes while writes keep most of the time (etcd sleeps between its
    // compaction batches likewise).
    if (store_->CompactionPending() && (idle || Clock::now() - last_step >= step_interval)) {
      store_->CompactStep();
      last_step = Clock::now();
    }
    AnswerPhysicalWaiters();
  }
  for (auto& d : physical_waiters_) d(errors::Stopped());  // the removal finishes at the next start
  physical_waiters_.clear();
  {
    std::lock_guard<std::mutex> lk(apply_mu_);
    defrag.swap(defrag_waiters_);
  }
  for (auto& d : defrag) d(errors::Stopped());
  // Anything still waiting will never be applied by this process.
  for (auto& w : waits_.TakeAll()) {
    probe_.proposals_pending.Add(-1);
    w.done(errors::Stopped());
  }
}

void KvServer::ApplyEntries(std::vector<raft::Entry>& entries) {
  auto t0 = Clock::now();
  struct Item {
    const raft::Entry* e;
    std::optional<WaitRegistry::Waiter> w;  // the caller waiting for this entry, if any
    Status s;
    bool looked_up = false;                  // w was looked for (once; an attempt may stop early)
  };
  std::vector<Item> items;
  items.reserve(entries.size());
  const uint64_t first = applied_.load();
  for (auto& e : entries) {
    if (e.index <= first) continue;  // already in the store (replay after restart)
    items.push_back({&e, std::nullopt, Status::OK(), false});
  }
  if (items.empty()) return;
  const uint64_t last = items.back().e->index;

  InternalRequest ir;  // reused: one decode per entry
  std::unique_ptr<mvcc::Store::Batch> batch;
  bool record_events = false;
  // Alarms change in memory as entries apply; a batch that does not commit
  // must not leave its changes behind.
  const std::vector<AlarmInfo> alarms_before = alarms_.Snapshot();
  for (int attempt = 0;; attempt++) {
    batch = store_->BeginBatch();
    lessor_->BeginBatch();  // its changes are undone if the batch does not commit
    // Watchers get the batch's changes after it commits (watch.h).
    record_events = watch_->HasWatchers();
    batch->RecordEvents(record_events);
    for (Item& it : items) {
      const raft::Entry& e = *it.e;
      if (e.type == raft::EntryType::kNormal && !e.data.empty()) {
        ir.Clear();
        if (!ir.ParseFromString(e.data)) {
          ENGRAM_PANIC("cannot decode a committed raft entry", {{"index", e.index}, {"term", e.term}});
        }
        // The id routes the reply; the checksum makes sure it is this
        // caller's entry (wait.h).
        if (!it.looked_up) {
          it.w = waits_.Take(ir.id(), crc32c::Value(e.data.data(), e.data.size()), e.data.size());
          it.looked_up = true;
        }
      }
      google::protobuf::Message* resp = it.w ? it.w->resp : nullptr;
      if (attempt > 0 && resp) resp->Clear();
      it.s = ApplyOne(*batch, e, resp, &ir);
      // LMDB refused a write (map full): nothing more can be read or written
      // in this batch; Commit reports it and the batch is applied again.
      if (!batch->status().ok()) break;
    }
    if (FAILPOINT("apply-before-commit")) ENGRAM_PANIC("failpoint apply-before-commit");
    Status cs = batch->Commit(last);
    map_full_retry_ = false;
    if (cs.ok()) {
      lessor_->EndBatch();
      break;
    }
    alarms_.Restore(alarms_before);
    lessor_->Rollback();
    if (cs.code() == Code::kResourceExhausted && attempt == 0) {
      // The LMDB map is full (the file reached its map size). As etcd's
      // quota: raise NOSPACE and apply the batch again, now refusing what
      // writes (puts, txns with puts), instead of crashing on the same entry
      // at every restart.
      LOG_ERROR("the backend is full; raising the NOSPACE alarm",
                {{"error", cs.ToString()}, {"path", opts_.member_dir + "/snap/db"},
                 {"advice", "compact and defragment, or raise --quota-backend-bytes (the map is sized from it) and restart"}});
      RaiseNoSpaceAfterMapFull();
      // The retry refuses writes whatever the batch does to the alarm (a
      // disarm in the same batch must not let its puts fill the map again).
      map_full_retry_ = true;
      continue;
    }
    ENGRAM_PANIC("failed to commit the backend transaction",
                 {{"error", cs.ToString()}, {"path", opts_.member_dir + "/snap/db"},
                  {"advice", cs.code() == Code::kResourceExhausted
                                 ? "the backend is full even for requests that free space: raise "
                                   "--quota-backend-bytes (the map is sized from it) and restart"
                                 : "check the disk; the entries will be applied again at restart"}});
  }
  // Before the replies: a client that saw its write acknowledged finds the
  // event already queued on its watch streams. Never blocks (slow streams
  // turn their watchers unsynced).
  watch_->Notify(batch->Rev(), batch->TakeEvents(), record_events);
  {
    std::lock_guard<std::mutex> lk(applied_mu_);
    applied_.store(last);
  }
  applied_cv_.notify_all();
  WakeParkedReads(last);  // linearizable reads waiting for this index
  probe_.proposals_applied.Set(static_cast<int64_t>(last));
  for (Item& it : items) {
    if (!it.w) continue;
    probe_.proposals_pending.Add(-1);
    // An error raised while applying (a compacted revision, an unknown
    // lease) is an answer, not a failed proposal: etcd counts only proposals
    // that did not commit in time (FailProposal).
    it.w->done(it.s);
  }
  if (last - synced_applied_.load() >= opts_.backend_batch_limit) {
    std::lock_guard<std::mutex> lk(sync_mu_);
    sync_cv_.notify_one();
  }
}

void KvServer::RaiseNoSpaceAfterMapFull() {
  // In its own small batch at the current applied index, so the alarm
  // survives a restart if LMDB still has a free page for it; if not, it holds
  // in memory and the full map raises it again after a restart.
  auto b = store_->BeginBatch();
  bool added = false;
  alarms_.Activate(*b, member_id_, etcdserverpb::NOSPACE, &added);
  Status s = b->Commit(applied_.load());
  if (!s.ok()) LOG_WARN("cannot persist the NOSPACE alarm; it holds until restart", {{"error", s.ToString()}});
  if (added) LOG_WARN("alarm raised", {{"alarm", "NOSPACE"}, {"from", Hex(member_id_)}});
}

Status KvServer::ApplyOne(mvcc::Store::Batch& b, const raft::Entry& e, google::protobuf::Message* resp,
                          InternalRequest* ir) {
  if (e.type == raft::EntryType::kConfChange) {
    ApplyConfChange(b, e);
    return Status::OK();
  }
  if (e.data.empty()) return Status::OK();  // a new leader's empty entry
  auto t0 = Clock::now();
  (void)FAILPOINT("apply-entry");  // sleep(N): a slow apply of every entry
  Status s = ApplyInternal(b, *ir, resp);
  // etcd counts a compacted-revision error as a successful apply.
  probe_.apply_seconds.at(ApplyOpOf(ir->request_case()),
                          s.ok() || s.message().ends_with("required revision has been compacted"))
      .ObserveSince(t0);
  // etcd_server_slow_apply_total: per request over --warning-apply-duration.
  WarnIfSlow(t0, kApplyOpNames[ApplyOpOf(ir->request_case())]);
  return s;
}

namespace {
// The caller's response object, or a scratch one when nobody waits here.
template <class Resp>
Resp* RespOr(google::protobuf::Message* resp, Resp* scratch) {
  return resp ? static_cast<Resp*>(resp) : scratch;
}
}  // namespace

Status KvServer::ApplyInternal(mvcc::Store::Batch& b, const InternalRequest& ir, google::protobuf::Message* resp) {
  {
    // Alarms: NOSPACE / CORRUPT refuse writes.
    const google::protobuf::Message* req = ir.request_case() == InternalRequest::kTxn ? &ir.txn() : nullptr;
    ENGRAM_RETURN_IF_ERROR(AlarmGate(ir.request_case(), req));
  }
  switch (ir.request_case()) {
    case InternalRequest::kAlarm: {
      etcdserverpb::AlarmResponse r;
      return ApplyAlarm(b, ir.alarm(), RespOr(resp, &r));
    }
    case InternalRequest::kPut: {
      etcdserverpb::PutResponse r;
      return ApplyPut(b, ir.put(), RespOr(resp, &r), lessor_.get());
    }
    case InternalRequest::kDeleteRange: {
      etcdserverpb::DeleteRangeResponse r;
      return ApplyDeleteRange(b, ir.delete_range(), RespOr(resp, &r), lessor_.get());
    }
    case InternalRequest::kTxn: {
      etcdserverpb::TxnResponse r;
      return ApplyTxn(b, ir.txn(), RespOr(resp, &r), lessor_.get());
    }
    case InternalRequest::kCompaction: {
      etcdserverpb::CompactionResponse r;
      return ApplyCompaction(b, *store_, ir.compaction(), RespOr(resp, &r));
    }
    case InternalRequest::kLeaseGrant: {
      etcdserverpb::LeaseGrantResponse r;
      auto* out = RespOr(resp, &r);
      int64_t granted = 0;
      ENGRAM_RETURN_IF_ERROR(lessor_->Grant(ir.lease_grant().id(), ir.lease_grant().ttl(), Clock::now(), &granted));
      b.PutMeta(internal::LeaseMetaKey(ir.lease_grant().id()), internal::EncodeLeaseRecord(granted, 0));
      out->set_id(ir.lease_grant().id());
      out->set_ttl(granted);
      out->mutable_header()->set_revision(b.Rev());
      return Status::OK();
    }
    case InternalRequest::kLeaseRevoke: {
      // etcd: every attached key deleted in one write txn (one revision,
      // sorted key order), with the lease record, in the same commit.
      etcdserverpb::LeaseRevokeResponse r;
      auto* out = RespOr(resp, &r);
      std::vector<std::string> keys;
      ENGRAM_RETURN_IF_ERROR(lessor_->Revoke(ir.lease_revoke().id(), &keys));
      int64_t rev;
      {
        auto txn = b.Begin();
        for (const auto& k : keys) {
          auto n = txn.DeleteRange(k, "", nullptr);
          if (!n.ok()) return errors::FromMvcc(n.status());  // the batch is failed: Commit reports it
        }
        txn.End();
        rev = txn.Rev();
      }
      b.DeleteMeta(internal::LeaseMetaKey(ir.lease_revoke().id()));
      out->mutable_header()->set_revision(rev);
      return Status::OK();
    }
    case InternalRequest::kLeaseCheckpoint: {
      // Records each lease's remaining TTL (unknown leases ignored, as
      // etcd), persisted so a restart resumes from it (etcd 3.6).
      for (const auto& c : ir.lease_checkpoint().checkpoints()) {
        if (!lessor_->Checkpoint(c.id(), c.remaining_ttl(), Clock::now())) continue;
        auto [ttl, remaining] = lessor_->Persisted(c.id());
        b.PutMeta(internal::LeaseMetaKey(c.id()), internal::EncodeLeaseRecord(ttl, remaining));
      }
      etcdserverpb::LeaseCheckpointResponse r;
      RespOr(resp, &r)->mutable_header()->set_revision(b.Rev());
      return Status::OK();
    }
    case InternalRequest::kPublish: {
      std::lock_guard<std::mutex> lk(members_mu_);
      for (auto& m : members_) {
        if (m.id == ir.publish().member_id()) {
          m.name = ir.publish().name();
          m.client_urls.assign(ir.publish().client_urls().begin(), ir.publish().client_urls().end());
        }
      }
      b.PutMeta("members", EncodeMembers(members_));
      return Status::OK();
    }
    case InternalRequest::kClusterVersion: {
      std::lock_guard<std::mutex> lk(members_mu_);
      bool first = cluster_version_.empty();
      cluster_version_ = ir.cluster_version().version();
      b.PutMeta("cluster_version", cluster_version_);
      if (first) {
        LOG_INFO("set initial cluster version",
                 {{"cluster-id", Hex(cluster_id_)}, {"local-member-id", Hex(member_id_)},
                  {"cluster-version", cluster_version_}});
      }
      LOG_INFO("enabled capabilities for version", {{"cluster-version", cluster_version_}});
      return Status::OK();
    }
    default:
      return Status::Unimplemented("etcdserver: request kind not supported yet");
  }
}

void KvServer::ApplyConfChange(mvcc::Store::Batch& b, const raft::Entry& e) {
  engrampb::ConfChange cc;
  if (!cc.ParseFromString(e.data)) ENGRAM_PANIC("cannot decode a conf change entry", {{"index", e.index}});
  std::lock_guard<std::mutex> lk(members_mu_);
  switch (cc.type()) {
    case engrampb::ConfChange::ADD_NODE:
    case engrampb::ConfChange::ADD_LEARNER_NODE: {
      MemberInfo m;
      m.id = cc.member().id();
      m.name = cc.member().name();
      m.peer_urls.assign(cc.member().peer_urls().begin(), cc.member().peer_urls().end());
      m.client_urls.assign(cc.member().client_urls().begin(), cc.member().client_urls().end());
      m.is_learner = cc.type() == engrampb::ConfChange::ADD_LEARNER_NODE;
      bool exists = false;
      for (const auto& x : members_) exists |= x.id == m.id;
      if (!exists) members_.push_back(m);
      std::vector<std::string> urls = m.peer_urls;
      LOG_INFO("added member", {{"cluster-id", Hex(cluster_id_)}, {"local-member-id", Hex(member_id_)},
                                {"added-peer-id", Hex(m.id)}, {"added-peer-peer-urls", urls}});
      break;
    }
    case engrampb::ConfChange::REMOVE_NODE:
      std::erase_if(members_, [&](const MemberInfo& m) { return m.id == cc.node_id(); });
      break;
    default:
      break;
  }
  b.PutMeta("members", EncodeMembers(members_));
}

// etcd's applierV3Corrupt and applierV3Capped, in that order: the refusals
// while an alarm is active. Apply thread (alarms change only there, in log
// order, so every member refuses the same entries).
Status KvServer::AlarmGate(InternalRequest::RequestCase kind, const google::protobuf::Message* req) const {
  if (alarms_.Corrupt()) {
    switch (kind) {
      case InternalRequest::kPut:
      case InternalRequest::kDeleteRange:
      case InternalRequest::kTxn:
      case InternalRequest::kCompaction:
      case InternalRequest::kLeaseGrant:
      case InternalRequest::kLeaseRevoke:
        return errors::Corrupt();
      default:
        break;
    }
  }
  if (alarms_.NoSpace() || map_full_retry_) {
    if (kind == InternalRequest::kPut || kind == InternalRequest::kLeaseGrant) return errors::NoSpace();
    if (kind == InternalRequest::kTxn && req != nullptr &&
        QuotaCost(static_cast<const etcdserverpb::TxnRequest&>(*req)) > 0) {
      return errors::NoSpace();
    }
  }
  return Status::OK();
}

Status KvServer::ApplyAlarm(mvcc::Store::Batch& b, const etcdserverpb::AlarmRequest& r,
                            etcdserverpb::AlarmResponse* resp) {
  auto add = [&](const AlarmInfo& a) {
    auto* m = resp->add_alarms();
    m->set_memberid(a.member_id);
    m->set_alarm(a.type);
  };
  const std::string type = AlarmTypeName(r.alarm());
  const bool known = r.alarm() == etcdserverpb::NOSPACE || r.alarm() == etcdserverpb::CORRUPT;
  switch (r.action()) {
    case etcdserverpb::AlarmRequest::GET:
      for (const auto& a : alarms_.Get(r.alarm())) add(a);
      break;
    case etcdserverpb::AlarmRequest::ACTIVATE: {
      const size_t before = alarms_.Get(r.alarm()).size();
      bool added = false;
      add(alarms_.Activate(b, r.memberid(), r.alarm(), &added));
      if (added && before == 0) {
        if (known) {
          LOG_WARN("alarm raised", {{"alarm", type}, {"from", Hex(r.memberid())}});
        } else {
          LOG_WARN("unimplemented alarm activation", {{"alarm", AlarmText({r.memberid(), r.alarm()})}});
        }
      }
      break;
    }
    case etcdserverpb::AlarmRequest::DEACTIVATE: {
      const size_t before = alarms_.Get(r.alarm()).size();
      auto m = alarms_.Deactivate(b, r.memberid(), r.alarm());
      if (!m) break;
      add(*m);
      if (before > 0 && alarms_.Get(r.alarm()).empty()) {
        if (known) {
          LOG_WARN("alarm disarmed", {{"alarm", type}, {"from", Hex(r.memberid())}});
        } else {
          LOG_WARN("unimplemented alarm deactivation", {{"alarm", AlarmText({r.memberid(), r.alarm()})}});
        }
      }
      break;
    }
    default:
      break;
  }
  return Status::OK();
}
namespace {
// go-humanize's Bytes (SI units), as etcd logs sizes: "57 kB", "2.1 GB".
std::string HumanBytes(int64_t n) {
  static const char* units[] = {"B", "kB", "MB", "GB", "TB", "PB", "EB"};
  if (n < 10) return std::to_string(n) + " B";
  double v = static_cast<double>(n);
  int e = 0;
  while (v >= 1000 && e < 6) {
    v /= 1000;
    e++;
  }
  char b[32];
  std::snprintf(b, sizeof b, v < 10 ? "%.1f %s" : "%.0f %s", v, units[e]);
  return b;
}
}  // namespace

void KvServer::RunDefrag(std::vector<Done>& waiters) {
  // Runs between batches on the apply thread: no write is applied meanwhile
  // (etcd holds the backend's batch lock), reads wait only for the file swap.
  LOG_INFO("starting defragment");
  probe_.defrag_inflight.Set(1);
  const std::string path = opts_.member_dir + "/snap/db";
  const auto before = store_->Size();
  LOG_INFO("defragmenting", {{"path", path},
                             {"current-db-size-bytes", before.total_bytes},
                             {"current-db-size", HumanBytes(before.total_bytes)},
                             {"current-db-size-in-use-bytes", before.in_use_bytes},
                             {"current-db-size-in-use", HumanBytes(before.in_use_bytes)}});
  const auto t0 = Clock::now();
  Status s = store_->Defrag();
  const double took = std::chrono::duration<double>(Clock::now() - t0).count();
  if (s.ok()) {
    probe_.defrag_seconds.Observe(took);
    // Everything applied so far is in the fsynced copy.
    synced_applied_.store(applied_.load());
    const auto after = store_->Size();
    LOG_INFO("defragmented", {{"path", path},
                              {"current-db-size-bytes-diff", after.total_bytes - before.total_bytes},
                              {"current-db-size-bytes", after.total_bytes},
                              {"current-db-size", HumanBytes(after.total_bytes)},
                              {"current-db-size-in-use-bytes-diff", after.in_use_bytes - before.in_use_bytes},
                              {"current-db-size-in-use-bytes", after.in_use_bytes},
                              {"current-db-size-in-use", HumanBytes(after.in_use_bytes)},
                              {"took", std::to_string(took * 1000) + "ms"}});
    LOG_INFO("finished defragment");
  } else {
    LOG_WARN("failed to defragment", {{"error", s.ToString()}});
  }
  probe_.defrag_inflight.Set(0);
  for (auto& d : waiters) d(s);
  waiters.clear();
}
}  // namespace engram::kv
