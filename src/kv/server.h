// KvServer: one Engram member's core, without any network code.
//
// The write path (docs/architecture.md has the picture):
//
//   caller thread         raft thread                      apply thread
//   -------------         -----------                      ------------
//   validate, encode  ->  queue -> RawNode::Propose  ...
//   Propose()             GetReady: WAL Append (all
//                         queued proposals) + ONE
//                         fdatasync (group commit),
//                         MemoryStorage, Advance   ->  committed entries ->
//                                                      one LMDB write txn per
//                                                      batch, applied index in
//                                                      the same txn; commit;
//                                                      publish revision; reply
//
// When no write is in progress, a client's write (Caller::kClient) skips
// both hand-offs: its own thread runs the raft pass, releases the raft stage,
// then runs the apply. The two stages stay apart: whoever holds the raft
// stage (raft_running_) never touches LMDB, whoever holds the apply stage
// (apply_running_) is the only LMDB writer, and entries are applied in order.
//
// The apply stage applies the committed entry's bytes, never the caller's
// request object: a proposal id only routes the reply to the caller
// (wait.h). The raft stage never applies or compacts, so the raft thread's
// ticks keep their cadence. A proposal not applied within the request
// timeout (etcd: 5s + 2 x election timeout) fails with "etcdserver: request
// timed out" (the timeout thread), even when the raft thread is stuck in an
// fsync; its entry may still commit and apply later, as in etcd.
//
// Replies are sent after apply, so a write a client saw acknowledged is both
// in the fsynced WAL and visible to every later read. LMDB commits do not
// fsync (MDB_NOSYNC); a backend syncer thread makes them durable every
// --backend-batch-interval (or --backend-batch-limit entries), and only then
// may WAL segments below the durable applied index (minus
// --snapshot-catchup-entries) be released, every --snapshot-count entries.
// After a crash the store's applied index says where WAL replay starts, so no
// entry is applied twice or skipped.
//
// Reads are served from the MVCC store on the caller's thread. A linearizable
// read (Range or read-only Txn without serializable) first gets a read index
// through raft (ReadIndex, batched: one request for every read waiting when
// the raft thread runs, as etcd's linearizableReadLoop) and waits until that
// index is applied, with the request timeout: a stuck WAL fsync or raft loop
// makes linearizable reads (and /health, /readyz) time out, while serializable
// reads (and /livez) are served locally.
//
// Thread-safety: all public methods are thread-safe.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "engrampb/internal.pb.h"
#include "etcdserverpb/rpc.pb.h"
#include "src/common/probe.h"
#include "src/common/status.h"
#include "src/kv/alarms.h"
#include "src/kv/compactor.h"
#include "src/kv/id_gen.h"
#include "src/kv/wait.h"
#include "src/lease/lessor.h"
#include "src/kv/watch.h"
#include "src/mvcc/store.h"
#include "src/raft/raw_node.h"
#include "src/wal/wal.h"

namespace engram::kv {

// The etcd version Engram presents (Status.version, /version, the
// etcd_server_version and etcd_cluster_version metrics, the /health body
// format): etcd API 3.6.0 by default; ENGRAM_EMULATE_ETCD_VERSION=3.4.23 makes
// it present itself as that etcd (docs/observability.md).
struct EtcdVersion {
  std::string server;   // "3.6.0"
  std::string cluster;  // "3.6"
  bool health_reason;   // /health carries "reason" (3.5+)
};
const EtcdVersion& EmulatedVersion();
inline constexpr const char* kStorageVersion = "3.6.0";

// The largest --quota-backend-bytes the backend can map (LMDB maps the whole
// file into the address space): 1 TiB.
inline constexpr int64_t kMaxQuotaBytes = 1LL << 40;
// The LMDB map for a quota: twice the quota, and at least 1 GiB more than it
// (room for what is written past the quota check: deletes, compaction,
// defragmentation's bookkeeping); 64 GiB without a quota. Address space only:
// the file grows as data does.
inline uint64_t BackendMapBytes(int64_t quota_bytes) {
  if (quota_bytes == 0) quota_bytes = 2147483648LL;
  if (quota_bytes < 0) return 64ull << 30;
  const uint64_t q = static_cast<uint64_t>(quota_bytes);
  return std::max<uint64_t>(2 * q, q + (1ull << 30));
}

struct Options {
  std::string name;
  std::string member_dir;  // <data-dir>/member
  std::string wal_dir;     // <data-dir>/member/wal unless --wal-dir
  std::vector<std::string> peer_urls;
  std::vector<std::string> client_urls;
  std::string cluster_token = "etcd-cluster";
  uint64_t member_id = 0;   // computed from peer URLs + token when bootstrapping
  uint64_t cluster_id = 0;

