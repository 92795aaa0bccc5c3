#include "src/kv/server.h"
#include "src/kv/server_internal.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <random>

#include "src/common/coding.h"
#include "src/common/failpoint.h"
#include "src/common/log.h"
#include "src/kv/alarms.h"
#include "src/kv/apply.h"
#include "src/kv/disk_check.h"
#include "src/kv/errors.h"
#include "src/kv/validate.h"

namespace engram::kv {
using internal::Hex;
namespace {

using Clock = std::chrono::steady_clock;
using engrampb::InternalRequest;


void PutVarint(std::string* s, uint64_t v) {
  while (v >= 0x80) {
    s->push_back(static_cast<char>(v | 0x80));
    v >>= 7;
  }
  s->push_back(static_cast<char>(v));
}

// Encodes an engrampb.InternalRequest {id, <field>: req} without building one
// (one serialization straight into the entry's buffer).
std::string EncodeRequest(uint64_t id, int field, const google::protobuf::MessageLite& req) {
  size_t n = req.ByteSizeLong();
  std::string out;
  out.reserve(n + 24);
  out.push_back(0x08);
  PutVarint(&out, id);
  PutVarint(&out, (static_cast<uint64_t>(field) << 3) | 2);
  PutVarint(&out, n);
  size_t off = out.size();
  out.resize(off + n);
  req.SerializeWithCachedSizesToArray(reinterpret_cast<uint8_t*>(&out[off]));
  return out;
}

std::vector<MemberInfo> DecodeMembers(const std::string& s) {
  std::vector<MemberInfo> out;
  size_t pos = 0;
  while (pos + 4 <= s.size()) {
    uint32_t n = DecodeFixed32(s.data() + pos);
    pos += 4;
    if (pos + n > s.size()) ENGRAM_PANIC("corrupt member list in the store");
    engrampb::Member pm;
    if (!pm.ParseFromArray(s.data() + pos, static_cast<int>(n))) ENGRAM_PANIC("corrupt member in the store");
    pos += n;
    MemberInfo m;
    m.id = pm.id();
    m.name = pm.name();
    m.peer_urls.assign(pm.peer_urls().begin(), pm.peer_urls().end());
    m.client_urls.assign(pm.client_urls().begin(), pm.client_urls().end());
    m.is_learner = pm.is_learner();
    out.push_back(std::move(m));
  }
  return out;
}

std::string EncodeWalMetadata(uint64_t member_id, uint64_t cluster_id) {
  std::string m;
  PutFixed64(&m, member_id);
  PutFixed64(&m, cluster_id);
  return m;
}

// metrics: observes a request's end-to-end latency when its completion runs.
KvServer::Done TimeRequest(LabeledHistograms* h, RequestType type, KvServer::Done done) {
  return [h, type, start = Clock::now(), done = std::move(done)](const Status& s) {
    h->at(type, s.ok()).ObserveSince(start);
    done(s);
  };
}

}  // namespace

namespace internal {
std::string EncodeMembers(const std::vector<MemberInfo>& ms) {
  std::string out;
  for (const auto& m : ms) {
    engrampb::Member pm;
    pm.set_id(m.id);
    pm.set_name(m.name);
    for (const auto& u : m.peer_urls) pm.add_peer_urls(u);
    for (const auto& u : m.client_urls) pm.add_client_urls(u);
    pm.set_is_learner(m.is_learner);
    std::string b = pm.SerializeAsString();
    PutFixed32(&out, static_cast<uint32_t>(b.size()));
    out += b;
  }
  return out;
}

// metrics: the op label of etcd_server_apply_duration_seconds.
ApplyOp ApplyOpOf(InternalRequest::RequestCase kind) {
  switch (kind) {
    case InternalRequest::kPut: return kOpPut;
    case InternalRequest::kDeleteRange: return kOpDeleteRange;
    case InternalRequest::kTxn: return kOpTxn;
    case InternalRequest::kCompaction: return kOpCompaction;
    case InternalRequest::kAlarm: return kOpAlarm;
    case InternalRequest::kLeaseGrant: return kOpLeaseGrant;
    case InternalRequest::kLeaseRevoke: return kOpLeaseRevoke;
    case InternalRequest::kLeaseCheckpoint: return kOpLeaseCheckpoint;
    case InternalRequest::kPublish: return kOpClusterMemberAttrSet;
    case InternalRequest::kClusterVersion: return kOpClusterVersionSet;
    default: return kOpUnknown;
  }
}

}  // namespace internal

const EtcdVersion& EmulatedVersion() {
  static const EtcdVersion v = [] {
    const char* env = std::getenv("ENGRAM_EMULATE_ETCD_VERSION");
    std::string server = env && *env ? env : "3.6.0";
    size_t dot = server.find('.', server.find('.') + 1);
    std::string cluster = dot == std::string::npos ? server : server.substr(0, dot);
    bool reason = !(cluster == "3.0" || cluster == "3.1" || cluster == "3.2" || cluster == "3.3" || cluster == "3.4");
    return EtcdVersion{server, cluster, reason};
  }();
  return v;
}

KvServer::KvServer(const Options& opts) : opts_(opts) {}

KvServer::~KvServer() {
  Stop();
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

Result<std::unique_ptr<KvServer>> KvServer::Open(const Options& opts) {
  std::unique_ptr<KvServer> s(new KvServer(opts));
  Status st = s->Init();
  if (!st.ok()) {
    s->Stop();
    return st;
  }
  return s;
}

Status KvServer::Init() {
  std::error_code ec;
  std::filesystem::create_directories(opts_.member_dir, ec);
  if (ec) return Status::IOError("cannot create data dir " + opts_.member_dir + ": " + ec.message());
  ::chmod(std::filesystem::path(opts_.member_dir).parent_path().c_str(), 0700);
  std::filesystem::create_directories(std::filesystem::path(opts_.wal_dir).parent_path(), ec);

  // One process per data dir.
  std::string lock_path = opts_.member_dir + "/engram.lock";
  lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock_fd_ < 0) return Status::Errno("open", lock_path, errno);
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    return Status::FailedPrecondition("data dir " + std::filesystem::path(opts_.member_dir).parent_path().string() +
                                      " is in use by another engram process (lock " + lock_path + " is held)");
  }

