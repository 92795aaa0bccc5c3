// The metrics the Exporter renders, checked against etcd's exposition
// (../shared/reference/etcd-observability.md §1-2): family names, TYPE lines,
// label names, histogram `le` strings exactly as Go prints them, process
// metrics, and Engram's per-prefix accounting over put/delete/reopen.
#include "exporter/exporter.h"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <limits>
#include <condition_variable>
#include <ctime>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <sstream>

#include "exporter/process_metrics.h"
#include "src/mvcc/prefix_stats.h"
#include "src/kv/testing.h"

namespace engram::exporter {
namespace {

// ---------------------------------------------------------------- parsing

struct Parsed {
  std::map<std::string, std::string> type;                  // family -> TYPE
  std::map<std::string, std::set<std::string>> label_names;  // family -> label names (le/quantile excluded)
  std::map<std::string, std::vector<std::string>> les;       // histogram family -> le strings of its first series
  std::map<std::string, std::string> samples;                // full sample line left of the value -> value text
};

// The family a sample belongs to (strips histogram suffixes when the base is a histogram).
std::string FamilyOf(const Parsed& p, const std::string& name) {
  for (const char* suf : {"_bucket", "_sum", "_count"}) {
    std::string s(suf);
    if (name.size() > s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0) {
      std::string base = name.substr(0, name.size() - s.size());
      auto it = p.type.find(base);
      if (it != p.type.end() && (it->second == "histogram" || it->second == "summary")) return base;
    }
  }
  return name;
}

Parsed Parse(const std::string& text) {
  Parsed p;
  std::istringstream in(text);
  std::string line;
  std::set<std::string> first_series_done;
  while (std::getline(in, line)) {
    if (line.rfind("# TYPE ", 0) == 0) {
      std::istringstream ls(line.substr(7));
      std::string name, type;
      ls >> name >> type;
      p.type[name] = type;
      continue;
    }
    if (line.empty() || line[0] == '#') continue;
    size_t brace = line.find('{');
    size_t space = line.rfind(' ');
    std::string name = line.substr(0, std::min(brace, space));
    std::string family = FamilyOf(p, name);
    p.samples[line.substr(0, space)] = line.substr(space + 1);
    p.label_names[family];  // present even without labels
    if (brace == std::string::npos || brace > space) continue;
    std::string labels = line.substr(brace + 1, line.rfind('}') - brace - 1);
    // name="value" pairs; values here never contain '"' or ','.
    std::string le;
    size_t pos = 0;
    while (pos < labels.size()) {
      size_t eq = labels.find('=', pos);
      size_t q2 = labels.find('"', eq + 2);
      std::string ln = labels.substr(pos, eq - pos);
      std::string lv = labels.substr(eq + 2, q2 - eq - 2);
      if (ln == "le") {
        le = lv;
      } else if (ln != "quantile") {
        p.label_names[family].insert(ln);
      }
      pos = q2 + 2;
    }
    if (!le.empty() && !first_series_done.count(family)) {
      p.les[family].push_back(le);
      if (le == "+Inf") first_series_done.insert(family);
    }
  }
  return p;
}

std::vector<std::string> Les(std::initializer_list<const char*> l) {
  std::vector<std::string> v(l.begin(), l.end());
  v.push_back("+Inf");
  return v;
}

// etcd's bucket strings (reference §1.0).
const std::vector<std::string> kB1 = Les({"0.001", "0.002", "0.004", "0.008", "0.016", "0.032", "0.064", "0.128",
                                          "0.256", "0.512", "1.024", "2.048", "4.096", "8.192"});
const std::vector<std::string> kB4 = Les({"0.1", "0.2", "0.4", "0.8", "1.6", "3.2", "6.4", "12.8", "25.6", "51.2",
                                          "102.4", "204.8", "409.6"});
const std::vector<std::string> kB7 = Les({"0.5", "1", "2", "4", "8", "16", "32", "64", "128", "256", "512", "1024",
                                          "2048", "4096"});
const std::vector<std::string> kB8 = Les({"1", "2", "4", "8", "16", "32", "64", "128", "256", "512", "1024", "2048",
                                          "4096"});
const std::vector<std::string> kB9 = Les({"100", "200", "400", "800", "1600", "3200", "6400", "12800", "25600",
                                          "51200", "102400", "204800", "409600", "819200"});
const std::vector<std::string> kB12 = Les({"0.0001", "0.0002", "0.0004", "0.0008", "0.0016", "0.0032", "0.0064",
                                           "0.0128", "0.0256", "0.0512", "0.1024", "0.2048", "0.4096", "0.8192",
                                           "1.6384", "3.2768", "6.5536", "13.1072", "26.2144", "52.4288"});
const std::vector<std::string> kDEF = Les({"0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5",
                                           "10"});

// ---------------------------------------------------------------- numbers

TEST(GoFloatTest, FormatsAsGoStrconvShortest) {
  struct Case {
    double v;
    const char* want;
  } cases[] = {
      {0, "0"},
      {1, "1"},
      {-1, "-1"},
      {0.001, "0.001"},
      {8.192, "8.192"},
      {0.0001, "0.0001"},
      {0.00005, "5e-05"},
      {1.6384, "1.6384"},
      {52.4288, "52.4288"},
      {409.6, "409.6"},
      {524288, "524288"},
      {999999, "999999"},
      {1e6, "1e+06"},
      {1048576, "1.048576e+06"},
      {8388608, "8.388608e+06"},
      {2147483648.0, "2.147483648e+09"},
      {18446744073709551615.0, "1.8446744073709552e+19"},
      {1.5e-7, "1.5e-07"},
      {0.1 + 0.2, "0.30000000000000004"},
      {-0.25, "-0.25"},
      {1e100, "1e+100"},
      {123456.5, "123456.5"},
      {std::numeric_limits<double>::infinity(), "+Inf"},
      {-std::numeric_limits<double>::infinity(), "-Inf"},
      {std::nan(""), "NaN"},
  };
  for (const auto& c : cases) EXPECT_EQ(FormatGoFloat(c.v), c.want) << c.want;
  // The bounds the probes use, from their own Exponential(), print as etcd's.
  std::vector<std::string> b10;
  for (double b : Histogram::Exponential(1, 2, 24)) b10.push_back(FormatGoFloat(b));
  EXPECT_EQ(b10.back(), "8.388608e+06");
  EXPECT_EQ(b10[20], "1.048576e+06");
  EXPECT_EQ(b10[19], "524288");
}

TEST(SerializeTextTest, FormatOfEachKind) {
  using prometheus::ClientMetric;
  using prometheus::MetricFamily;
  using prometheus::MetricType;
  std::vector<MetricFamily> fams;
  MetricFamily g{"b_gauge", "help with \\ and\nnewline", MetricType::Gauge, {}};
  ClientMetric m;
  m.label = {{"z", "1"}, {"a", "q\"uote"}};
  m.gauge.value = 1048576;
  g.metric.push_back(m);
  fams.push_back(g);
  MetricFamily h{"a_hist", "h", MetricType::Histogram, {}};
  ClientMetric hm;
  hm.histogram.sample_count = 3;
  hm.histogram.sample_sum = 0.5;
  hm.histogram.bucket = {{1, 0.001}, {3, std::numeric_limits<double>::infinity()}};
  h.metric.push_back(hm);
  fams.push_back(h);
  fams.push_back(MetricFamily{"c_empty", "no series: left out", MetricType::Counter, {}});
  EXPECT_EQ(SerializeText(fams),
            "# HELP a_hist h\n"
            "# TYPE a_hist histogram\n"
            "a_hist_bucket{le=\"0.001\"} 1\n"
            "a_hist_bucket{le=\"+Inf\"} 3\n"
            "a_hist_sum 0.5\n"
            "a_hist_count 3\n"
            "# HELP b_gauge help with \\\\ and\\nnewline\n"
            "# TYPE b_gauge gauge\n"
            "b_gauge{a=\"q\\\"uote\",z=\"1\"} 1.048576e+06\n");
}

// ---------------------------------------------------------------- prefixes

TEST(PrefixStatsTest, PrefixOf) {
  using mvcc::PrefixStats;
  EXPECT_EQ(PrefixStats::PrefixOf("/registry/pods/default/web-0", 2), "/registry/pods");
  EXPECT_EQ(PrefixStats::PrefixOf("/registry/pods/default/web-0", 1), "/registry");
  EXPECT_EQ(PrefixStats::PrefixOf("/registry/pods/default/web-0", 3), "/registry/pods/default");
  EXPECT_EQ(PrefixStats::PrefixOf("/registry/ranges", 2), "/registry");
  EXPECT_EQ(PrefixStats::PrefixOf("/registry/pods/", 2), "/registry/pods");
  EXPECT_EQ(PrefixStats::PrefixOf("/foo", 2), "other");
  EXPECT_EQ(PrefixStats::PrefixOf("tenant1/a/b", 2), "tenant1");
  EXPECT_EQ(PrefixStats::PrefixOf("foo", 2), "other");
  EXPECT_EQ(PrefixStats::PrefixOf("", 2), "other");
  EXPECT_EQ(PrefixStats::PrefixOf("/", 2), "other");
}

TEST(PrefixStatsTest, CardinalityIsBounded) {
  mvcc::PrefixStats s(2);
  mvcc::PrefixStats::Delta d;
  for (size_t i = 0; i < mvcc::PrefixStats::kMaxPrefixes + 10; i++) s.Count(&d, "/p" + std::to_string(i) + "/x/k", 1, 5);
  s.Apply(&d);
  auto snap = s.Snapshot();
  EXPECT_EQ(snap.size(), mvcc::PrefixStats::kMaxPrefixes + 1);
  int64_t keys = 0, other = 0;
  for (const auto& e : snap) {
    keys += e.keys;
    if (e.prefix == "other") other = e.keys;
  }
  EXPECT_EQ(keys, static_cast<int64_t>(mvcc::PrefixStats::kMaxPrefixes + 10));
  EXPECT_EQ(other, 10);
  // A late prefix keeps going to "other", also when its keys go away.
  s.Count(&d, "/p300/x/k", -1, -5);
  s.Apply(&d);
  for (const auto& e : s.Snapshot())
    if (e.prefix == "other") EXPECT_EQ(e.keys, 9);
}

// ---------------------------------------------------------------- a live member

class ExporterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/exporter-" + std::to_string(::getpid()) + "-" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override {
    kv_.reset();
    std::filesystem::remove_all(dir_);
  }