  uint64_t snapshot_count = 100000;
  uint64_t catchup_entries = 5000;
  uint32_t heartbeat_ms = 100;
  uint32_t election_ms = 1000;
  int64_t quota_bytes = 2147483648LL;  // 0: etcd's default (2 GiB); negative: no quota
  // The LMDB map (the most the backend file can grow to); 0 sizes it from the
  // quota (BackendMapBytes). Tests set it to fill the map on purpose.
  uint64_t backend_map_bytes = 0;
  uint64_t max_request_bytes = 1572864;
  uint32_t max_txn_ops = 128;
  uint64_t backend_batch_interval_ms = 100;
  uint64_t backend_batch_limit = 10000;
  uint64_t wal_segment_bytes = 64ull << 20;
  CompactionSpec compaction;  // auto compaction; disabled by default
  // Revisions removed per compaction step (--experimental-compaction-batch-limit).
  uint64_t compaction_batch_limit = 1000;
  // While writes are applied, at most one compaction step per this interval
  // (--experimental-compaction-sleep-interval); idle, steps run back to back.
  uint64_t compaction_sleep_interval_ms = 10;
  // engram_mvcc_prefix_{keys,bytes}: live keys/bytes per key prefix of this
  // many '/'-separated segments (--metrics-prefix-depth; 0 disables).
  int metrics_prefix_depth = 2;
  // --watch-progress-notify-interval (0 = etcd's default, 10 minutes; below
  // 100ms is raised to 100ms, as etcd does).
  uint64_t watch_progress_notify_interval_ms = 600000;
  // --watch-stream-buffer-bytes: per watch stream memory budget (watch.h).
  uint64_t watch_stream_buffer_bytes = 8u << 20;
  // How long a proposal or a linearizable read may wait (0 = etcd's
  // ReqTimeout: 5s + 2 x election timeout).
  uint64_t request_timeout_ms = 0;
  // Raft: pre-vote (--pre-vote, on by default as in etcd 3.6) and check-quorum
  // (always on, as etcd sets it).
  bool pre_vote = true;
  bool check_quorum = true;
  // Lease checkpointing (--experimental-enable-lease-checkpoint): the leader
  // records the remaining TTL of leases longer than the interval every
  // interval (etcd: 5 minutes; tests shorten it), persisted as etcd 3.6 does.
  bool lease_checkpoint = false;
  uint64_t lease_checkpoint_interval_ms = 300000;
  // --warning-apply-duration: a request slower than this counts as a slow
  // apply (etcd_server_slow_apply_total) and is logged.
  uint64_t warning_apply_duration_ms = 100;
};

// Histograms for a fixed set of kinds x success (labels op/type and success),
// all created up front. at(kind, success).
class LabeledHistograms {
 public:
  LabeledHistograms(int kinds, const std::vector<double>& bounds) {
    for (int i = 0; i < kinds * 2; i++) h_.push_back(std::make_unique<Histogram>(bounds));
  }
  Histogram& at(int kind, bool success) { return *h_[kind * 2 + (success ? 1 : 0)]; }
  const Histogram& at(int kind, bool success) const { return *h_[kind * 2 + (success ? 1 : 0)]; }
  int kinds() const { return static_cast<int>(h_.size() / 2); }