  if (opts_.quota_bytes > kMaxQuotaBytes) {
    return Status::InvalidArgument("--quota-backend-bytes=" + std::to_string(opts_.quota_bytes) +
                                   " is more than the backend can map (" + std::to_string(kMaxQuotaBytes) +
                                   " bytes, 1 TiB); use a smaller quota (etcd suggests at most 8 GiB)");
  }
  auto t0 = Clock::now();
  mvcc::Options mo;
  mo.map_size = opts_.backend_map_bytes != 0 ? opts_.backend_map_bytes : BackendMapBytes(opts_.quota_bytes);
  mo.dir = opts_.member_dir + "/snap";
  mo.probe = &mvcc_probe_;
  mo.prefix_depth = opts_.metrics_prefix_depth;
  mo.compaction_batch_limit = std::max<uint64_t>(1, opts_.compaction_batch_limit);
  auto store = mvcc::Store::Open(mo);
  if (!store.ok()) return store.status();
  store_ = std::move(*store);
  LOG_INFO("opened backend db", {{"path", mo.dir + "/db"},
                                 {"map-size-bytes", static_cast<uint64_t>(mo.map_size)},
                                 {"took", std::to_string(std::chrono::duration<double, std::milli>(Clock::now() - t0).count()) + "ms"}});
  const uint64_t applied = store_->ConsistentIndex();
  const bool store_fresh = applied == 0 && store_->Rev() == 1;

  wal::Options wo;
  wo.dir = opts_.wal_dir;
  wo.segment_bytes = opts_.wal_segment_bytes;
  wo.probe = &wal_probe_;
  bool wal_exists = std::filesystem::exists(opts_.wal_dir) && !std::filesystem::is_empty(opts_.wal_dir);
  if (!wal_exists && !store_fresh) {
    return Status::Corruption("the backend " + mo.dir + "/db holds data (applied index " + std::to_string(applied) +
                              ") but the WAL dir " + opts_.wal_dir +
                              " is missing or empty; restore the WAL or remove the data dir and rejoin");
  }
  wal::ReplayResult rep;
  auto w = wal::Wal::Open(wo, EncodeWalMetadata(opts_.member_id, opts_.cluster_id), &rep);
  if (!w.ok()) return w.status();
  wal_ = std::move(*w);
  CheckDisk();