  void Open(int prefix_depth = 2) {
    kv::Options o = kv::kvtest::TestOptions(dir_, "m1");
    o.member_id = 0x8e9e05c52164694dULL;
    o.metrics_prefix_depth = prefix_depth;
    auto s = kv::KvServer::Open(o);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    kv_ = std::move(*s);
  }

  template <class Req, class Resp, class Fn>
  Status Call(Fn fn, Req& req, Resp& resp) {
    return kv::Await([&](kv::Done done) { fn(&req, &resp, std::move(done)); });
  }
  Status Put(const std::string& k, const std::string& v) {
    return kv::kvtest::PutSync(*kv_, k, v);
  }
  Status Delete(const std::string& k) {
    etcdserverpb::DeleteRangeRequest req;
    req.set_key(k);
    etcdserverpb::DeleteRangeResponse resp;
    return Call([&](auto* q, auto* r, auto d) { kv_->DeleteRange(q, r, d); }, req, resp);
  }
  std::map<std::string, std::pair<int64_t, int64_t>> Prefixes() {
    std::map<std::string, std::pair<int64_t, int64_t>> m;
    for (const auto& e : kv_->store().prefix_stats().Snapshot()) m[e.prefix] = {e.keys, e.bytes};
    return m;
  }

  std::string dir_;
  std::unique_ptr<kv::KvServer> kv_;
};