 private:
  std::vector<std::unique_ptr<Histogram>> h_;
};

// Request types of the end-to-end latency (etcd 3.7's type label).
enum RequestType : int { kReqRange, kReqPut, kReqDeleteRange, kReqTxn, kReqReadonlyTxn, kReqCompaction, kRequestTypes };
inline constexpr const char* kRequestTypeNames[kRequestTypes] = {"Range", "Put", "DeleteRange",
                                                                 "Txn", "ReadonlyTxn", "Compaction"};
// Applied entry kinds (etcd's op label of etcd_server_apply_duration_seconds).
enum ApplyOp : int {
  kOpPut, kOpDeleteRange, kOpTxn, kOpCompaction, kOpAlarm, kOpLeaseGrant, kOpLeaseRevoke,
  kOpLeaseCheckpoint, kOpClusterMemberAttrSet, kOpClusterVersionSet, kOpUnknown, kApplyOps
};
inline constexpr const char* kApplyOpNames[kApplyOps] = {
    "Put", "DeleteRange", "Txn", "Compaction", "Alarm", "LeaseGrant", "LeaseRevoke",
    "LeaseCheckpoint", "ClusterMemberAttrSet", "ClusterVersionSet", "unknown"};

// What the server counts (read by exporter/).
struct ServerProbe {
  Gauge proposals_pending;
  Counter proposals_failed;
  Gauge proposals_committed;  // commit index
  Gauge proposals_applied;    // applied index
  Counter slow_apply;
  // etcd_server_slow_read_indexes_total: a read index that came back for an
  // older request, or did not come back within the request timeout.
  Counter slow_read_indexes;
  // Linearizable reads served at once by a single-voter leader (no trip
  // through the raft thread; see AfterLinearizable). Not an etcd metric.
  Counter local_reads;
  // Writes a kClient caller ran itself (raft pass, then apply; see
  // KvServer::Caller), and of those, the ones whose apply it also ran. Not
  // etcd metrics.
  Counter inline_writes, inline_applies;
  Gauge has_leader, is_leader;
  Counter leader_changes;
  // etcd_server_apply_duration_seconds{version="v3",op,success}: one applied
  // normal entry, by ApplyOp (B12).
  LabeledHistograms apply_seconds{kApplyOps, BucketsB12()};
  // End to end, from the KvServer call to its completion, by RequestType
  // (B1): engram_server_request_duration_seconds and etcd 3.7's
  // etcd_server_request_duration_seconds{type,success}.
  LabeledHistograms request_seconds{kRequestTypes, BucketsB1()};
  // etcd_server_range_duration_seconds{success}: store execution of one
  // Range (B12); kind 0 only.
  LabeledHistograms range_seconds{1, BucketsB12()};
  // Startup fsync latency of the WAL disk (disk_check.h), in nanoseconds
  // (engram_disk_startup_fsync_seconds and _p99).
  Gauge startup_fsync_p50_ns, startup_fsync_p99_ns;
  // Defragmentation, set by the defrag path: 1 while one runs
  // (etcd_disk_defrag_inflight) and each one's duration
  // (etcd_disk_backend_defrag_duration_seconds, B4).
  Gauge defrag_inflight;
  Histogram defrag_seconds{Histogram::Exponential(0.1, 2, 13)};
};

struct MemberInfo {
  uint64_t id = 0;
  std::string name;
  std::vector<std::string> peer_urls;
  std::vector<std::string> client_urls;
  bool is_learner = false;
};

struct StatusInfo {
  uint64_t leader = 0;
  uint64_t term = 0;
  uint64_t commit_index = 0;
  uint64_t applied_index = 0;
  int64_t db_size = 0;
  int64_t db_size_in_use = 0;
  int64_t revision = 0;
};

class KvServer {
 public:
  // Opens (or bootstraps) the member: locks the data dir, opens the store and
  // the WAL, replays, starts the raft, apply and syncer threads, campaigns, and
  // returns once the member has published itself and applied everything the
  // WAL held (ready to serve).
  static Result<std::unique_ptr<KvServer>> Open(const Options& opts);
  ~KvServer();