  storage_ = std::make_unique<raft::MemoryStorage>();
  if (rep.created) {
    member_id_ = opts_.member_id;
    cluster_id_ = opts_.cluster_id;
    // Bootstrap, as etcd does: the initial membership is the first entry of
    // the log (term 1), already committed.
    engrampb::ConfChange cc;
    cc.set_type(engrampb::ConfChange::ADD_NODE);
    cc.set_node_id(member_id_);
    auto* m = cc.mutable_member();
    m->set_id(member_id_);
    m->set_name(opts_.name);
    for (const auto& u : opts_.peer_urls) m->add_peer_urls(u);
    raft::Entry e;
    e.term = 1;
    e.index = 1;
    e.type = raft::EntryType::kConfChange;
    e.data = cc.SerializeAsString();
    raft::HardState hs{1, 0, 1};
    ENGRAM_RETURN_IF_ERROR(wal_->Save(hs, {e}));
    ENGRAM_RETURN_IF_ERROR(storage_->Append({e}));
    storage_->SetHardState(hs);
    LOG_INFO("starting local member", {{"local-member-id", Hex(member_id_)}, {"cluster-id", Hex(cluster_id_)}});
  } else {
    if (rep.metadata.size() != 16) return Status::Corruption("WAL metadata in " + opts_.wal_dir + " is damaged");
    member_id_ = DecodeFixed64(rep.metadata.data());
    cluster_id_ = DecodeFixed64(rep.metadata.data() + 8);
    if (!rep.entries.empty() && rep.entries.front().index > applied + 1) {
      return Status::Corruption("the WAL in " + opts_.wal_dir + " starts at index " +
                                std::to_string(rep.entries.front().index) + " but the backend applied only up to " +
                                std::to_string(applied) + ": entries in between are missing; restore from a backup");
    }
    if (rep.snapshot.index > 0) {
      // Older segments were released: the log starts after the compacted
      // prefix recorded by the last release (see RaftLoop).
      if (rep.snapshot.index > applied) {
        return Status::Corruption("the WAL in " + opts_.wal_dir + " was released up to index " +
                                  std::to_string(rep.snapshot.index) + " but the backend applied only up to " +
                                  std::to_string(applied) + ": entries in between are missing; restore from a backup");
      }
      storage_->ResetCompacted(rep.snapshot.index, rep.snapshot.term);
    }
    ENGRAM_RETURN_IF_ERROR(storage_->Append(rep.entries));
    // A commit-only hard state is written to the WAL without an fdatasync (as
    // etcd's raft allows), so after a power loss the WAL's commit can lag the
    // applied index the store synced. An entry is applied only after it was
    // committed and its WAL record synced, so the applied index is a safe
    // commit index as long as the WAL still holds that entry.
    uint64_t wal_last = rep.entries.empty() ? rep.snapshot.index : rep.entries.back().index;
    if (applied > rep.hard_state.commit && applied <= wal_last) {
      LOG_INFO("raising the WAL's commit index to the applied index",
               {{"wal-commit-index", rep.hard_state.commit}, {"applied-index", applied}});
      rep.hard_state.commit = applied;
    }
    storage_->SetHardState(rep.hard_state);
    term_.store(rep.hard_state.term);
    LOG_INFO("restarting local member",
             {{"local-member-id", Hex(member_id_)}, {"cluster-id", Hex(cluster_id_)},
              {"commit-index", rep.hard_state.commit}, {"applied-index", applied},
              {"wal-entries", static_cast<uint64_t>(rep.entries.size())}});
  }
  LoadMembers();
  ENGRAM_RETURN_IF_ERROR(LoadLeases());
  {
    // Membership as persisted (the store's member list, written with every
    // applied conf change); a fresh member starts with itself, as the
    // bootstrap conf change entry says.
    std::lock_guard<std::mutex> lk(members_mu_);
    storage_->SetConfState(internal::ConfStateFromMembers(members_, member_id_));
  }
  ENGRAM_RETURN_IF_ERROR(alarms_.Load(*store_));
  for (const auto& a : alarms_.Get()) {
    LOG_WARN("alarm active at start", {{"alarm", AlarmTypeName(a.type)}, {"from", Hex(a.member_id)}});
  }

  raft::Config rc;
  rc.id = member_id_;
  rc.voters = storage_->conf_state().voters;
  rc.pre_vote = opts_.pre_vote;
  rc.check_quorum = opts_.check_quorum;
  rc.heartbeat_tick = 1;
  rc.election_tick = static_cast<int>(std::max<uint32_t>(1, opts_.election_ms / opts_.heartbeat_ms));
  rc.storage = storage_.get();
  rc.applied = applied;
  rc.probe = &raft_probe_;
  std::mt19937_64 rng(std::random_device{}());
  rc.rand = [rng]() mutable { return rng(); };
  auto node = raft::RawNode::Create(rc);
  if (!node.ok()) return node.status();
  node_ = std::move(*node);
  applied_ = applied;
  synced_applied_ = applied;
  // Proposal ids never repeat on this member, across restarts (id_gen.h).
  {
    auto ids = IdGenerator::Open(opts_.member_dir + "/proposal_ids", member_id_);
    if (!ids.ok()) return ids.status();
    ids_ = std::move(*ids);
  }
  request_timeout_ = std::chrono::milliseconds(opts_.request_timeout_ms != 0 ? opts_.request_timeout_ms
                                                                             : 5000 + 2 * opts_.election_ms);

  // A single voter need not wait out an election timeout: the raft thread
  // campaigns as soon as the committed log (the bootstrap conf change) has
  // been handed to the apply loop.
  LOG_INFO("started as single-node; campaigning once the log is applied", {{"local-member-id", Hex(member_id_)}});

  {
    WatchOptions wo;
    uint64_t pn = opts_.watch_progress_notify_interval_ms;
    if (pn == 0) pn = 600000;
    if (pn < 100) {
      LOG_WARN("adjusting watch progress notify interval to minimum period",
               {{"min-watch-progress-notify-interval", "100ms"}});
      pn = 100;
    }
    wo.progress_interval = std::chrono::milliseconds(pn);
    wo.stream_buffer_bytes = std::max<uint64_t>(1, opts_.watch_stream_buffer_bytes);
    watch_ = std::make_unique<WatchHub>(store_.get(), wo, &watch_probe_);
    watch_->Start();
  }
  apply_thread_ = std::thread([this] { ApplyLoop(); });
  sync_thread_ = std::thread([this] { SyncLoop(); });
  timeout_thread_ = std::thread([this] { TimeoutLoop(); });
  for (int i = 0; i < 2; i++) reader_threads_.emplace_back([this] { ReaderLoop(); });
  raft_thread_ = std::thread([this] { RaftLoop(); });

