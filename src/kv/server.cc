#include "src/kv/server.h"

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
namespace {

using Clock = std::chrono::steady_clock;
using engrampb::InternalRequest;

std::string Hex16(uint64_t v) {
  char b[17];
  std::snprintf(b, sizeof b, "%016lx", static_cast<unsigned long>(v));
  return b;
}
std::string Hex(uint64_t v) {
  char b[17];
  std::snprintf(b, sizeof b, "%lx", static_cast<unsigned long>(v));
  return b;
}

void PutVarint(std::string* s, uint64_t v) {
  while (v >= 0x80) {
    s->push_back(static_cast<char>(v | 0x80));
    v >>= 7;
  }
  s->push_back(static_cast<char>(v));
}

// The proposal id is field 1 (varint) and always first in what we encode.
bool DecodeId(const std::string& data, uint64_t* id) {
  if (data.empty() || static_cast<uint8_t>(data[0]) != 0x08) return false;
  uint64_t v = 0;
  int shift = 0;
  for (size_t i = 1; i < data.size() && shift < 64; i++, shift += 7) {
    uint8_t b = static_cast<uint8_t>(data[i]);
    v |= static_cast<uint64_t>(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *id = v;
      return true;
    }
  }
  return false;
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
    case InternalRequest::kPublish: return kOpClusterMemberAttrSet;
    case InternalRequest::kClusterVersion: return kOpClusterVersionSet;
    default: return kOpUnknown;
  }
}

// metrics: observes a request's end-to-end latency when its completion runs.
KvServer::Done TimeRequest(LabeledHistograms* h, RequestType type, KvServer::Done done) {
  return [h, type, start = Clock::now(), done = std::move(done)](const Status& s) {
    h->at(type, s.ok()).ObserveSince(start);
    done(s);
  };
}

}  // namespace

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

  auto t0 = Clock::now();
  mvcc::Options mo;
  mo.dir = opts_.member_dir + "/snap";
  mo.probe = &mvcc_probe_;
  mo.prefix_depth = opts_.metrics_prefix_depth;
  auto store = mvcc::Store::Open(mo);
  if (!store.ok()) return store.status();
  store_ = std::move(*store);
  LOG_INFO("opened backend db", {{"path", mo.dir + "/db"},
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
  storage_->SetConfState(raft::ConfState{{member_id_}, {}});
  LoadMembers();
  ENGRAM_RETURN_IF_ERROR(alarms_.Load(*store_));
  for (const auto& a : alarms_.Get()) {
    LOG_WARN("alarm active at start", {{"alarm", AlarmTypeName(a.type)}, {"from", Hex(a.member_id)}});
  }

  raft::Config rc;
  rc.id = member_id_;
  rc.voters = {member_id_};
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
  // Proposal ids must not repeat across restarts: a committed but unapplied
  // entry from an earlier run could otherwise complete a new waiter. As
  // etcd's idutil: 16 bits of member id, 40 bits of start time (ms), 8-bit
  // counter space that carries into the time bits.
  {
    uint64_t ms = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                            std::chrono::system_clock::now().time_since_epoch())
                                            .count());
    next_id_.store(((member_id_ & 0xffff) << 48) | ((ms & 0xffffffffffULL) << 8));
  }

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

void KvServer::LoadMembers() {
  std::lock_guard<std::mutex> lk(members_mu_);
  if (auto m = store_->GetMeta("members")) members_ = DecodeMembers(*m);
  if (auto v = store_->GetMeta("cluster_version")) cluster_version_ = *v;
}

Status KvServer::ProposeAndWait(engrampb::InternalRequest ir) {
  std::mutex mu;
  std::condition_variable cv;
  bool finished = false;
  Status result;
  Proposal p;
  p.id = next_id_.fetch_add(1);
  ir.set_id(p.id);
  p.kind = ir.request_case();
  p.data = ir.SerializeAsString();
  p.done = [&](const Status& s) {
    std::lock_guard<std::mutex> lk(mu);
    result = s;
    finished = true;
    cv.notify_all();
  };
  Propose(std::move(p));
  std::unique_lock<std::mutex> lk(mu);
  cv.wait(lk, [&] { return finished; });
  return result;
}