// Every family the reference marks A/D/D7 (plus the rest Engram has), with
// etcd's TYPE and label names.
TEST_F(ExporterTest, FamiliesTypesAndLabels) {
  Open();
  ASSERT_TRUE(Put("/registry/pods/a", "v").ok());
  etcdserverpb::RangeRequest rr;
  rr.set_key("/registry/pods/a");
  etcdserverpb::RangeResponse rresp;
  ASSERT_TRUE(kv_->Range(rr, &rresp).ok());
  kv::RpcProbe rpc;
  rpc.client_requests.Inc(false, "3.4");
  HealthProbe health;
  health.readyz[0].ran = true;
  health.readyz[0].success.Inc();
  health.readyz[0].passed.Set(1);
  Exporter ex(kv_.get(), &rpc, &health, {});
  Parsed p = Parse(ex.RenderText());

  using S = std::set<std::string>;
  const S kGrpc = {"grpc_type", "grpc_service", "grpc_method"};
  struct Want {
    const char* name;
    const char* type;
    S labels;
  } wants[] = {
      // server / raft
      {"etcd_server_has_leader", "gauge", {}},
      {"etcd_server_is_leader", "gauge", {}},
      {"etcd_server_leader_changes_seen_total", "counter", {}},
      {"etcd_server_is_learner", "gauge", {}},
      {"etcd_server_learner_promote_successes", "counter", {}},
      {"etcd_server_heartbeat_send_failures_total", "counter", {}},
      {"etcd_server_slow_apply_total", "counter", {}},
      {"etcd_server_snapshot_apply_in_progress_total", "gauge", {}},
      {"etcd_server_proposals_committed_total", "gauge", {}},
      {"etcd_server_proposals_applied_total", "gauge", {}},
      {"etcd_server_proposals_pending", "gauge", {}},
      {"etcd_server_proposals_failed_total", "counter", {}},
      {"etcd_server_slow_read_indexes_total", "counter", {}},
      {"etcd_server_read_indexes_failed_total", "counter", {}},
      {"etcd_server_quota_backend_bytes", "gauge", {}},
      {"etcd_server_version", "gauge", {"server_version"}},
      {"etcd_server_id", "gauge", {"server_id"}},
      {"etcd_cluster_version", "gauge", {"cluster_version"}},
      {"etcd_server_client_requests_total", "counter", {"type", "client_api_version"}},
      {"etcd_server_apply_duration_seconds", "histogram", {"version", "op", "success"}},
      {"etcd_server_request_duration_seconds", "histogram", {"type", "success"}},
      {"etcd_server_range_duration_seconds", "histogram", {"success"}},
      {"etcd_debugging_server_alarms", "gauge", {"server_id", "alarm_type"}},
      {"etcd_server_health_success", "counter", {}},
      {"etcd_server_health_failures", "counter", {}},
      {"etcd_server_healthcheck", "gauge", {"type", "name"}},
      {"etcd_server_healthchecks_total", "counter", {"type", "name", "status"}},
      {"os_fd_used", "gauge", {}},
      {"os_fd_limit", "gauge", {}},
      // disk
      {"etcd_disk_wal_fsync_duration_seconds", "histogram", {}},
      {"etcd_disk_wal_write_duration_seconds", "histogram", {}},
      {"etcd_disk_wal_write_bytes_total", "gauge", {}},
      {"etcd_disk_backend_commit_duration_seconds", "histogram", {}},
      {"etcd_disk_backend_defrag_duration_seconds", "histogram", {}},
      {"etcd_disk_defrag_inflight", "gauge", {}},
      // mvcc
      {"etcd_mvcc_db_total_size_in_bytes", "gauge", {}},
      {"etcd_mvcc_db_total_size_in_use_in_bytes", "gauge", {}},
      {"etcd_debugging_mvcc_db_total_size_in_bytes", "gauge", {}},
      {"etcd_mvcc_db_open_read_transactions", "gauge", {}},
      {"etcd_mvcc_range_total", "counter", {}},
      {"etcd_mvcc_put_total", "counter", {}},
      {"etcd_mvcc_delete_total", "counter", {}},
      {"etcd_mvcc_txn_total", "counter", {}},
      {"etcd_debugging_mvcc_range_total", "counter", {}},
      {"etcd_debugging_mvcc_put_total", "counter", {}},
      {"etcd_debugging_mvcc_delete_total", "counter", {}},
      {"etcd_debugging_mvcc_txn_total", "counter", {}},
      {"etcd_debugging_mvcc_total_put_size_in_bytes", "gauge", {}},
      {"etcd_debugging_mvcc_keys_total", "gauge", {}},
      {"etcd_debugging_mvcc_watch_stream_total", "gauge", {}},
      {"etcd_debugging_mvcc_watcher_total", "gauge", {}},
      {"etcd_debugging_mvcc_slow_watcher_total", "gauge", {}},
      {"etcd_debugging_mvcc_events_total", "counter", {}},
      {"etcd_debugging_lease_granted_total", "counter", {}},
      {"etcd_debugging_lease_revoked_total", "counter", {}},
      {"etcd_debugging_lease_renewed_total", "counter", {}},
      {"etcd_debugging_server_lease_expired_total", "counter", {}},
      {"etcd_debugging_lease_ttl_total", "histogram", {}},
      {"etcd_debugging_mvcc_pending_events_total", "gauge", {}},
      {"etcd_debugging_mvcc_index_compaction_pause_duration_milliseconds", "histogram", {}},
      {"etcd_debugging_mvcc_db_compaction_pause_duration_milliseconds", "histogram", {}},
      {"etcd_debugging_mvcc_db_compaction_total_duration_milliseconds", "histogram", {}},
      {"etcd_debugging_mvcc_db_compaction_keys_total", "counter", {}},
      {"etcd_debugging_mvcc_db_compaction_last", "gauge", {}},
      {"etcd_debugging_mvcc_current_revision", "gauge", {}},
      {"etcd_debugging_mvcc_compact_revision", "gauge", {}},
      // network, gRPC
      {"etcd_network_client_grpc_sent_bytes_total", "counter", {}},
      {"etcd_network_client_grpc_received_bytes_total", "counter", {}},
      {"grpc_server_started_total", "counter", kGrpc},
      {"grpc_server_handled_total", "counter", {"grpc_type", "grpc_service", "grpc_method", "grpc_code"}},
      {"grpc_server_msg_received_total", "counter", kGrpc},
      {"grpc_server_msg_sent_total", "counter", kGrpc},
      {"grpc_server_handling_seconds", "histogram", kGrpc},
      // process
      {"process_cpu_seconds_total", "counter", {}},
      {"process_open_fds", "gauge", {}},
      {"process_max_fds", "gauge", {}},
      {"process_virtual_memory_bytes", "gauge", {}},
      {"process_virtual_memory_max_bytes", "gauge", {}},
      {"process_resident_memory_bytes", "gauge", {}},
      {"process_start_time_seconds", "gauge", {}},
      {"promhttp_metric_handler_requests_total", "counter", {"code"}},
      {"promhttp_metric_handler_requests_in_flight", "gauge", {}},
      // Engram's own
      {"engram_allocator_resident_bytes", "gauge", {}},
      {"engram_allocator_arena_bytes", "gauge", {}},
      {"engram_allocator_in_use_bytes", "gauge", {}},
      {"engram_allocator_free_bytes", "gauge", {}},
      {"engram_threads", "gauge", {}},
      {"engram_server_heartbeat_interval_seconds", "gauge", {}},
      {"engram_disk_startup_fsync_seconds", "gauge", {}},
      {"engram_disk_startup_fsync_seconds_p99", "gauge", {}},
      {"engram_mvcc_prefix_keys", "gauge", {"prefix"}},
      {"engram_mvcc_prefix_bytes", "gauge", {"prefix"}},
      {"engram_server_request_duration_seconds", "histogram", {"type", "success"}},
  };
  for (const auto& w : wants) {
    ASSERT_TRUE(p.type.count(w.name)) << "missing family " << w.name;
    EXPECT_EQ(p.type[w.name], w.type) << w.name;
    EXPECT_EQ(p.label_names[w.name], w.labels) << w.name;
  }
  // Several etcd *_total families are gauges (reference §1.0), and
  // etcd_debugging_lease_ttl_total is a histogram; every other _total here is
  // a counter.
  const S gauge_totals = {"etcd_server_proposals_committed_total", "etcd_server_proposals_applied_total",
                          "etcd_disk_wal_write_bytes_total", "etcd_server_snapshot_apply_in_progress_total",
                          "etcd_debugging_mvcc_keys_total", "etcd_debugging_mvcc_watch_stream_total",
                          "etcd_debugging_mvcc_watcher_total", "etcd_debugging_mvcc_slow_watcher_total",
                          "etcd_debugging_mvcc_pending_events_total"};
  for (const auto& [name, type] : p.type) {
    if (name.size() < 6 || name.compare(name.size() - 6, 6, "_total") != 0) continue;
    if (name == "etcd_debugging_lease_ttl_total") {
      EXPECT_EQ("histogram", type);
      continue;
    }
    EXPECT_EQ(type, gauge_totals.count(name) ? "gauge" : "counter") << name;
  }

  // Values that are known here.
  EXPECT_EQ(p.samples["etcd_server_has_leader"], "1");
  EXPECT_EQ(p.samples["etcd_server_id{server_id=\"8e9e05c52164694d\"}"], "1");
  EXPECT_EQ(p.samples["etcd_server_version{server_version=\"" + kv::EmulatedVersion().server + "\"}"], "1");
  EXPECT_EQ(p.samples["etcd_server_quota_backend_bytes"], "2.147483648e+09");
  EXPECT_EQ(p.samples["etcd_server_client_requests_total{client_api_version=\"3.4\",type=\"unary\"}"], "1");
  EXPECT_EQ(p.samples["engram_mvcc_prefix_keys{prefix=\"/registry/pods\"}"], "1");
  EXPECT_EQ(p.samples["engram_server_heartbeat_interval_seconds"], "0.01");
  EXPECT_EQ(p.samples["etcd_server_request_duration_seconds_count{success=\"true\",type=\"Put\"}"], "1");
  EXPECT_EQ(p.samples["etcd_server_request_duration_seconds_count{success=\"true\",type=\"Range\"}"], "1");
  EXPECT_EQ(p.samples["etcd_server_apply_duration_seconds_count{op=\"Put\",success=\"true\",version=\"v3\"}"], "1");
  EXPECT_EQ(p.samples["etcd_mvcc_put_total"], "1");
  EXPECT_EQ(p.samples["etcd_server_healthcheck{name=\"serializable_read\",type=\"readyz\"}"], "1");
  EXPECT_EQ(p.samples["promhttp_metric_handler_requests_in_flight"], "1");
  EXPECT_GT(std::stod(p.samples["engram_disk_startup_fsync_seconds"]), 0);
  // Pre-created gRPC series: every method x every code, at zero.
  EXPECT_EQ(p.samples["grpc_server_handled_total{grpc_code=\"Unavailable\",grpc_method=\"Watch\","
                      "grpc_service=\"etcdserverpb.Watch\",grpc_type=\"bidi_stream\"}"],
            "0");
  EXPECT_EQ(p.samples["grpc_server_started_total{grpc_method=\"Check\",grpc_service=\"grpc.health.v1.Health\","
                      "grpc_type=\"unary\"}"],
            "0");
  int handled = 0;
  for (const auto& [k, v] : p.samples) handled += k.rfind("grpc_server_handled_total{", 0) == 0;
  int eager = 0;
  for (int i = 0; i < kv::kRpcMethodCount; i++) eager += !kv::kRpcMethods[i].lazy;
  EXPECT_EQ(handled, eager * kv::kGrpcCodes);
  // v3lock/v3election series appear only once used (etcd registers them late).
  EXPECT_EQ(0u, p.samples.count("grpc_server_started_total{grpc_method=\"Lock\",grpc_service=\"v3lockpb.Lock\","
                                "grpc_type=\"unary\"}"));
}