  // Stops accepting proposals, fails queued ones with "server stopped", drains
  // the apply loop, syncs the store and the WAL. Idempotent.
  void Stop();
  // The server is about to stop: the leader stops revoking expired leases
  // and proposing checkpoints (leases get their TTL again at the next start,
  // as etcd, so none is lost to a slow shutdown). Idempotent.
  void Quiesce() { quiescing_.store(true); }

  // ---- writes: asynchronous; done runs after apply ----
  using Done = kv::Done;
  // Who proposes a write. kInternal: it is queued for the raft thread and
  // done runs on the apply (or timeout) thread; the caller never blocks.
  // kClient: a client's request on a thread that may block for a while (a
  // gRPC handler). When no other write is in flight, few were lately, and
  // the raft stage is free (no other caller writing inline), the caller runs
  // the write itself: a raft pass (WAL append and fdatasync) as the raft
  // thread would, then, with the raft stage released and if the apply stage
  // is free, the apply as the apply thread would: done then runs on the
  // caller before Put returns (otherwise the apply thread applies the entry
  // and runs done). That saves two thread wake-ups per write on a lightly
  // loaded member; concurrent writes queue for the raft thread and commit in
  // groups as with kInternal. At most one caller writes inline at a time
  // (Propose, server_raft.cc).
  enum class Caller { kInternal, kClient };
  // The request and response objects must stay alive until done runs.
  void Put(const etcdserverpb::PutRequest* req, etcdserverpb::PutResponse* resp, Done done,
           Caller caller = Caller::kInternal);
  void DeleteRange(const etcdserverpb::DeleteRangeRequest* req, etcdserverpb::DeleteRangeResponse* resp, Done done,
                   Caller caller = Caller::kInternal);
  // Read-only txns are served locally: a serializable one before Txn returns,
  // a linearizable one on a reader thread once its read index is applied.
  void Txn(const etcdserverpb::TxnRequest* req, etcdserverpb::TxnResponse* resp, Done done,
           Caller caller = Caller::kInternal);
  void Compact(const etcdserverpb::CompactionRequest* req, etcdserverpb::CompactionResponse* resp, Done done);

  // ---- reads ----
  // Synchronous (tests, the health checks): a linearizable one blocks the
  // caller until its read index is applied.
  Status Range(const etcdserverpb::RangeRequest& req, etcdserverpb::RangeResponse* resp);
  // For the gRPC handlers: a serializable Range runs at once, on the caller's
  // thread; a linearizable one runs on a reader thread once its read index is
  // applied, so no gRPC thread waits for raft. done runs exactly once.
  void RangeAsync(const etcdserverpb::RangeRequest* req, etcdserverpb::RangeResponse* resp, Done done);

  // Fills cluster_id, member_id, raft_term, and revision if it is 0.
  void FillHeader(etcdserverpb::ResponseHeader* h) const;