  // Publish this member's attributes, then agree on the cluster version.
  engrampb::InternalRequest pub;
  auto* attrs = pub.mutable_publish();
  attrs->set_member_id(member_id_);
  attrs->set_name(opts_.name);
  for (const auto& u : opts_.client_urls) attrs->add_client_urls(u);
  // As etcd's publish: retry until a leader takes it (a member waits for its
  // cluster; a single voter elects itself within milliseconds).
  for (int attempt = 0;; attempt++) {
    // Proposed only once there is a leader: a refusal for want of one would
    // count in etcd_server_proposals_failed_total at every boot (etcd's
    // publish waits in Propose instead).
    while (leader_.load() == 0 && !stopping_.load()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    Status ps = ProposeAndWait(pub);
    if (ps.ok()) break;
    if (ps.code() != Code::kUnavailable || stopping_.load()) return ps;
    if (attempt % 500 == 499) LOG_WARN("waiting for a leader to publish this member", {{"error", ps.ToString()}});
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  {
    std::string urls;
    for (const auto& u : opts_.client_urls) urls += (urls.empty() ? "" : " ") + u;
    LOG_INFO("published local member to cluster through raft",
             {{"local-member-id", Hex(member_id_)},
              {"local-member-attributes", "{Name:" + opts_.name + " ClientURLs:[" + urls + "]}"},
              {"cluster-id", Hex(cluster_id_)}});
  }
  bool need_version;
  {
    std::lock_guard<std::mutex> lk(members_mu_);
    need_version = cluster_version_.empty();
  }
  if (need_version) {
    LOG_INFO("setting up initial cluster version", {{"cluster-version", EmulatedVersion().cluster}});
    engrampb::InternalRequest cv;
    cv.mutable_cluster_version()->set_version(EmulatedVersion().cluster);
    ENGRAM_RETURN_IF_ERROR(ProposeAndWait(std::move(cv)));
  } else {
    LOG_INFO("enabled capabilities for version", {{"cluster-version", EmulatedVersion().cluster}});
  }
  if (opts_.compaction.enabled()) {
    compactor_ = std::make_unique<Compactor>(
        opts_.compaction, [this] { return store_->Rev(); },
        [this](int64_t rev) {
          engrampb::InternalRequest ir;
          ir.mutable_compaction()->set_revision(rev);
          return ProposeAndWait(std::move(ir));
        });
    LOG_INFO("enabled auto compaction", {{"mode", opts_.compaction.mode},
                                         {"retention-ms", static_cast<int64_t>(opts_.compaction.period.count())},
                                         {"retention-revisions", opts_.compaction.revisions}});
  }
  return Status::OK();
}

// Measures the WAL disk's fsync latency once, before serving (disk_check.h).
void KvServer::CheckDisk() {
  auto r = MeasureFsyncLatency(opts_.wal_dir);
  if (!r.ok()) {
    LOG_WARN("cannot measure disk fsync latency", {{"dir", opts_.wal_dir}, {"error", r.status().ToString()}});
    return;
  }
  probe_.startup_fsync_p50_ns.Set(static_cast<int64_t>(r->p50_seconds * 1e9));
  probe_.startup_fsync_p99_ns.Set(static_cast<int64_t>(r->p99_seconds * 1e9));
  auto ms = [](double sec) { return std::to_string(sec * 1000) + "ms"; };
  LOG_INFO("measured disk fsync latency", {{"dir", opts_.wal_dir}, {"samples", static_cast<int64_t>(r->samples)},
                                           {"p50", ms(r->p50_seconds)}, {"p99", ms(r->p99_seconds)},
                                           {"took", ms(r->total_seconds)}});
  if (r->p99_seconds > opts_.heartbeat_ms / 2000.0) {
    LOG_WARN("disk fsync latency at start threatens raft heartbeats",
             {{"dir", opts_.wal_dir}, {"p99", ms(r->p99_seconds)},
              {"heartbeat-interval", std::to_string(opts_.heartbeat_ms) + "ms"},
              {"advice", "put the WAL on a faster disk (SSD) or raise --heartbeat-interval and --election-timeout"}});
  }
}

Status KvServer::LoadLeases() {
  // etcd's minimum lease TTL: 3/2 of the election timeout, in whole seconds
  // rounded up (2 s with the defaults).
  // (etcd counts in ticks: (3 x election ticks / 2) heartbeats, integer divisions.)
  const uint64_t hb = std::max<uint64_t>(1, opts_.heartbeat_ms);
  const uint64_t ticks = std::max<uint64_t>(1, opts_.election_ms / hb);
  const int64_t min_ttl = static_cast<int64_t>(((3 * ticks / 2) * hb + 999) / 1000);
  lessor_ = std::make_unique<lease::Lessor>(
      min_ttl, &lease_probe_,
      opts_.lease_checkpoint ? std::chrono::milliseconds(std::max<uint64_t>(1, opts_.lease_checkpoint_interval_ms))
                             : Clock::duration::zero());
  auto records = store_->ScanMeta(internal::kLeaseMetaPrefix);
  if (!records.ok()) return records.status();
  for (const auto& [name, value] : *records) {
    uint64_t id = 0;
    if ((value.size() != 8 && value.size() != 16) ||
        std::sscanf(name.c_str() + std::strlen(internal::kLeaseMetaPrefix), "%16lx", &id) != 1) {
      return Status::Corruption("lease record " + name + " in " + opts_.member_dir +
                                "/snap/db is damaged; restore the data dir from a backup");
    }
    // A checkpointed remaining TTL is honoured only with checkpointing on
    // (etcd 3.6 persists and uses it; without the feature a restart gives
    // the full TTL).
    const int64_t remaining =
        value.size() == 16 && opts_.lease_checkpoint ? static_cast<int64_t>(DecodeBig64(value.data() + 8)) : 0;
    lessor_->Restore(static_cast<int64_t>(id), static_cast<int64_t>(DecodeBig64(value.data())), remaining,
                     Clock::now());
  }
  if (lessor_->size() > 0) {
    // Keys carry their lease in the store: attach them again.
    auto scanned = store_->Scan(std::string(1, '\0'), std::string(1, '\0'), 0, [&](const mvcc::KeyValueRef& kv) {
      if (kv.lease != 0 && lessor_->Exists(kv.lease)) lessor_->Attach(std::string(kv.key), kv.lease);
      return true;
    });
    if (!scanned.ok()) return scanned.status();
  }
  // As etcd at start: every lease gets its full TTL again, so none expires
  // en masse at boot.
  lessor_->Promote(Clock::now() + std::chrono::milliseconds(opts_.election_ms));  // etcd adds the election timeout
  if (lessor_->size() > 0) LOG_INFO("restored leases", {{"count", static_cast<uint64_t>(lessor_->size())}});
  return Status::OK();
}

void KvServer::LoadMembers() {
  std::lock_guard<std::mutex> lk(members_mu_);
  if (auto m = store_->GetMeta("members")) members_ = DecodeMembers(*m);
  if (auto v = store_->GetMeta("cluster_version")) cluster_version_ = *v;
}

template <class Req>
void KvServer::ProposeRequest(InternalRequest::RequestCase kind, int field, const Req* req,
                              google::protobuf::Message* resp, Done done, Caller caller) {
  (void)kind;
  Proposal p;
  p.id = ids_->Next();
  p.data = EncodeRequest(p.id, field, *req);
  p.resp = resp;
  p.done = std::move(done);
  p.caller = caller;
  Propose(std::move(p));
}

void KvServer::LeaseGrant(const etcdserverpb::LeaseGrantRequest* req, etcdserverpb::LeaseGrantResponse* resp,
                          Done done) {
  // etcd's quotaLeaseServer: a grant costs a little space.
  if (!QuotaAvailable(kQuotaLeaseOverhead)) return RaiseNoSpace(std::move(done));
  if (req->ttl() > lease::kMaxLeaseTTL) return done(lease::LeaseTTLTooLarge());
  auto owned = std::make_shared<etcdserverpb::LeaseGrantRequest>(*req);
  while (owned->id() == 0) owned->set_id(static_cast<int64_t>(ids_->Next() & ((1ull << 63) - 1)));
  ProposeRequest(InternalRequest::kLeaseGrant, InternalRequest::kLeaseGrantFieldNumber, owned.get(), resp,
                 [owned, done = std::move(done)](const Status& s) { done(s); });
}

void KvServer::LeaseRevoke(const etcdserverpb::LeaseRevokeRequest* req, etcdserverpb::LeaseRevokeResponse* resp,
                           Done done) {
  ProposeRequest(InternalRequest::kLeaseRevoke, InternalRequest::kLeaseRevokeFieldNumber, req, resp, std::move(done));
}

void KvServer::RevokeExpiredLeases() {
  // Only the leader revokes, and only through raft (never a local delete),
  // at most 1000 per second as etcd (leaseRevokeRate): a token bucket filled
  // at 1000/s, holding at most half a second's worth (etcd hands out up to
  // 500 per 500 ms pass).
  constexpr double kRevokesPerSecond = 1000;
  const auto now = Clock::now();
  if (revoke_refill_ == Clock::time_point{}) revoke_refill_ = now;
  revoke_tokens_ = std::min(kRevokesPerSecond / 2,
                            revoke_tokens_ + kRevokesPerSecond *
                                                 std::chrono::duration<double>(now - revoke_refill_).count());
  revoke_refill_ = now;
  if (leader_.load() != member_id_ || stopping_.load() || quiescing_.load()) return;
  if (alarms_.Corrupt()) return;  // every revoke would be refused (AlarmGate)
  const auto limit = static_cast<size_t>(revoke_tokens_);
  if (limit == 0) return;
  auto expired = lessor_->Expired(now, limit);
  revoke_tokens_ -= static_cast<double>(expired.size());
  for (int64_t id : expired) {
    auto req = std::make_shared<etcdserverpb::LeaseRevokeRequest>();
    req->set_id(id);
    auto resp = std::make_shared<etcdserverpb::LeaseRevokeResponse>();
    ProposeRequest(InternalRequest::kLeaseRevoke, InternalRequest::kLeaseRevokeFieldNumber, req.get(), resp.get(),
                   [this, req, resp, id](const Status& s) {
                     if (s.ok()) lease_probe_.expired.Inc();  // etcd counts successful expiry revokes
                     // Not proposed or not applied in time: offer it again.
                     if (!s.ok() && s.code() != Code::kNotFound) lessor_->Unmark(id, Clock::now() + request_timeout_);
                   });
  }
}

void KvServer::CheckpointLeases() {
  if (!lessor_->checkpointing() || leader_.load() != member_id_ || stopping_.load() || quiescing_.load()) return;
  // etcd: at most 1000 checkpoints per proposal.
  auto due = lessor_->DueCheckpoints(Clock::now(), 1000);
  if (!due.empty()) ProposeCheckpoints(due, [](const Status&) {});
}

void KvServer::ProposeCheckpoints(const std::vector<std::pair<int64_t, int64_t>>& cps, Done done) {
  auto req = std::make_shared<etcdserverpb::LeaseCheckpointRequest>();
  for (const auto& [id, remaining] : cps) {
    auto* c = req->add_checkpoints();
    c->set_id(id);
    c->set_remaining_ttl(remaining);
  }
  auto resp = std::make_shared<etcdserverpb::LeaseCheckpointResponse>();
  ProposeRequest(InternalRequest::kLeaseCheckpoint, InternalRequest::kLeaseCheckpointFieldNumber, req.get(),
                 resp.get(), [req, resp, done = std::move(done)](const Status& s) { done(s); });
}

void KvServer::LeaseRenew(int64_t id, std::function<void(Result<int64_t>)> done) {
  if (stopping_.load()) return done(errors::Stopped());
  if (lessor_->NeedsCheckpointReset(id)) {
    // etcd: the recorded remaining TTL is cleared through raft before the
    // renew, or a restart would bring it back after the client renewed.
    ProposeCheckpoints({{id, 0}}, [this, id, done](const Status& s) {
      if (!s.ok()) return done(s);
      done(lessor_->Renew(id, Clock::now()));
    });
    return;
  }
  done(lessor_->Renew(id, Clock::now()));
}

Status KvServer::HashKV(int64_t rev, etcdserverpb::HashKVResponse* resp) const {
  auto r = store_->HashKV(rev);
  if (!r.ok()) return errors::FromMvcc(r.status());
  resp->mutable_header()->set_revision(r->revision);
  FillHeader(resp->mutable_header());
  resp->set_hash(r->hash);
  resp->set_compact_revision(r->compact_revision);
  // hash_revision is a 3.6 field: a 3.4/3.5 member leaves it out.
  if (EmulatedVersion().cluster >= "3.6") resp->set_hash_revision(r->hash_revision);
  return Status::OK();
}

Status KvServer::Hash(etcdserverpb::HashResponse* resp) const {
  auto h = store_->HashAll();
  if (!h.ok()) return errors::FromMvcc(h.status());
  FillHeader(resp->mutable_header());
  resp->set_hash(*h);
  return Status::OK();
}

Status KvServer::MoveLeader(uint64_t target) const {
  // etcd: only the leader transfers; to itself it is done at once; a target
  // that is not a member is a bad transferee.
  if (leader_.load() != member_id_) return Status::FailedPrecondition("etcdserver: not leader");
  if (target == member_id_) return Status::OK();
  return Status::FailedPrecondition("etcdserver: bad leader transferee");
}

Result<int64_t> KvServer::LeaseRenew(int64_t id) {
  Result<int64_t> out = errors::Stopped();
  Status s = Await([&](Done d) {
    LeaseRenew(id, [&out, d](Result<int64_t> r) {
      out = std::move(r);
      d(Status::OK());
    });
  });
  (void)s;
  return out;
}

void KvServer::LeaseTimeToLive(const etcdserverpb::LeaseTimeToLiveRequest& req,
                               etcdserverpb::LeaseTimeToLiveResponse* resp) {
  resp->set_id(req.id());
  auto info = lessor_->TimeToLive(req.id(), Clock::now(), req.keys());
  if (!info.ok()) {
    resp->set_ttl(-1);  // etcd: an unknown (or revoked) lease
    return;
  }
  resp->set_ttl(info->remaining_ttl);
  resp->set_grantedttl(info->granted_ttl);
  for (auto& k : info->keys) resp->add_keys(std::move(k));
}

void KvServer::LeaseLeases(etcdserverpb::LeaseLeasesResponse* resp) {
  for (int64_t id : lessor_->Leases()) resp->add_leases()->set_id(id);
}

void KvServer::PutWithIdForTesting(uint64_t id, const etcdserverpb::PutRequest* req, etcdserverpb::PutResponse* resp,
                                   Done done) {
  Proposal p;
  p.id = id;
  p.data = EncodeRequest(id, InternalRequest::kPutFieldNumber, *req);
  p.resp = resp;
  p.done = std::move(done);
  Propose(std::move(p));
}

void KvServer::Put(const etcdserverpb::PutRequest* req, etcdserverpb::PutResponse* resp, Done done,
                   Caller caller) {
  done = TimeRequest(&probe_.request_seconds, kReqPut, std::move(done));
  // The quota comes first, as etcd's quotaKVServer wraps the KV server.
  if (!QuotaAvailable(QuotaCost(*req))) return RaiseNoSpace(std::move(done));
  Status s = CheckPut(*req);
  if (!s.ok()) return done(s);
  ProposeRequest(InternalRequest::kPut, InternalRequest::kPutFieldNumber, req, resp, std::move(done), caller);
}

void KvServer::DeleteRange(const etcdserverpb::DeleteRangeRequest* req, etcdserverpb::DeleteRangeResponse* resp,
                           Done done, Caller caller) {
  done = TimeRequest(&probe_.request_seconds, kReqDeleteRange, std::move(done));
  Status s = CheckDelete(*req);
  if (!s.ok()) return done(s);
  ProposeRequest(InternalRequest::kDeleteRange, InternalRequest::kDeleteRangeFieldNumber, req, resp, std::move(done),
                 caller);
}

void KvServer::Txn(const etcdserverpb::TxnRequest* req, etcdserverpb::TxnResponse* resp, Done done,
                   Caller caller) {
  done = TimeRequest(&probe_.request_seconds, IsTxnReadOnly(*req) ? kReqReadonlyTxn : kReqTxn, std::move(done));
  if (!QuotaAvailable(QuotaCost(*req))) return RaiseNoSpace(std::move(done));  // 0 for a txn without puts
  Status s = CheckTxn(*req, static_cast<int>(opts_.max_txn_ops));
  if (!s.ok()) return done(s);
  if (IsTxnReadOnly(*req)) {
    auto read = [this, req, resp](Done& done) {
      // One view for the whole txn: every range inside it and the header
      // carry the same revision. A compaction past that revision while the
      // txn ran (not one the client asked for) is not the client's error:
      // read again.
      Status s;
      while (true) {
        StoreView view(store_.get(), store_->Rev());
        s = ExecReadTxn(view, *req, resp);
        if (s.ok() || store_->CompactRev() <= view.Rev()) break;
        resp->Clear();
      }
      if (s.ok()) FillHeader(resp->mutable_header());
      done(s);
    };
    if (IsTxnSerializable(*req)) return read(done);
    // Linearizable: on a reader thread once the read index is applied.
    return AfterLinearizable([read, done = std::move(done)](const Status& s) mutable {
      if (!s.ok()) return done(s);
      read(done);
    });
  }
  ProposeRequest(InternalRequest::kTxn, InternalRequest::kTxnFieldNumber, req, resp, std::move(done), caller);
}

void KvServer::Compact(const etcdserverpb::CompactionRequest* req, etcdserverpb::CompactionResponse* resp,
                       Done done) {
  done = TimeRequest(&probe_.request_seconds, kReqCompaction, std::move(done));
  if (req->physical()) {
    // etcd: with physical set, the reply waits until the removal of the old
    // revisions is done (the apply thread runs it in steps after the commit).
    done = [this, done = std::move(done)](const Status& s) mutable {
      if (!s.ok()) return done(s);
      physical_waiters_.push_back(std::move(done));  // the apply stage holder
    };
  }
  ProposeRequest(InternalRequest::kCompaction, InternalRequest::kCompactionFieldNumber, req, resp, std::move(done));
}

Status KvServer::Range(const etcdserverpb::RangeRequest& req, etcdserverpb::RangeResponse* resp) {
  return Await([&](Done done) { RangeAsync(&req, resp, std::move(done)); });
}

void KvServer::WarnIfSlow(Clock::time_point start, const char* what) {
  const double took = std::chrono::duration<double>(Clock::now() - start).count();
  if (took * 1000 <= static_cast<double>(opts_.warning_apply_duration_ms)) return;
  probe_.slow_apply.Inc();
  LOG_WARN("apply request took too long",
           {{"took", std::to_string(took * 1000) + "ms"},
            {"expected-duration", std::to_string(opts_.warning_apply_duration_ms) + "ms"},
            {"request", what}});
}

void KvServer::RangeAsync(const etcdserverpb::RangeRequest* req, etcdserverpb::RangeResponse* resp, Done done) {
  done = TimeRequest(&probe_.request_seconds, kReqRange, std::move(done));  // metrics
  // etcd counts a slow Range (its linearizable wait included) as a slow apply.
  done = [this, start = Clock::now(), done = std::move(done)](const Status& s) {
    WarnIfSlow(start, "Range");
    done(s);
  };
  Status s = CheckRange(*req);
  if (!s.ok()) return done(s);
  if (stopping_.load()) return done(errors::Stopped());
  auto read = [this, req, resp](Done& done) {
    StoreView view(store_.get(), 0);  // the store's revision when the read runs, reported in the header
    const auto exec = Clock::now();
    Status es = ExecRange(view, *req, resp);
    probe_.range_seconds.at(0, es.ok()).ObserveSince(exec);
    if (es.ok()) FillHeader(resp->mutable_header());
    done(es);
  };
  if (req->serializable()) return read(done);
  // Linearizable: on a reader thread once the read index is applied.
  AfterLinearizable([read, done = std::move(done)](const Status& s) mutable {
    if (!s.ok()) return done(s);
    read(done);
  });
}

void KvServer::FillHeader(etcdserverpb::ResponseHeader* h) const {
  h->set_cluster_id(cluster_id_);
  h->set_member_id(member_id_);
  h->set_raft_term(term_.load(std::memory_order_relaxed));
  if (h->revision() == 0) h->set_revision(store_->Rev());
}

StatusInfo KvServer::GetStatus() const {
  StatusInfo s;
  s.leader = leader_.load();
  s.term = term_.load();
  s.commit_index = commit_.load();
  s.applied_index = applied_.load();
  auto sz = store_->Size();
  s.db_size = sz.total_bytes;
  s.db_size_in_use = sz.in_use_bytes;
  s.revision = store_->Rev();
  return s;
}

// ------------------------------------------------------ alarms, quota, defrag

bool KvServer::QuotaAvailable(int64_t cost) const {
  // etcd's backendQuota.Available: a request that writes nothing passes; a
  // negative quota disables it (0 is the 2 GiB default, resolved by the flags).
  if (cost == 0 || opts_.quota_bytes < 0) return true;
  const int64_t quota = opts_.quota_bytes == 0 ? 2147483648LL : opts_.quota_bytes;
  return store_->FileBytes() + cost < quota;
}

void KvServer::RaiseNoSpace(Done done) {
  // As etcd's quotaAlarmer: propose ACTIVATE NOSPACE for this member (the
  // alarm is added once; later proposals find it present), wait for it, then
  // fail the request whatever became of the proposal.
  auto req = std::make_shared<etcdserverpb::AlarmRequest>();
  req->set_action(etcdserverpb::AlarmRequest::ACTIVATE);
  req->set_memberid(member_id_);
  req->set_alarm(etcdserverpb::NOSPACE);
  auto resp = std::make_shared<etcdserverpb::AlarmResponse>();
  ProposeRequest(InternalRequest::kAlarm, InternalRequest::kAlarmFieldNumber, req.get(), resp.get(),
                 [req, resp, done = std::move(done)](const Status&) { done(errors::NoSpace()); });
}

void KvServer::Alarm(const etcdserverpb::AlarmRequest* req, etcdserverpb::AlarmResponse* resp, Done done) {
  ProposeRequest(InternalRequest::kAlarm, InternalRequest::kAlarmFieldNumber, req, resp, std::move(done));
}

std::vector<std::string> KvServer::ActiveAlarms() const {
  std::vector<std::string> out;
  for (const auto& a : alarms_.Get()) out.push_back(AlarmTypeName(a.type));
  return out;
}


void KvServer::Defragment(Done done) {
  {
    std::lock_guard<std::mutex> lk(apply_mu_);
    if (!apply_done_ && !stopping_.load()) {
      defrag_waiters_.push_back(std::move(done));
      apply_cv_.notify_one();
      return;
    }
  }
  done(errors::Stopped());
}


std::vector<MemberInfo> KvServer::Members() const {
  std::lock_guard<std::mutex> lk(members_mu_);
  return members_;
}

void KvServer::Stop() {
  std::call_once(stop_once_, [this] {
    if (compactor_) compactor_->Stop();
    {
      std::lock_guard<std::mutex> lk(prop_mu_);
      stopping_.store(true);
      prop_cv_.notify_all();
    }
    if (raft_thread_.joinable()) raft_thread_.join();
    if (!raft_thread_.joinable() && !apply_thread_.joinable() && node_ == nullptr) {
      // Init failed before threads started.
    }
    {
      std::lock_guard<std::mutex> lk(apply_mu_);
      apply_done_ = true;
      apply_cv_.notify_all();
    }
    if (apply_thread_.joinable()) apply_thread_.join();
    {
      // Linearizable reads that will not get their index applied now.
      std::deque<std::shared_ptr<ReadWaiter>> left;
      {
        std::lock_guard<std::mutex> lk(read_deadline_mu_);
        left.swap(read_deadlines_);
      }
      for (auto& w : left) FinishRead(w, errors::Stopped());
      std::lock_guard<std::mutex> lk(parked_mu_);
      parked_reads_.clear();
    }
    {
      std::lock_guard<std::mutex> lk(reader_mu_);
      readers_stop_ = true;
      reader_cv_.notify_all();
    }
    for (auto& t : reader_threads_) t.join();
    reader_threads_.clear();
    {
      std::lock_guard<std::mutex> lk(timeout_mu_);
      timeout_stop_ = true;
      timeout_cv_.notify_all();
    }
    if (timeout_thread_.joinable()) timeout_thread_.join();
    if (watch_) watch_->Stop();
    {
      std::lock_guard<std::mutex> lk(sync_mu_);
      sync_stop_ = true;
      sync_cv_.notify_all();
    }
    if (sync_thread_.joinable()) sync_thread_.join();
    if (store_) {
      Status s = store_->Sync();
      if (!s.ok()) LOG_ERROR("failed to sync the backend at stop", {{"error", s.ToString()}});
    }
    if (wal_) {
      Status s = wal_->Sync();
      if (!s.ok()) LOG_ERROR("failed to sync the WAL at stop", {{"error", s.ToString()}});
    }
  });
}

}  // namespace engram::kv