TEST_F(ExporterTest, HistogramBucketsAsEtcdPrintsThem) {
  Open();
  ASSERT_TRUE(Put("k", "v").ok());
  kv::RpcProbe rpc;
  Exporter ex(kv_.get(), &rpc, nullptr, {});
  Parsed p = Parse(ex.RenderText());
  for (const char* b1 : {"etcd_disk_wal_fsync_duration_seconds", "etcd_disk_wal_write_duration_seconds",
                         "etcd_disk_backend_commit_duration_seconds", "etcd_server_request_duration_seconds",
                         "engram_server_request_duration_seconds"})
    EXPECT_EQ(p.les[b1], kB1) << b1;
  EXPECT_EQ(p.les["grpc_server_handling_seconds"], kDEF);
  EXPECT_EQ(p.les["etcd_server_apply_duration_seconds"], kB12);
  EXPECT_EQ(p.les["etcd_server_range_duration_seconds"], std::vector<std::string>{})
      << "no Range yet: no series, as etcd";
  EXPECT_EQ(p.les["etcd_disk_backend_defrag_duration_seconds"], kB4);
  EXPECT_EQ(p.les["etcd_debugging_mvcc_index_compaction_pause_duration_milliseconds"], kB7);
  EXPECT_EQ(p.les["etcd_debugging_mvcc_db_compaction_pause_duration_milliseconds"], kB8);
  EXPECT_EQ(p.les["etcd_debugging_mvcc_db_compaction_total_duration_milliseconds"], kB9);
}