  StatusInfo GetStatus() const;
  // Maintenance.HashKV / Hash (local reads, src/mvcc/hash.cc) and
  // MoveLeader (a single member: only itself is a valid transferee).
  Status HashKV(int64_t rev, etcdserverpb::HashKVResponse* resp) const;
  Status Hash(etcdserverpb::HashResponse* resp) const;
  Status MoveLeader(uint64_t target) const;
  std::vector<MemberInfo> Members() const;
  // ---- alarms, quota, defragmentation (src/kv/alarms.h) ----
  // Maintenance.Alarm: GET / ACTIVATE / DEACTIVATE, all through raft as in
  // etcd; resp gets etcd's answer (no header). GET ignores the member id and
  // lists every alarm of the type (NONE: of every type).
  void Alarm(const etcdserverpb::AlarmRequest* req, etcdserverpb::AlarmResponse* resp, Done done);
  // Maintenance.Defragment: compacts the backend file (mvcc::Store::Defrag)
  // on the apply thread, between batches: writes wait while it runs.
  void Defragment(Done done);
  // Active alarm type names ("NOSPACE", "CORRUPT"), for /health.
  std::vector<std::string> ActiveAlarms() const;
  // Active alarms with their member ids, in activation order.
  std::vector<AlarmInfo> Alarms() const { return alarms_.Get(); }
  // Every (member, type) active at some point since open, with whether it is
  // active now (etcd_debugging_server_alarms: 1 / 0).
  std::vector<AlarmStore::Seen> AlarmsForMetrics() const { return alarms_.SeenAlarms(); }
  // The backend quota (etcd's quotaKVServer / quotaLeaseServer), checked
  // before a write is proposed: false if the file size + cost reaches
  // --quota-backend-bytes (cost 0 or a negative quota: always true). Put and
  // Txn check it themselves; LeaseGrant is to do as etcd: if
  // (!QuotaAvailable(kQuotaLeaseOverhead)) return RaiseNoSpace(done); and its
  // apply is refused while NOSPACE is active (AlarmGate).
  bool QuotaAvailable(int64_t cost) const;
  // Proposes ACTIVATE NOSPACE for this member, then fails done with "etcdserver:
  // mvcc: database space exceeded" whatever became of the proposal.
  void RaiseNoSpace(Done done);

  uint64_t member_id() const { return member_id_; }
  uint64_t cluster_id() const { return cluster_id_; }
  const Options& options() const { return opts_; }
  const mvcc::Store& store() const { return *store_; }

  // A linearizable read's barrier: fn(OK) runs once this member has applied
  // everything committed when it was called, confirmed through raft's
  // ReadIndex (on a reader thread), or at once on the caller's thread when
  // this member is the only voter and the leader (LocalReadReady); fn(error)
  // on timeout ("etcdserver: request timed out") or stop ("etcdserver:
  // server stopped"), on any thread. Runs exactly once. WaitLinearizable
  // blocks the caller for the same.
  void AfterLinearizable(Done fn);
  Status WaitLinearizable();
  // The request timeout in effect (Options::request_timeout_ms resolved).
  std::chrono::milliseconds request_timeout() const { return request_timeout_; }
  // The raft configuration flags in effect (what --pre-vote set).
  bool pre_vote() const { return opts_.pre_vote; }
  bool check_quorum() const { return opts_.check_quorum; }
  // Raft ticks so far (the raft thread's cadence; tests and /status).
  uint64_t ticks() const { return ticks_.load(std::memory_order_relaxed); }
  // Raft's membership as loaded at start (from the persisted member list).
  raft::ConfState conf_state() const { return storage_->conf_state(); }

  // ---- leases (src/lease; etcd's Lease service) ----
  // Grant and Revoke go through raft; the ID is chosen here when the client
  // leaves it 0. Revoke deletes every attached key in one revision.
  void LeaseGrant(const etcdserverpb::LeaseGrantRequest* req, etcdserverpb::LeaseGrantResponse* resp, Done done);
  void LeaseRevoke(const etcdserverpb::LeaseRevokeRequest* req, etcdserverpb::LeaseRevokeResponse* resp, Done done);
  // Keepalive (local to this member, the leader): the lease's TTL, or
  // "requested lease not found". With checkpointing, a lease that has a
  // recorded remaining TTL first gets a checkpoint of 0 through raft (etcd),
  // so done may run later, on another thread; otherwise it runs at once.
  void LeaseRenew(int64_t id, std::function<void(Result<int64_t>)> done);
  Result<int64_t> LeaseRenew(int64_t id);  // waits (tests)
  // TimeToLive: an unknown lease answers TTL -1, as etcd.
  void LeaseTimeToLive(const etcdserverpb::LeaseTimeToLiveRequest& req, etcdserverpb::LeaseTimeToLiveResponse* resp);
  void LeaseLeases(etcdserverpb::LeaseLeasesResponse* resp);
  lease::LeaseProbe& lease_probe() { return lease_probe_; }
  const lease::Lessor& lessor() const { return *lessor_; }