void KvServer::Propose(Proposal p) {
  if (p.data.size() > opts_.max_request_bytes) {
    p.done(errors::RequestTooLarge());
    return;
  }
  {
    std::lock_guard<std::mutex> lk(prop_mu_);
    if (!stopping_.load()) {
      probe_.proposals_pending.Add(1);
      prop_queue_.push_back(std::move(p));
      prop_cv_.notify_one();
      return;
    }
  }
  p.done(errors::Stopped());
}

template <class Req>
void KvServer::ProposeRequest(InternalRequest::RequestCase kind, int field, const Req* req,
                              google::protobuf::Message* resp, Done done) {
  Proposal p;
  p.id = next_id_.fetch_add(1, std::memory_order_relaxed);
  p.data = EncodeRequest(p.id, field, *req);
  p.req = req;
  p.resp = resp;
  p.kind = kind;
  p.done = std::move(done);
  Propose(std::move(p));
}

void KvServer::Put(const etcdserverpb::PutRequest* req, etcdserverpb::PutResponse* resp, Done done) {
  done = TimeRequest(&probe_.request_seconds, kReqPut, std::move(done));
  // The quota comes first, as etcd's quotaKVServer wraps the KV server.
  if (!QuotaAvailable(QuotaCost(*req))) return RaiseNoSpace(std::move(done));
  Status s = CheckPut(*req);
  if (!s.ok()) return done(s);
  ProposeRequest(InternalRequest::kPut, InternalRequest::kPutFieldNumber, req, resp, std::move(done));
}

void KvServer::DeleteRange(const etcdserverpb::DeleteRangeRequest* req, etcdserverpb::DeleteRangeResponse* resp,
                           Done done) {
  done = TimeRequest(&probe_.request_seconds, kReqDeleteRange, std::move(done));
  Status s = CheckDelete(*req);
  if (!s.ok()) return done(s);
  ProposeRequest(InternalRequest::kDeleteRange, InternalRequest::kDeleteRangeFieldNumber, req, resp, std::move(done));
}

void KvServer::Txn(const etcdserverpb::TxnRequest* req, etcdserverpb::TxnResponse* resp, Done done) {
  done = TimeRequest(&probe_.request_seconds, IsTxnReadOnly(*req) ? kReqReadonlyTxn : kReqTxn, std::move(done));
  if (!QuotaAvailable(QuotaCost(*req))) return RaiseNoSpace(std::move(done));  // 0 for a txn without puts
  Status s = CheckTxn(*req, static_cast<int>(opts_.max_txn_ops));
  if (!s.ok()) return done(s);
  if (IsTxnReadOnly(*req)) {
    // One view for the whole txn: every range inside it and the header carry
    // the same revision. A compaction past that revision while the txn ran
    // (not one the client asked for) is not the client's error: read again.
    while (true) {
      StoreView view(store_.get(), store_->Rev());
      s = ExecReadTxn(view, *req, resp);
      if (s.ok() || store_->CompactRev() <= view.Rev()) break;
      resp->Clear();
    }
    if (s.ok()) FillHeader(resp->mutable_header());
    return done(s);
  }
  ProposeRequest(InternalRequest::kTxn, InternalRequest::kTxnFieldNumber, req, resp, std::move(done));
}

void KvServer::Compact(const etcdserverpb::CompactionRequest* req, etcdserverpb::CompactionResponse* resp,
                       Done done) {
  done = TimeRequest(&probe_.request_seconds, kReqCompaction, std::move(done));
  ProposeRequest(InternalRequest::kCompaction, InternalRequest::kCompactionFieldNumber, req, resp, std::move(done));
}