TEST_F(ExporterTest, ProcessMetricsArePlausible) {
  Open();
  Exporter ex(kv_.get(), nullptr, nullptr, {});
  Parsed p = Parse(ex.RenderText());
  double rss = std::stod(p.samples["process_resident_memory_bytes"]);
  EXPECT_GT(rss, 1 << 20);
  EXPECT_LT(rss, 64.0 * (1ull << 30));
  EXPECT_GE(std::stod(p.samples["process_open_fds"]), 3);
  EXPECT_EQ(p.samples["process_open_fds"], p.samples["os_fd_used"]);
  struct rlimit rl;
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &rl), 0);
  EXPECT_EQ(std::stod(p.samples["process_max_fds"]), static_cast<double>(rl.rlim_cur));
  ASSERT_EQ(getrlimit(RLIMIT_AS, &rl), 0);
  if (rl.rlim_cur == RLIM_INFINITY) EXPECT_EQ(p.samples["process_virtual_memory_max_bytes"], "1.8446744073709552e+19");
  double start = std::stod(p.samples["process_start_time_seconds"]);
  double now = static_cast<double>(std::time(nullptr));
  EXPECT_LE(start, now + 2);
  EXPECT_GT(start, now - 24 * 3600.0) << "this test process started within a day";
  EXPECT_GE(std::stod(p.samples["process_cpu_seconds_total"]), 0);
  EXPECT_GT(std::stod(p.samples["process_virtual_memory_bytes"]), rss);
  EXPECT_GE(std::stod(p.samples["engram_threads"]), 3) << "raft, apply and syncer threads at least";
  EXPECT_GT(std::stod(p.samples["engram_allocator_in_use_bytes"]), 0);
}