  // Tests: proposes a Put under a caller-chosen proposal id (production ids
  // collide only by accident; the apply path must cope).
  void PutWithIdForTesting(uint64_t id, const etcdserverpb::PutRequest* req, etcdserverpb::PutResponse* resp,
                           Done done);

  ServerProbe& probe() { return probe_; }
  wal::WalProbe& wal_probe() { return wal_probe_; }
  mvcc::MvccProbe& mvcc_probe() { return mvcc_probe_; }
  raft::RaftProbe& raft_probe() { return raft_probe_; }
  WatchProbe& watch_probe() { return watch_probe_; }
  // Watch streams (server/watch_service.cc); valid from Open until destruction.
  WatchHub& watch_hub() { return *watch_; }

 private:
  struct Proposal {
    uint64_t id = 0;
    std::string data;  // encoded engrampb.InternalRequest: what is applied
    // The caller's response object, filled by the apply thread from the
    // committed entry (may be null).
    google::protobuf::Message* resp = nullptr;
    std::chrono::steady_clock::time_point deadline;
    Done done;
    Caller caller = Caller::kInternal;
  };
  // A linearizable read waiting for its read index, then for that index to
  // be applied (server_raft.cc). Whoever sets finished first runs fn.
  struct ReadWaiter {
    Done fn;
    std::atomic<bool> finished{false};
    std::chrono::steady_clock::time_point deadline;
  };
  void FinishRead(const std::shared_ptr<ReadWaiter>& w, const Status& s);
  // Hands reads whose index is applied to the reader threads, parks others
  // until the apply thread reaches their index.
  void ReadIndexResolved(std::vector<std::shared_ptr<ReadWaiter>>& ws, uint64_t index);
  void WakeParkedReads(uint64_t applied);  // apply thread, after applied_ moved
  void ReaderLoop();

  explicit KvServer(const Options& opts);
  Status Init();
  void Propose(Proposal p);
  template <class Req>
  void ProposeRequest(engrampb::InternalRequest::RequestCase kind, int field, const Req* req,
                      google::protobuf::Message* resp, Done done, Caller caller = Caller::kInternal);
  Status ProposeAndWait(engrampb::InternalRequest ir);
  // Fails a proposal that was not applied (timeout, no leader, stopped).
  void FailProposal(Done& done, const Status& s);

  void RaftLoop();      // server_raft.cc
  // One raft pass, by whoever holds the raft stage (raft_running_): the
  // batch proposed, one ReadIndex for the reads, every Ready persisted (WAL
  // append and fdatasync) and its committed entries handed on. With
  // apply_here, the entries go there (and the caller holds the apply stage,
  // apply_running_) when the apply stage is free; otherwise, and always
  // without it, to the apply thread. Returns whether it took the apply stage.
  bool RaftPass(std::vector<Proposal>& batch, std::vector<std::shared_ptr<ReadWaiter>>& reads,
                std::vector<raft::Entry>* apply_here);
  // Propose, kClient, nothing in progress: the caller runs the write (above).
  void WriteInline(std::unique_lock<std::mutex> prop_lock, Proposal p);
  void TimeoutLoop();   // server_raft.cc
  void SyncLoop();      // server_raft.cc
  void ApplyLoop();     // server_apply.cc, and below
  void ApplyEntries(std::vector<raft::Entry>& entries);  // holds the apply stage
  void AnswerPhysicalWaiters();                          // holds the apply stage
  Status ApplyOne(mvcc::Store::Batch& b, const raft::Entry& e, google::protobuf::Message* resp,
                  engrampb::InternalRequest* ir);
  void ApplyConfChange(mvcc::Store::Batch& b, const raft::Entry& e);
  Status ApplyInternal(mvcc::Store::Batch& b, const engrampb::InternalRequest& ir, google::protobuf::Message* resp);
  // Alarms (etcd's applierV3Capped/Corrupt and applierV3backend.Alarm).
  Status AlarmGate(engrampb::InternalRequest::RequestCase kind, const google::protobuf::Message* req) const;
  Status ApplyAlarm(mvcc::Store::Batch& b, const etcdserverpb::AlarmRequest& r, etcdserverpb::AlarmResponse* resp);
  void RunDefrag(std::vector<Done>& waiters);  // apply thread
  void RaiseNoSpaceAfterMapFull();              // apply thread
  void LoadMembers();
  void CheckDisk();  // startup fsync latency (disk_check.h), metrics and a warning

