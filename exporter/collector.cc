#include "exporter/collector.h"

#include <algorithm>
#include <cstdio>
#include <limits>
#include <string>
#include <utility>

#include "exporter/process_metrics.h"

namespace engram::exporter {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;
using Labels = std::vector<ClientMetric::Label>;

std::string Hex16(uint64_t v) {
  char b[17];
  std::snprintf(b, sizeof b, "%016lx", static_cast<unsigned long>(v));
  return b;
}

// Appends families; each Add* call adds one series to the family last opened.
class Families {
 public:
  explicit Families(std::vector<MetricFamily>* out) : out_(out) {}

  Families& Open(const char* name, const char* help, MetricType type) {
    out_->push_back(MetricFamily{name, help, type, {}});
    return *this;
  }
  Families& Value(double v, Labels labels = {}) {
    MetricFamily& f = out_->back();
    ClientMetric m;
    m.label = std::move(labels);
    if (f.type == MetricType::Counter) {
      m.counter.value = v;
    } else {
      m.gauge.value = v;
    }
    f.metric.push_back(std::move(m));
    return *this;
  }
  Families& Hist(const Histogram& h, Labels labels = {}, double scale = 1) {
    Histogram::Snap s = h.Snapshot();
    ClientMetric m;
    m.label = std::move(labels);
    const auto& bounds = h.bounds();
    m.histogram.bucket.reserve(bounds.size() + 1);
    uint64_t cum = 0;
    for (size_t i = 0; i < bounds.size(); i++) {
      cum += s.buckets[i];
      m.histogram.bucket.push_back(ClientMetric::Bucket{cum, bounds[i]});
    }
    cum += s.buckets[bounds.size()];
    m.histogram.bucket.push_back(ClientMetric::Bucket{cum, std::numeric_limits<double>::infinity()});
    // The count is the +Inf bucket, so a scrape racing an Observe() is still
    // a consistent histogram.
    m.histogram.sample_count = cum;
    m.histogram.sample_sum = s.sum * scale;
    out_->back().metric.push_back(std::move(m));
    return *this;
  }

  // One-series conveniences.
  void Gauge(const char* name, const char* help, double v) { Open(name, help, MetricType::Gauge).Value(v); }
  void Counter(const char* name, const char* help, double v) { Open(name, help, MetricType::Counter).Value(v); }
  void Histo(const char* name, const char* help, const Histogram& h) {
    Open(name, help, MetricType::Histogram).Hist(h);
  }