TEST_F(ExporterTest, PrefixStatsFollowPutDeleteAndReopen) {
  Open();
  ASSERT_TRUE(Put("/registry/pods/ns/a", "12345").ok());       // 19 + 5
  ASSERT_TRUE(Put("/registry/pods/ns/b", "1").ok());           // 19 + 1
  ASSERT_TRUE(Put("/registry/services/ns/s", "xy").ok());      // 23 + 2
  ASSERT_TRUE(Put("tenant/k", "v").ok());                      // 8 + 1
  ASSERT_TRUE(Put("plain", "v").ok());                         // 5 + 1
  auto m = Prefixes();
  EXPECT_EQ(m["/registry/pods"], std::make_pair(int64_t{2}, int64_t{44}));
  EXPECT_EQ(m["/registry/services"], std::make_pair(int64_t{1}, int64_t{25}));
  EXPECT_EQ(m["tenant"], std::make_pair(int64_t{1}, int64_t{9}));
  EXPECT_EQ(m["other"], std::make_pair(int64_t{1}, int64_t{6}));
  // Overwrite: same keys, bytes follow the new value.
  ASSERT_TRUE(Put("/registry/pods/ns/a", "123456789").ok());
  EXPECT_EQ(Prefixes()["/registry/pods"], std::make_pair(int64_t{2}, int64_t{48}));
  // Delete.
  ASSERT_TRUE(Delete("/registry/pods/ns/b").ok());
  EXPECT_EQ(Prefixes()["/registry/pods"], std::make_pair(int64_t{1}, int64_t{28}));
  ASSERT_TRUE(Delete("/registry/pods/ns/nothing").ok());
  EXPECT_EQ(Prefixes()["/registry/pods"], std::make_pair(int64_t{1}, int64_t{28}));
  // Compaction changes no live total.
  etcdserverpb::CompactionRequest cr;
  cr.set_revision(kv_->store().Rev());
  etcdserverpb::CompactionResponse cresp;
  ASSERT_TRUE(Call([&](auto* q, auto* r, auto d) { kv_->Compact(q, r, d); }, cr, cresp).ok());
  auto before = Prefixes();
  // Reopen: rebuilt from the store, same numbers.
  kv_.reset();
  Open();
  EXPECT_EQ(Prefixes(), before);
  EXPECT_EQ(Prefixes()["/registry/pods"], std::make_pair(int64_t{1}, int64_t{28}));
  EXPECT_EQ(kv_->mvcc_probe().keys_total.Value(), 4);
}

TEST_F(ExporterTest, PrefixStatsOff) {
  Open(0);
  ASSERT_TRUE(Put("/registry/pods/ns/a", "v").ok());
  EXPECT_TRUE(kv_->store().prefix_stats().Snapshot().empty());
  Exporter ex(kv_.get(), nullptr, nullptr, {});
  EXPECT_EQ(ex.RenderText().find("engram_mvcc_prefix_keys"), std::string::npos);
}

}  // namespace
}  // namespace engram::exporter