  const Options opts_;
  uint64_t member_id_ = 0, cluster_id_ = 0;
  int lock_fd_ = -1;

  ServerProbe probe_;
  wal::WalProbe wal_probe_;
  mvcc::MvccProbe mvcc_probe_;
  raft::RaftProbe raft_probe_;
  WatchProbe watch_probe_;
  lease::LeaseProbe lease_probe_;

  std::unique_ptr<mvcc::Store> store_;
  std::unique_ptr<lease::Lessor> lessor_;  // replicated lease state: apply thread writes (lessor.h)
  Status LoadLeases();                      // Init: leases from the store, keys attached, TTLs promoted
  void RevokeExpiredLeases();               // timeout thread: propose revokes (etcd: 1000/s at most)
  void CheckpointLeases();                  // timeout thread: propose due lease checkpoints
  void ProposeCheckpoints(const std::vector<std::pair<int64_t, int64_t>>& cps, Done done);
  // etcd's warnOfExpensiveRequest: a request (an applied entry, a Range)
  // that took longer than --warning-apply-duration counts in slow_apply and
  // logs "apply request took too long".
  void WarnIfSlow(std::chrono::steady_clock::time_point start, const char* what);
  std::atomic<bool> quiescing_{false};      // Quiesce(): no lease revokes or checkpoints
  double revoke_tokens_ = 0;                // timeout thread: the revoke rate limit's bucket
  std::chrono::steady_clock::time_point revoke_refill_{};  // and when it was last filled
  std::unique_ptr<wal::Wal> wal_;                    // raft stage only (after Init)
  std::unique_ptr<raft::MemoryStorage> storage_;
  std::unique_ptr<raft::RawNode> node_;              // raft stage only (after Init)

  std::unique_ptr<IdGenerator> ids_;  // proposal ids (id_gen.h)
  std::chrono::milliseconds request_timeout_{7000};
  std::atomic<uint64_t> ticks_{0};
  std::atomic<uint64_t> term_{0}, leader_{0}, commit_{0};
  std::atomic<uint64_t> applied_{0};
  // Local linearizable reads (single voter, leader): the raft thread sets
  // local_read_floor_ to raft's LocalReadIndex when this member's term first
  // allows it, 0 when not. A read may then run at once on the store once
  // applied_ >= the floor: every write acknowledged before it is applied (a
  // reply follows its batch's commit), and the floor covers what earlier
  // terms and an earlier process committed. Not while the raft thread has
  // been busy in one pass (a WAL write and fsync, say) for longer than a
  // heartbeat: a stuck disk or raft loop fails linearizable reads with a
  // timeout, as with etcd, so health checks that read tell the truth.
  bool LocalReadReady() const;
  std::atomic<uint64_t> local_read_floor_{0};
  std::atomic<int64_t> raft_busy_since_ns_{0};  // steady clock; 0 = the raft thread waits for work
  std::atomic<uint64_t> synced_applied_{0};
  std::atomic<uint64_t> release_to_{0};  // set by the syncer, done by the raft thread
  std::atomic<bool> stopping_{false};

  // Proposal queue (callers -> raft thread).
  std::mutex prop_mu_;
  std::condition_variable prop_cv_;
  std::vector<Proposal> prop_queue_;  // guarded by prop_mu_
  bool raft_wakeup_ = false;          // guarded by prop_mu_
  // The raft stage: whoever sets it (the raft thread, or a kClient caller
  // writing inline) owns node_, wal_, storage_ and the raft-thread-only
  // state below until it clears it; both under prop_mu_.
  bool raft_running_ = false;   // guarded by prop_mu_
  bool inline_writer_ = false;  // guarded by prop_mu_: a caller is writing inline (raft pass, then apply)
  bool raft_stage_wanted_ = false;  // guarded by prop_mu_: the raft thread waits for the stage
  int64_t in_flight_avg_ = 0;   // guarded by prop_mu_: writes in flight at a proposal, x256, moving average (Propose)