Status KvServer::Range(const etcdserverpb::RangeRequest& req, etcdserverpb::RangeResponse* resp) {
  const auto start = Clock::now();  // metrics: request and range durations
  Status s = [&]() -> Status {
    ENGRAM_RETURN_IF_ERROR(CheckRange(req));
    if (stopping_.load()) return errors::Stopped();
    StoreView view(store_.get(), 0);  // the store's revision when the read runs, reported in the header
    const auto exec = Clock::now();
    Status es = ExecRange(view, req, resp);
    probe_.range_seconds.at(0, es.ok()).ObserveSince(exec);
    ENGRAM_RETURN_IF_ERROR(es);
    FillHeader(resp->mutable_header());
    return Status::OK();
  }();
  probe_.request_seconds.at(kReqRange, s.ok()).ObserveSince(start);
  return s;
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
  if (alarms_.NoSpace()) {
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

std::vector<MemberInfo> KvServer::Members() const {
  std::lock_guard<std::mutex> lk(members_mu_);
  return members_;
}

// ---------------------------------------------------------------- raft thread

void KvServer::RaftLoop() {
  const auto tick = std::chrono::milliseconds(opts_.heartbeat_ms);
  auto next_tick = Clock::now() + tick;
  std::vector<Proposal> batch;
  uint64_t last_lead = 0;
  bool campaign = true;  // single voter: campaign without waiting for the election timeout
  while (true) {
    {
      std::unique_lock<std::mutex> lk(prop_mu_);
      prop_cv_.wait_until(lk, next_tick, [&] { return !prop_queue_.empty() || raft_wakeup_ || stopping_.load(); });
      batch.swap(prop_queue_);
      raft_wakeup_ = false;
    }
    if (stopping_.load()) {
      {
        // Proposals queued after the swap above, before stopping_ was set.
        std::lock_guard<std::mutex> lk(prop_mu_);
        for (auto& p : prop_queue_) batch.push_back(std::move(p));
        prop_queue_.clear();
      }
      for (auto& p : batch) {
        probe_.proposals_pending.Add(-1);
        p.done(errors::Stopped());
      }
      break;
    }
    if (Clock::now() >= next_tick) {
      node_->Tick();
      next_tick += tick;
      if (next_tick < Clock::now()) next_tick = Clock::now() + tick;
    }
    if (!batch.empty()) {
      {
        std::lock_guard<std::mutex> lk(wait_mu_);
        for (auto& p : batch) waiting_.emplace(p.id, Proposal{p.id, {}, p.req, p.resp, p.kind, std::move(p.done)});
      }
      for (auto& p : batch) {
        Status s = node_->Propose(std::move(p.data));
        if (!s.ok()) {
          Proposal w;
          {
            std::lock_guard<std::mutex> lk(wait_mu_);
            auto it = waiting_.find(p.id);
            if (it == waiting_.end()) continue;  // already completed by an entry with this id
            w = std::move(it->second);
            waiting_.erase(it);
          }
          probe_.proposals_pending.Add(-1);
          probe_.proposals_failed.Inc();
          w.done(errors::NoLeader());
        }
      }
      batch.clear();
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
      if (rd.soft_state) {
        uint64_t lead = rd.soft_state->lead;
        leader_.store(lead);
        probe_.has_leader.Set(lead != 0);
        probe_.is_leader.Set(rd.soft_state->state == raft::StateType::kLeader);
        if (lead != 0 && lead != last_lead) {
          probe_.leader_changes.Inc();
          LOG_INFO("raft.node: elected leader",
                   {{"local-member-id", Hex(member_id_)}, {"leader", Hex(lead)}, {"term", term_.load()}});
        }
        last_lead = lead;
      }
      if (!rd.committed_entries.empty()) {
        commit_.store(rd.committed_entries.back().index);
        probe_.proposals_committed.Set(static_cast<int64_t>(rd.committed_entries.back().index));
        // When the apply thread is idle and nothing is queued, apply here:
        // under light load this saves a thread wake-up per write (the reply
        // goes out one hand-off sooner). Under load the apply thread is busy
        // (it holds apply_exec_mu_), so batches queue up and apply pipelines
        // with the next fdatasync. Order is kept: entries are applied inline
        // only when every earlier one has been applied.
        std::unique_lock<std::mutex> exec(apply_exec_mu_, std::try_to_lock);
        bool inline_apply = false;
        {
          std::lock_guard<std::mutex> lk(apply_mu_);
          if (exec.owns_lock() && apply_queue_.empty() && defrag_waiters_.empty()) {
            inline_apply = true;
          } else {
            // Element-wise: rd.committed_entries must keep its indexes for
            // Advance (moved-from entries keep index and term).
            for (auto& e : rd.committed_entries) apply_queue_.push_back(std::move(e));
            apply_cv_.notify_one();
          }
        }
        if (inline_apply) ApplyEntries(rd.committed_entries);
      }
      node_->Advance(rd);
    }
    if (campaign) {
      auto st = node_->Status();
      if (st.state == raft::StateType::kLeader) {
        campaign = false;
      } else if (st.applied >= st.commit) {
        Status cs = node_->Campaign();
        if (!cs.ok()) LOG_WARN("campaign failed", {{"error", cs.ToString()}});
        campaign = false;
        std::lock_guard<std::mutex> lk(prop_mu_);
        raft_wakeup_ = true;  // handle the campaign's Ready at once
      }
    }
  }
  // Drain: let the apply thread finish what is committed.
  {
    std::lock_guard<std::mutex> lk(apply_mu_);
    apply_done_ = true;
    apply_cv_.notify_one();
  }
}

// --------------------------------------------------------------- apply thread

void KvServer::ApplyLoop() {
  std::vector<raft::Entry> entries;
  std::vector<Done> defrag;  // Defragment calls, run between batches
  while (true) {
    {
      std::unique_lock<std::mutex> lk(apply_mu_);
      apply_cv_.wait(lk, [&] { return !apply_queue_.empty() || apply_done_ || !defrag_waiters_.empty(); });
      if (apply_queue_.empty() && apply_done_) break;
    }
    // Take the execution lock before dequeuing, so the raft thread never
    // applies newer entries inline while these are in flight.
    std::lock_guard<std::mutex> exec(apply_exec_mu_);
    {
      std::lock_guard<std::mutex> lk(apply_mu_);
      entries.swap(apply_queue_);
      defrag.swap(defrag_waiters_);
    }
    if (!entries.empty()) ApplyEntries(entries);
    entries.clear();
    if (!defrag.empty()) RunDefrag(defrag);
  }
  {
    std::lock_guard<std::mutex> lk(apply_mu_);
    defrag.swap(defrag_waiters_);
  }
  for (auto& d : defrag) d(errors::Stopped());
  // Anything still waiting will never be applied by this process.
  std::unordered_map<uint64_t, Proposal> left;
  {
    std::lock_guard<std::mutex> lk(wait_mu_);
    left.swap(waiting_);
  }
  for (auto& [id, p] : left) {
    probe_.proposals_pending.Add(-1);
    p.done(errors::Stopped());
  }
}

void KvServer::ApplyEntries(std::vector<raft::Entry>& entries) {
  auto t0 = Clock::now();
  auto batch = store_->BeginBatch();
  // Watchers get the batch's changes after it commits (watch.h).
  const bool record_events = watch_->HasWatchers();
  batch->RecordEvents(record_events);
  struct Completion {
    Proposal p;
    Status s;
  };
  std::vector<Completion> completions;
  completions.reserve(entries.size());
  uint64_t last = applied_.load();
  uint64_t first = last;
  for (auto& e : entries) {
    if (e.index <= last) continue;  // already in the store (replay after restart)
    Proposal local;
    bool has_local = false;
    uint64_t id;
    if (e.type == raft::EntryType::kNormal && DecodeId(e.data, &id)) {
      std::lock_guard<std::mutex> lk(wait_mu_);
      auto it = waiting_.find(id);
      if (it != waiting_.end()) {
        local = std::move(it->second);
        waiting_.erase(it);
        has_local = true;
      }
    }
    Status s = ApplyOne(*batch, e, has_local ? &local : nullptr);
    if (has_local) completions.push_back({std::move(local), std::move(s)});
    last = e.index;
  }
  if (last == first) {
    batch->Abort();
    return;
  }
  if (FAILPOINT("apply-before-commit")) ENGRAM_PANIC("failpoint apply-before-commit");
  Status cs = batch->Commit(last);
  if (!cs.ok()) ENGRAM_PANIC("failed to commit the backend transaction", {{"error", cs.ToString()}});
  // Before the replies: a client that saw its write acknowledged finds the
  // event already queued on its watch streams. Never blocks (slow streams
  // turn their watchers unsynced).
  watch_->Notify(batch->Rev(), batch->TakeEvents(), record_events);
  {
    std::lock_guard<std::mutex> lk(applied_mu_);
    applied_.store(last);
  }
  applied_cv_.notify_all();
  probe_.proposals_applied.Set(static_cast<int64_t>(last));
  double took = std::chrono::duration<double>(Clock::now() - t0).count();
  if (took > 0.1) {
    probe_.slow_apply.Inc();
    LOG_WARN("apply request took too long", {{"took", std::to_string(took * 1000) + "ms"},
                                             {"expected-duration", "100ms"},
                                             {"entries", static_cast<uint64_t>(entries.size())}});
  }
  for (auto& c : completions) {
    probe_.proposals_pending.Add(-1);
    if (!c.s.ok()) probe_.proposals_failed.Inc();
    c.p.done(c.s);
  }
  if (last - synced_applied_.load() >= opts_.backend_batch_limit) {
    std::lock_guard<std::mutex> lk(sync_mu_);
    sync_cv_.notify_one();
  }
}

Status KvServer::ApplyOne(mvcc::Store::Batch& b, const raft::Entry& e, Proposal* local) {
  if (e.type == raft::EntryType::kConfChange) {
    ApplyConfChange(b, e);
    return Status::OK();
  }
  if (e.data.empty()) return Status::OK();  // a new leader's empty entry
  auto t0 = Clock::now();
  Status s;
  InternalRequest::RequestCase kind;  // metrics: the op label
  if (local && local->req) {
    kind = local->kind;
    s = AlarmGate(kind, local->req);  // alarms: NOSPACE / CORRUPT refuse writes
    if (s.ok()) switch (local->kind) {
      case InternalRequest::kPut:
        s = ApplyPut(b, static_cast<const etcdserverpb::PutRequest&>(*local->req),
                     static_cast<etcdserverpb::PutResponse*>(local->resp));
        break;
      case InternalRequest::kDeleteRange:
        s = ApplyDeleteRange(b, static_cast<const etcdserverpb::DeleteRangeRequest&>(*local->req),
                             static_cast<etcdserverpb::DeleteRangeResponse*>(local->resp));
        break;
      case InternalRequest::kTxn:
        s = ApplyTxn(b, static_cast<const etcdserverpb::TxnRequest&>(*local->req),
                     static_cast<etcdserverpb::TxnResponse*>(local->resp));
        break;
      case InternalRequest::kCompaction:
        s = ApplyCompaction(b, *store_, static_cast<const etcdserverpb::CompactionRequest&>(*local->req),
                            static_cast<etcdserverpb::CompactionResponse*>(local->resp));
        break;
      case InternalRequest::kAlarm:
        s = ApplyAlarm(b, static_cast<const etcdserverpb::AlarmRequest&>(*local->req),
                       static_cast<etcdserverpb::AlarmResponse*>(local->resp));
        break;
      default:
        ENGRAM_PANIC("local proposal of unknown kind");
    }
  } else {
    engrampb::InternalRequest ir;
    if (!ir.ParseFromString(e.data)) {
      ENGRAM_PANIC("cannot decode a committed raft entry", {{"index", e.index}, {"term", e.term}});
    }
    kind = ir.request_case();
    s = ApplyInternal(b, ir, nullptr, nullptr);
  }
  // etcd counts a compacted-revision error as a successful apply.
  probe_.apply_seconds.at(ApplyOpOf(kind), s.ok() || s.message().ends_with("required revision has been compacted"))
      .ObserveSince(t0);
  return s;
}

Status KvServer::ApplyInternal(mvcc::Store::Batch& b, const engrampb::InternalRequest& ir,
                               const google::protobuf::Message*, google::protobuf::Message*) {
  {
    // Alarms: NOSPACE / CORRUPT refuse writes (as for local proposals).
    const google::protobuf::Message* req = ir.request_case() == InternalRequest::kTxn ? &ir.txn() : nullptr;
    ENGRAM_RETURN_IF_ERROR(AlarmGate(ir.request_case(), req));
  }
  switch (ir.request_case()) {
    case InternalRequest::kAlarm: {
      etcdserverpb::AlarmResponse r;
      return ApplyAlarm(b, ir.alarm(), &r);
    }
    case InternalRequest::kPut: {
      etcdserverpb::PutResponse r;
      return ApplyPut(b, ir.put(), &r);
    }
    case InternalRequest::kDeleteRange: {
      etcdserverpb::DeleteRangeResponse r;
      return ApplyDeleteRange(b, ir.delete_range(), &r);
    }
    case InternalRequest::kTxn: {
      etcdserverpb::TxnResponse r;
      return ApplyTxn(b, ir.txn(), &r);
    }
    case InternalRequest::kCompaction: {
      etcdserverpb::CompactionResponse r;
      return ApplyCompaction(b, *store_, ir.compaction(), &r);
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

bool KvServer::WaitApplied(uint64_t index, int timeout_ms) {
  std::unique_lock<std::mutex> lk(applied_mu_);
  return applied_cv_.wait_for(lk, std::chrono::milliseconds(timeout_ms), [&] { return applied_.load() >= index; });
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