 private:
  std::vector<MetricFamily>* out_;
};

double D(uint64_t v) { return static_cast<double>(v); }
double D(int64_t v) { return static_cast<double>(v); }

void CollectServer(Families& f, kv::KvServer* kv) {
  kv::ServerProbe& p = kv->probe();
  raft::RaftProbe& rp = kv->raft_probe();
  const std::string id = Hex16(kv->member_id());

  f.Gauge("etcd_server_has_leader", "Whether this member knows a raft leader (1) or not (0).", D(p.has_leader.Value()));
  f.Gauge("etcd_server_is_leader", "Whether this member is the raft leader (1) or not (0).", D(p.is_leader.Value()));
  f.Counter("etcd_server_leader_changes_seen_total", "Times this member saw a new leader.",
            D(p.leader_changes.Value()));
  bool learner = false;
  for (const auto& m : kv->Members())
    if (m.id == kv->member_id()) learner = m.is_learner;
  f.Gauge("etcd_server_is_learner", "Whether this member is a learner (1) or a voter (0).", learner ? 1 : 0);
  f.Counter("etcd_server_learner_promote_successes", "Learner promotions this member carried out as leader.", 0);
  f.Counter("etcd_server_heartbeat_send_failures_total", "Heartbeats the leader failed to send in time.",
            D(rp.heartbeat_send_failures.Value()));
  f.Counter("etcd_server_slow_apply_total", "Applies that took longer than the 100ms warning threshold.",
            D(p.slow_apply.Value()));
  f.Gauge("etcd_server_snapshot_apply_in_progress_total",
          "1 while an incoming raft snapshot is being applied (a gauge despite its name).", 0);
  f.Gauge("etcd_server_proposals_committed_total", "The raft commit index (a gauge despite its name).",
          D(p.proposals_committed.Value()));
  f.Gauge("etcd_server_proposals_applied_total", "The applied index (a gauge despite its name).",
          D(p.proposals_applied.Value()));
  f.Gauge("etcd_server_proposals_pending", "Proposals accepted by raft whose result has not returned yet.",
          D(p.proposals_pending.Value()));
  f.Counter("etcd_server_proposals_failed_total", "Proposals that failed (rejected by raft, or no result).",
            D(p.proposals_failed.Value()));
  f.Counter("etcd_server_slow_read_indexes_total", "ReadIndex answers that came late or timed out.",
            D(p.slow_read_indexes.Value()));
  f.Counter("etcd_server_read_indexes_failed_total", "ReadIndex requests that failed (leader change, send error).",
            D(rp.read_indexes_failed.Value()));
  f.Gauge("etcd_server_quota_backend_bytes", "The backend quota in bytes (--quota-backend-bytes).",
          D(kv->options().quota_bytes));

  const kv::EtcdVersion& v = kv::EmulatedVersion();
  f.Open("etcd_server_version", "The etcd version this server presents, as a label; value 1.", MetricType::Gauge)
      .Value(1, {{"server_version", v.server}});
  f.Open("etcd_server_id", "This member's ID (hex), as a label; value 1.", MetricType::Gauge)
      .Value(1, {{"server_id", id}});
  f.Open("etcd_cluster_version", "The cluster version (major.minor), as a label; value 1.", MetricType::Gauge)
      .Value(1, {{"cluster_version", v.cluster}});

  // etcd_server_apply_duration_seconds (etcd 3.5+), etcd_server_request_duration_seconds
  // (3.7), etcd_server_range_duration_seconds (3.6+): series appear on first use, as in etcd.
  auto& ap = f.Open("etcd_server_apply_duration_seconds", "Time to apply one committed entry, by request kind.",
                    MetricType::Histogram);
  for (int op = 0; op < kv::kApplyOps; op++) {
    for (bool ok : {false, true}) {
      const Histogram& h = p.apply_seconds.at(op, ok);
      if (h.Snapshot().count == 0) continue;
      ap.Hist(h, {{"version", "v3"}, {"op", kv::kApplyOpNames[op]}, {"success", ok ? "true" : "false"}});
    }
  }
  auto& rq = f.Open("etcd_server_request_duration_seconds",
                    "End-to-end request latency in the server, by request type.", MetricType::Histogram);
  for (int t = 0; t < kv::kRequestTypes; t++) {
    for (bool ok : {false, true}) {
      const Histogram& h = p.request_seconds.at(t, ok);
      if (h.Snapshot().count == 0) continue;
      rq.Hist(h, {{"type", kv::kRequestTypeNames[t]}, {"success", ok ? "true" : "false"}});
    }
  }
  auto& rg = f.Open("etcd_server_range_duration_seconds", "Store execution time of one Range.", MetricType::Histogram);
  for (bool ok : {false, true}) {
    const Histogram& h = p.range_seconds.at(0, ok);
    if (h.Snapshot().count == 0) continue;
    rg.Hist(h, {{"success", ok ? "true" : "false"}});
  }

  // etcd_debugging_server_alarms (3.6+): both alarm types for this member, 1 while active.
  bool nospace = false, corrupt = false;
  for (const auto& a : kv->ActiveAlarms()) {
    nospace |= a == "NOSPACE";
    corrupt |= a == "CORRUPT";
  }
  f.Open("etcd_debugging_server_alarms", "Active alarms of this member by type (1 active, 0 not).", MetricType::Gauge)
      .Value(corrupt ? 1 : 0, {{"server_id", id}, {"alarm_type", "CORRUPT"}})
      .Value(nospace ? 1 : 0, {{"server_id", id}, {"alarm_type", "NOSPACE"}});
}

void CollectDiskAndMvcc(Families& f, kv::KvServer* kv) {
  wal::WalProbe& w = kv->wal_probe();
  mvcc::MvccProbe& m = kv->mvcc_probe();
  kv::ServerProbe& p = kv->probe();

  f.Histo("etcd_disk_wal_fsync_duration_seconds", "WAL fdatasync latency.", w.fsync_seconds);
  f.Histo("etcd_disk_wal_write_duration_seconds", "WAL write latency (without fsync).", w.write_seconds);
  f.Gauge("etcd_disk_wal_write_bytes_total", "Bytes written to the WAL, framing included (a gauge despite its name).",
          D(w.write_bytes.Value()));
  f.Histo("etcd_disk_backend_commit_duration_seconds", "Backend commit latency (LMDB commit, and its fsync when synced).",
          m.commit_seconds);
  f.Histo("etcd_disk_backend_defrag_duration_seconds", "Duration of each backend defragmentation.", p.defrag_seconds);
  f.Gauge("etcd_disk_defrag_inflight", "1 while a defragmentation runs, else 0.", D(p.defrag_inflight.Value()));

  // No Store::Size() here: a read transaction would wait out a running
  // defragmentation. The file size is kept by every commit and defrag
  // (FileBytes), the in-use size by every commit (the probe's gauge).
  const double total = D(kv->store().FileBytes());
  f.Gauge("etcd_mvcc_db_total_size_in_bytes", "Size of the backend file (bytes allocated).", total);
  f.Gauge("etcd_mvcc_db_total_size_in_use_in_bytes", "Bytes of the backend file in use (its size minus free pages).",
          std::min(total, D(m.db_total_size_in_use_bytes.Value())));
  f.Gauge("etcd_debugging_mvcc_db_total_size_in_bytes",
          "Size of the backend file (the etcd 3.4 name of etcd_mvcc_db_total_size_in_bytes).", total);
  f.Gauge("etcd_mvcc_db_open_read_transactions", "Backend read transactions currently open.",
          D(m.open_read_txns.Value()));
  f.Counter("etcd_mvcc_range_total", "Range operations run in mvcc transactions.", D(m.range_total.Value()));
  f.Counter("etcd_mvcc_put_total", "Put operations run in mvcc transactions.", D(m.put_total.Value()));
  f.Counter("etcd_mvcc_delete_total", "DeleteRange operations run in mvcc transactions.", D(m.delete_total.Value()));
  f.Counter("etcd_mvcc_txn_total", "Transactions with more than one operation.", D(m.txn_total.Value()));
  f.Counter("etcd_debugging_mvcc_range_total", "Same as etcd_mvcc_range_total (etcd 3.4 name).",
            D(m.range_total.Value()));
  f.Counter("etcd_debugging_mvcc_put_total", "Same as etcd_mvcc_put_total (etcd 3.4 name).", D(m.put_total.Value()));
  f.Counter("etcd_debugging_mvcc_delete_total", "Same as etcd_mvcc_delete_total (etcd 3.4 name).",
            D(m.delete_total.Value()));
  f.Counter("etcd_debugging_mvcc_txn_total", "Same as etcd_mvcc_txn_total (etcd 3.4 name).", D(m.txn_total.Value()));
  f.Gauge("etcd_debugging_mvcc_total_put_size_in_bytes", "Key and value bytes of every put so far.",
          D(m.total_put_size_bytes.Value()));
  f.Gauge("etcd_debugging_mvcc_keys_total", "Live keys in the key index.", D(m.keys_total.Value()));
  f.Gauge("etcd_debugging_mvcc_current_revision", "The store's current revision.", D(m.current_revision.Value()));
  f.Gauge("etcd_debugging_mvcc_compact_revision", "The last compacted revision.", D(m.compact_revision.Value()));
  f.Histo("etcd_debugging_mvcc_index_compaction_pause_duration_milliseconds",
          "Time the key index compaction took, in milliseconds.", m.index_compaction_pause_ms);
  f.Histo("etcd_debugging_mvcc_db_compaction_pause_duration_milliseconds",
          "Time of each backend compaction chunk, in milliseconds.", m.db_compaction_pause_ms);
  f.Histo("etcd_debugging_mvcc_db_compaction_total_duration_milliseconds",
          "Time of a whole backend compaction, in milliseconds.", m.db_compaction_total_ms);
  f.Counter("etcd_debugging_mvcc_db_compaction_keys_total", "Revisions removed by compaction.",
            D(m.compaction_keys_total.Value()));
  f.Gauge("etcd_debugging_mvcc_db_compaction_last", "Unix time (seconds) the last compaction finished.",
          D(m.db_compaction_last.Value()));

  kv::WatchProbe& wp = kv->watch_probe();
  f.Gauge("etcd_debugging_mvcc_watch_stream_total", "Open watch streams.", D(wp.watch_stream_total.Value()));
  f.Gauge("etcd_debugging_mvcc_watcher_total", "Watchers.", D(wp.watcher_total.Value()));
  f.Gauge("etcd_debugging_mvcc_slow_watcher_total", "Unsynced watchers (behind the current revision).",
          D(wp.slow_watcher_total.Value()));
  lease::LeaseProbe& lp = kv->lease_probe();
  f.Counter("etcd_debugging_lease_granted_total", "Leases granted (applied).", D(lp.granted.Value()));
  f.Counter("etcd_debugging_lease_revoked_total", "Leases revoked (applied).", D(lp.revoked.Value()));
  f.Counter("etcd_debugging_lease_renewed_total", "Keep-alive renewals handled by this member.",
            D(lp.renewed.Value()));
  f.Counter("etcd_debugging_server_lease_expired_total", "Leases revoked because they expired.",
            D(lp.expired.Value()));
  f.Histo("etcd_debugging_lease_ttl_total", "TTL of each lease at grant, in seconds.", lp.ttl_seconds);
  f.Counter("etcd_debugging_mvcc_events_total", "Watch events handed to streams for sending.",
            D(wp.events_total.Value()));
  f.Gauge("etcd_debugging_mvcc_pending_events_total", "Watch events queued and not yet taken by a stream.",
          D(wp.pending_events_total.Value()));
  f.Gauge("engram_watch_stream_buffered_bytes",
          "Bytes of watch replies buffered for all streams (queued, or taken and not yet written to the client); "
          "each stream is held to --watch-stream-buffer-bytes.",
          D(wp.buffered_bytes.Value()));
  f.Gauge("engram_watch_streams_read_paused",
          "Watch streams whose requests are not being read because their buffer reached its budget.",
          D(wp.streams_read_paused.Value()));
  // etcd 3.7's watch send-loop timings.
  f.Histo("etcd_debugging_server_watch_send_loop_watch_stream_duration_seconds",
          "Time to send one reply with watch events on a stream.", wp.send_events_seconds);
  f.Histo("etcd_debugging_server_watch_send_loop_watch_stream_duration_per_event_seconds",
          "Time to send one reply with watch events, divided by its number of events.", wp.send_per_event_seconds);
  f.Histo("etcd_debugging_server_watch_send_loop_control_stream_duration_seconds",
          "Time to send a created or canceled reply.", wp.send_control_seconds);
  f.Histo("etcd_debugging_server_watch_send_loop_progress_duration_seconds",
          "Time to send a progress notification.", wp.send_progress_seconds);
}

void CollectGrpc(Families& f, kv::RpcProbe* rpc) {
  f.Counter("etcd_network_client_grpc_sent_bytes_total", "Protobuf bytes of gRPC responses sent to clients.",
            D(rpc->sent_bytes.Value()));
  f.Counter("etcd_network_client_grpc_received_bytes_total", "Protobuf bytes of gRPC requests received from clients.",
            D(rpc->received_bytes.Value()));

  auto& cr = f.Open("etcd_server_client_requests_total", "gRPC requests carrying metadata, by client API version.",
                    MetricType::Counter);
  rpc->client_requests.ForEach([&](std::string_view version, uint64_t unary, uint64_t stream) {
    if (unary) cr.Value(D(unary), {{"type", "unary"}, {"client_api_version", std::string(version)}});
    if (stream) cr.Value(D(stream), {{"type", "stream"}, {"client_api_version", std::string(version)}});
  });

  auto labels = [](int i) -> Labels {
    const kv::RpcMethodInfo& mi = kv::kRpcMethods[i];
    return {{"grpc_method", mi.method}, {"grpc_service", mi.service}, {"grpc_type", kv::GrpcTypeName(mi.type)}};
  };
  // Lazy methods (v3lock, v3election) only once used, and then only the
  // codes seen, as etcd (their services are registered after its metrics).
  auto shown = [&](int i) { return !kv::kRpcMethods[i].lazy || rpc->method(i).started.Value() > 0; };
  auto& st = f.Open("grpc_server_started_total", "RPCs started on the server.", MetricType::Counter);
  for (int i = 0; i < kv::kRpcMethodCount; i++)
    if (shown(i)) st.Value(D(rpc->method(i).started.Value()), labels(i));
  auto& hd = f.Open("grpc_server_handled_total", "RPCs completed on the server, by status code.", MetricType::Counter);
  for (int i = 0; i < kv::kRpcMethodCount; i++) {
    if (!shown(i)) continue;
    for (int c = 0; c < kv::kGrpcCodes; c++) {
      if (kv::kRpcMethods[i].lazy && rpc->method(i).handled[c].Value() == 0) continue;
      Labels l = labels(i);
      l.insert(l.begin(), ClientMetric::Label{"grpc_code", kv::kGrpcCodeNames[c]});
      hd.Value(D(rpc->method(i).handled[c].Value()), std::move(l));
    }
  }
  auto& mr = f.Open("grpc_server_msg_received_total", "Stream messages received by the server.", MetricType::Counter);
  for (int i = 0; i < kv::kRpcMethodCount; i++)
    if (shown(i)) mr.Value(D(rpc->method(i).msg_received.Value()), labels(i));
  auto& ms = f.Open("grpc_server_msg_sent_total", "Stream messages sent by the server.", MetricType::Counter);
  for (int i = 0; i < kv::kRpcMethodCount; i++)
    if (shown(i)) ms.Value(D(rpc->method(i).msg_sent.Value()), labels(i));
  // etcd shows this one only with --metrics=extensive; Engram always does.
  auto& hs = f.Open("grpc_server_handling_seconds", "Time from the start of an RPC to its status, in seconds.",
                    MetricType::Histogram);
  for (int i = 0; i < kv::kRpcMethodCount; i++)
    if (shown(i)) hs.Hist(rpc->method(i).handling_seconds, labels(i));
}

void CollectHealth(Families& f, HealthProbe* h) {
  f.Counter("etcd_server_health_success", "/health requests answered healthy.", D(h->health_success.Value()));
  f.Counter("etcd_server_health_failures", "/health requests answered unhealthy.", D(h->health_failures.Value()));
  auto& g = f.Open("etcd_server_healthcheck", "Whether the last run of a /livez or /readyz check passed (1) or not (0).",
                   MetricType::Gauge);
  auto each = [&](auto&& fn) {
    for (const char* type : {"livez", "readyz"}) {
      const auto& checks = std::string_view(type) == "livez" ? h->livez : h->readyz;
      for (int i = 0; i < HealthProbe::kChecks; i++) {
        if (checks[i].ran.load(std::memory_order_acquire)) fn(type, HealthProbe::kCheckNames[i], checks[i]);
      }
    }
  };
  each([&](const char* type, const char* name, const HealthProbe::Check& c) {
    g.Value(D(c.passed.Value()), {{"name", name}, {"type", type}});
  });
  auto& t = f.Open("etcd_server_healthchecks_total", "Runs of each /livez and /readyz check, by outcome.",
                   MetricType::Counter);
  each([&](const char* type, const char* name, const HealthProbe::Check& c) {
    t.Value(D(c.error.Value()), {{"name", name}, {"status", "error"}, {"type", type}});
    t.Value(D(c.success.Value()), {{"name", name}, {"status", "success"}, {"type", type}});
  });
  auto& s = f.Open("promhttp_metric_handler_requests_total", "/metrics requests served, by HTTP status code.",
                   MetricType::Counter);
  s.Value(D(h->scrapes.Value()), {{"code", "200"}}).Value(0, {{"code", "500"}}).Value(0, {{"code", "503"}});
}

void CollectProcess(Families& f, const CollectorOptions& opts) {
  ProcessStats ps = ReadProcessStats();
  if (ps.ok) {
    f.Counter("process_cpu_seconds_total", "User and system CPU time of the process, in seconds.", ps.cpu_seconds);
    f.Gauge("process_open_fds", "Open file descriptors.", ps.open_fds);
    f.Gauge("process_max_fds", "The file descriptor limit.", ps.max_fds);
    f.Gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.", ps.virtual_memory_bytes);
    f.Gauge("process_virtual_memory_max_bytes", "The virtual memory limit in bytes.", ps.virtual_memory_max_bytes);
    f.Gauge("process_resident_memory_bytes", "Resident memory size in bytes.", ps.resident_memory_bytes);
    f.Gauge("process_start_time_seconds", "Start time of the process since the unix epoch, in seconds.",
            ps.start_time_seconds);
    f.Gauge("engram_threads", "Threads of the engram process.", D(ps.threads));
  }
  f.Gauge("os_fd_used", "Open file descriptors.", ps.open_fds);
  f.Gauge("os_fd_limit", "The file descriptor limit.", ps.max_fds);
  if (opts.in_flight != nullptr) {
    f.Gauge("promhttp_metric_handler_requests_in_flight", "/metrics requests being served right now.",
            D(opts.in_flight->load(std::memory_order_relaxed)));
  }
  AllocatorStats a = ReadAllocatorStats();
  if (a.ok) {
    f.Gauge("engram_allocator_resident_bytes",
            "Bytes glibc malloc holds from the OS (arenas plus mmapped blocks): its share of the resident memory, "
            "at most.",
            a.resident_bytes);
    f.Gauge("engram_allocator_arena_bytes", "Bytes of glibc malloc's arenas (brk/mmap heaps).", a.arena_bytes);
    f.Gauge("engram_allocator_mmap_bytes", "Bytes of large blocks glibc malloc serves with their own mmap.",
            a.mmap_bytes);
    f.Gauge("engram_allocator_in_use_bytes", "Bytes allocated by the program through malloc.", a.in_use_bytes);
    f.Gauge("engram_allocator_free_bytes", "Bytes glibc malloc holds but has free (fragmentation, caches).",
            a.free_bytes);
  }
}

void CollectEngram(Families& f, kv::KvServer* kv) {
  kv::ServerProbe& p = kv->probe();
  f.Gauge("engram_server_heartbeat_interval_seconds", "The raft heartbeat interval (--heartbeat-interval), in seconds.",
          kv->options().heartbeat_ms / 1000.0);
  f.Gauge("engram_disk_startup_fsync_seconds",
          "Median fdatasync latency of the WAL disk, measured once at start, in seconds.",
          D(p.startup_fsync_p50_ns.Value()) / 1e9);
  f.Gauge("engram_disk_startup_fsync_seconds_p99",
          "99th percentile fdatasync latency of the WAL disk, measured once at start, in seconds.",
          D(p.startup_fsync_p99_ns.Value()) / 1e9);
  f.Gauge("engram_raft_term", "The current raft term.", D(kv->raft_probe().term.Value()));
  f.Counter("engram_raft_elections_started_total", "Campaigns (pre-vote or vote) this member started.",
            D(kv->raft_probe().elections_started.Value()));

  const mvcc::PrefixStats& ps = kv->store().prefix_stats();
  if (ps.enabled()) {
    std::vector<mvcc::PrefixStats::Entry> entries = ps.Snapshot();
    auto& k = f.Open("engram_mvcc_prefix_keys", "Live keys per key prefix (--metrics-prefix-depth).",
                     MetricType::Gauge);
    for (const auto& e : entries) k.Value(D(e.keys), {{"prefix", e.prefix}});
    auto& b = f.Open("engram_mvcc_prefix_bytes", "Live key and value bytes per key prefix (--metrics-prefix-depth).",
                     MetricType::Gauge);
    for (const auto& e : entries) b.Value(D(e.bytes), {{"prefix", e.prefix}});
  }

  auto& rq = f.Open("engram_server_request_duration_seconds",
                    "End-to-end latency of each request in the server core, from call to completion, by type.",
                    MetricType::Histogram);
  for (int t = 0; t < kv::kRequestTypes; t++) {
    for (bool ok : {false, true}) {
      rq.Hist(p.request_seconds.at(t, ok), {{"success", ok ? "true" : "false"}, {"type", kv::kRequestTypeNames[t]}});
    }
  }
}

}  // namespace

Collector::Collector(kv::KvServer* kv, kv::RpcProbe* rpc, HealthProbe* health, CollectorOptions opts)
    : kv_(kv), rpc_(rpc), health_(health), opts_(opts) {}

std::vector<MetricFamily> Collector::Collect() const {
  std::vector<MetricFamily> out;
  out.reserve(128);
  Families f(&out);
  if (kv_ != nullptr) {
    CollectServer(f, kv_);
    CollectDiskAndMvcc(f, kv_);
    CollectEngram(f, kv_);
  }
  if (rpc_ != nullptr) CollectGrpc(f, rpc_);
  if (health_ != nullptr) CollectHealth(f, health_);
  CollectProcess(f, opts_);
  return out;
}

}  // namespace engram::exporter