  // Linearizable reads: queued by readers (under prop_mu_), then sent as one
  // ReadIndex per raft-loop pass, keyed by its context (raft stage only).
  std::vector<std::shared_ptr<ReadWaiter>> read_queue_;  // guarded by prop_mu_
  struct ReadBatch {
    std::vector<std::shared_ptr<ReadWaiter>> waiters;
    std::chrono::steady_clock::time_point sent;
  };
  std::unordered_map<std::string, ReadBatch> reads_in_flight_;  // raft stage only
  uint64_t read_seq_ = 0;                                       // raft stage only
  uint64_t local_read_term_ = 0;  // raft stage only: the term local_read_floor_ was set in
  uint64_t last_lead_ = 0;        // raft stage only: the leader the last soft state named
  // Reads whose index is known but not applied yet, by index.
  std::mutex parked_mu_;
  std::multimap<uint64_t, std::shared_ptr<ReadWaiter>> parked_reads_;  // guarded by parked_mu_
  // Every outstanding read in deadline order (the timeout thread fails the
  // late ones; finished ones are dropped from the front).
  std::mutex read_deadline_mu_;
  std::deque<std::shared_ptr<ReadWaiter>> read_deadlines_;  // guarded by read_deadline_mu_
  // Reader threads: run reads whose index is applied.
  std::mutex reader_mu_;
  std::condition_variable reader_cv_;
  std::deque<std::shared_ptr<ReadWaiter>> ready_reads_;  // guarded by reader_mu_
  bool readers_stop_ = false;                           // guarded by reader_mu_
  std::vector<std::thread> reader_threads_;

  // Proposals handed to raft, waiting for their entry to apply (raft thread
  // registers, apply thread and timeout thread take).
  WaitRegistry waits_;
  // Committed entries (raft thread -> apply thread).
  std::mutex apply_mu_;
  std::condition_variable apply_cv_;
  std::vector<raft::Entry> apply_queue_;  // guarded by apply_mu_
  bool apply_done_ = false;               // guarded by apply_mu_
  // The apply stage: whoever sets it (the apply thread, or a caller writing
  // inline) is the only LMDB writer until it clears it, and owns the
  // apply-thread-only state below (physical_waiters_, map_full_retry_).
  bool apply_running_ = false;  // guarded by apply_mu_
  std::vector<Done> defrag_waiters_;      // guarded by apply_mu_: Defragment calls to run

  AlarmStore alarms_;
  bool map_full_retry_ = false;         // apply stage: re-applying a batch after a full map (refuse writes)
  std::vector<Done> physical_waiters_;  // apply stage: physical compactions waiting for the removal to end

  // Applied-index waiters.
  std::mutex applied_mu_;
  std::condition_variable applied_cv_;

  // Timeout thread: fails proposals past their deadline.
  std::mutex timeout_mu_;
  std::condition_variable timeout_cv_;
  bool timeout_stop_ = false;  // guarded by timeout_mu_

  // Syncer.
  std::mutex sync_mu_;
  std::condition_variable sync_cv_;
  bool sync_stop_ = false;  // guarded by sync_mu_

  mutable std::mutex members_mu_;
  std::vector<MemberInfo> members_;  // guarded by members_mu_
  std::string cluster_version_;      // guarded by members_mu_

  std::unique_ptr<Compactor> compactor_;
  std::unique_ptr<WatchHub> watch_;  // created in Init, before the apply thread
  std::thread raft_thread_, apply_thread_, sync_thread_, timeout_thread_;
  std::once_flag stop_once_;
};

}  // namespace engram::kv
