// The HTTP routes, driven through Handle() with a fake member: every answer
// etcd gives (../shared/reference/etcd-observability.md §3), byte for byte.
#include "exporter/endpoints.h"

#include <gtest/gtest.h>

#include <cstdlib>

namespace engram::exporter {
namespace {

class FakeContext : public EndpointContext {
 public:
  std::vector<std::string> alarms;
  bool leader = true;
  Status serializable_err, linearizable_err;
  bool learner = false;
  std::string metrics = "# HELP x y\n# TYPE x counter\nx 1\n";
  kv::EtcdVersion version{"3.6.0", "3.6", true};
  int ranges = 0, serializable_ranges = 0, renders = 0;

  std::vector<std::string> ActiveAlarms() override { return alarms; }
  bool HasLeader() override { return leader; }
  Status CheckRange(bool serializable) override {
    ranges++;
    if (serializable) serializable_ranges++;
    return serializable ? serializable_err : linearizable_err;
  }
  bool IsLearner() override { return learner; }
  std::string RenderMetrics() override {
    renders++;
    return metrics;
  }
  MemberStatus GetMemberStatus() override {
    MemberStatus s;
    s.name = "infra1";
    s.member_id = 0x8e9e05c52164694dULL;
    s.cluster_id = 0xcdf818194e3a8c32ULL;
    s.leader = s.member_id;
    s.raft_term = 2;
    s.raft_index = 7;
    s.applied_index = 7;
    s.revision = 5;
    s.db_size = 20480;
    s.db_size_in_use = 16384;
    s.quota = 2147483648LL;
    s.client_urls = {"http://127.0.0.1:2379"};
    return s;
  }
  const kv::EtcdVersion& Version() override { return version; }
};

class EndpointsTest : public ::testing::Test {
 protected:
  HttpResponse Get(const std::string& target, Listener l = Listener::kMetrics, const std::string& ae = "") {
    return Handle(HttpRequest{"GET", target, ae, l}, ctx_, probe_);
  }
  HttpResponse Do(const std::string& method, const std::string& target, Listener l = Listener::kMetrics) {
    return Handle(HttpRequest{method, target, "", l}, ctx_, probe_);
  }
  const HealthProbe::Check& Livez(int i) { return probe_.livez[i]; }
  const HealthProbe::Check& Readyz(int i) { return probe_.readyz[i]; }
  static constexpr int kSer = 0, kLin = 1, kCorrupt = 2, kLearner = 3;  // HealthProbe::kCheckNames order

  FakeContext ctx_;
  HealthProbe probe_;
};

void ExpectGoError(const HttpResponse& r, int status, const std::string& body) {
  EXPECT_EQ(r.status, status);
  EXPECT_EQ(r.body, body);
  EXPECT_EQ(r.Header("Content-Type"), "text/plain; charset=utf-8");
  EXPECT_EQ(r.Header("X-Content-Type-Options"), "nosniff");
}

// ---------------------------------------------------------------- /metrics

TEST_F(EndpointsTest, MetricsPlain) {
  auto r = Get("/metrics");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.Header("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(r.Header("Content-Encoding"), "");
  EXPECT_EQ(r.body, ctx_.metrics);
  EXPECT_EQ(probe_.scrapes.Value(), 1u);
  Get("/metrics", Listener::kClient);
  EXPECT_EQ(probe_.scrapes.Value(), 2u);
}

TEST_F(EndpointsTest, MetricsGzip) {
  ctx_.metrics.clear();
  for (int i = 0; i < 1000; i++) ctx_.metrics += "etcd_x{i=\"" + std::to_string(i) + "\"} 1\n";
  for (const char* ae : {"gzip", "gzip, deflate, br", "deflate, GZIP;q=0.5", "identity,gzip"}) {
    auto r = Get("/metrics", Listener::kMetrics, ae);
    EXPECT_EQ(r.Header("Content-Encoding"), "gzip") << ae;
    EXPECT_EQ(r.Header("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
    EXPECT_LT(r.body.size(), ctx_.metrics.size() / 4);
    EXPECT_EQ(Gunzip(r.body), ctx_.metrics) << ae;
  }
  for (const char* ae : {"deflate", "br", "gzip;q=0", "x-gzip-not"}) {
    auto r = Get("/metrics", Listener::kMetrics, ae);
    EXPECT_EQ(r.Header("Content-Encoding"), "") << ae;
    EXPECT_EQ(r.body, ctx_.metrics) << ae;
  }
}

TEST_F(EndpointsTest, MetricsIgnoresQuery) { EXPECT_EQ(Get("/metrics?foo=bar").body, ctx_.metrics); }

// ---------------------------------------------------------------- /health

TEST_F(EndpointsTest, HealthOk) {
  auto r = Get("/health");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "{\"health\":\"true\",\"reason\":\"\"}");
  EXPECT_EQ(r.Header("Content-Type"), "text/plain; charset=utf-8");
  EXPECT_EQ(r.Header("X-Content-Type-Options"), "");
  EXPECT_EQ(probe_.health_success.Value(), 1u);
  EXPECT_EQ(probe_.health_failures.Value(), 0u);
  EXPECT_EQ(ctx_.ranges, 1);
  EXPECT_EQ(ctx_.serializable_ranges, 0);  // linearizable by default
}

TEST_F(EndpointsTest, HealthAlarm) {
  ctx_.alarms = {"NOSPACE"};
  ExpectGoError(Get("/health"), 503, "{\"health\":\"false\",\"reason\":\"ALARM NOSPACE\"}\n");
  EXPECT_EQ(probe_.health_failures.Value(), 1u);
  EXPECT_EQ(ctx_.ranges, 0);  // stops at the first failing check
  ctx_.alarms = {"CORRUPT"};
  ExpectGoError(Get("/health"), 503, "{\"health\":\"false\",\"reason\":\"ALARM CORRUPT\"}\n");
  ctx_.alarms = {"WEIRD"};
  ExpectGoError(Get("/health"), 503, "{\"health\":\"false\",\"reason\":\"ALARM UNKNOWN\"}\n");
}

TEST_F(EndpointsTest, HealthExclude) {
  ctx_.alarms = {"NOSPACE"};
  EXPECT_EQ(Get("/health?exclude=NOSPACE").status, 200);
  EXPECT_EQ(Get("/health?exclude=CORRUPT").status, 503);
  ctx_.alarms = {"NOSPACE", "CORRUPT"};
  auto r = Get("/health?exclude=NOSPACE");
  EXPECT_EQ(r.body, "{\"health\":\"false\",\"reason\":\"ALARM CORRUPT\"}\n");
  EXPECT_EQ(Get("/health?exclude=NOSPACE&exclude=CORRUPT").status, 200);  // repeatable
  EXPECT_EQ(Get("/health?exclude=&exclude=NOSPACE&exclude=CORRUPT").status, 200);  // empty ignored
  EXPECT_EQ(Get("/health?exclude=").status, 503);
  EXPECT_EQ(Get("/health?exclude=nospace&exclude=CORRUPT").status, 503);  // case-sensitive, as etcd
}

TEST_F(EndpointsTest, HealthNoLeader) {
  ctx_.leader = false;
  ExpectGoError(Get("/health"), 503, "{\"health\":\"false\",\"reason\":\"RAFT NO LEADER\"}\n");
  EXPECT_EQ(ctx_.ranges, 0);
  // serializable=true skips the leader check and reads locally.
  auto r = Get("/health?serializable=true");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(ctx_.serializable_ranges, 1);
  // any other value means linearizable
  EXPECT_EQ(Get("/health?serializable=1").status, 503);
  EXPECT_EQ(Get("/health?serializable=TRUE").status, 503);
  EXPECT_EQ(Get("/health?serializable=false").status, 503);
}

TEST_F(EndpointsTest, HealthRangeError) {
  ctx_.linearizable_err = Status::Unavailable("etcdserver: request timed out");
  ExpectGoError(Get("/health"), 503,
                "{\"health\":\"false\",\"reason\":\"RANGE ERROR:etcdserver: request timed out\"}\n");
  EXPECT_EQ(Get("/health?serializable=true").status, 200);
  ctx_.serializable_err = Status::Unavailable("etcdserver: server stopped");
  EXPECT_EQ(Get("/health?serializable=true").body,
            "{\"health\":\"false\",\"reason\":\"RANGE ERROR:etcdserver: server stopped\"}\n");
}

TEST_F(EndpointsTest, HealthAlarmBeforeLeader) {
  ctx_.alarms = {"NOSPACE"};
  ctx_.leader = false;
  EXPECT_EQ(Get("/health").body, "{\"health\":\"false\",\"reason\":\"ALARM NOSPACE\"}\n");
  EXPECT_EQ(Get("/health?exclude=NOSPACE").body, "{\"health\":\"false\",\"reason\":\"RAFT NO LEADER\"}\n");
}

TEST_F(EndpointsTest, HealthEtcd34Body) {
  ctx_.version = {"3.4.23", "3.4", false};
  auto r = Get("/health");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "{\"health\":\"true\"}");
  ctx_.alarms = {"NOSPACE"};
  ExpectGoError(Get("/health"), 503, "{\"health\":\"false\"}\n");
  EXPECT_EQ(probe_.health_success.Value(), 1u);
  EXPECT_EQ(probe_.health_failures.Value(), 1u);
}

TEST_F(EndpointsTest, HealthOnBothListeners) {
  EXPECT_EQ(Get("/health", Listener::kClient).status, 200);
  EXPECT_EQ(Get("/health", Listener::kMetrics).status, 200);
}

TEST_F(EndpointsTest, HealthQueryDecoding) {
  ctx_.alarms = {"NOSPACE"};
  EXPECT_EQ(Get("/health?exclude=NO%53PACE").status, 200);
  EXPECT_EQ(Get("/health?%65xclude=NOSPACE").status, 200);
}

// ---------------------------------------------------------------- /livez, /readyz

TEST_F(EndpointsTest, LivezOk) {
  auto r = Get("/livez");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "ok\n");
  EXPECT_EQ(r.Header("Content-Type"), "text/plain; charset=utf-8");
  EXPECT_EQ(r.Header("X-Content-Type-Options"), "nosniff");
  EXPECT_EQ(Get("/livez?verbose").body, "[+]serializable_read ok\nok\n");
  EXPECT_EQ(Get("/livez?verbose=false").body, "[+]serializable_read ok\nok\n");  // presence only
  EXPECT_EQ(ctx_.serializable_ranges, 3);
  EXPECT_TRUE(Livez(kSer).ran.load());
  EXPECT_EQ(Livez(kSer).passed.Value(), 1);
  EXPECT_EQ(Livez(kSer).success.Value(), 3u);
  EXPECT_FALSE(Livez(kLin).ran.load());
  EXPECT_FALSE(Readyz(kSer).ran.load());
}

TEST_F(EndpointsTest, LivezIgnoresLeaderAndNospace) {
  ctx_.leader = false;
  ctx_.alarms = {"NOSPACE", "CORRUPT"};
  ctx_.linearizable_err = Status::Unavailable("etcdserver: no leader");
  EXPECT_EQ(Get("/livez").status, 200);
  EXPECT_EQ(Get("/livez/serializable_read").status, 200);
}

TEST_F(EndpointsTest, LivezFails) {
  ctx_.serializable_err = Status::Unavailable("etcdserver: server stopped");
  ExpectGoError(Get("/livez"), 503, "[-]serializable_read failed: etcdserver: server stopped\n\n");
  EXPECT_EQ(Livez(kSer).passed.Value(), 0);
  EXPECT_EQ(Livez(kSer).error.Value(), 1u);
}

TEST_F(EndpointsTest, ReadyzOk) {
  auto r = Get("/readyz");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "ok\n");
  EXPECT_EQ(Get("/readyz?verbose").body,
            "[+]data_corruption ok\n[+]serializable_read ok\n[+]linearizable_read ok\n[+]non_learner ok\nok\n");
  for (int i = 0; i < HealthProbe::kChecks; i++) {
    EXPECT_TRUE(Readyz(i).ran.load()) << i;
    EXPECT_EQ(Readyz(i).success.Value(), 2u) << i;
    EXPECT_EQ(Readyz(i).passed.Value(), 1) << i;
  }
}

TEST_F(EndpointsTest, ReadyzNoLeader) {
  ctx_.leader = false;
  ctx_.linearizable_err = Status::Unavailable("etcdserver: no leader");
  auto r = Get("/readyz");
  ExpectGoError(r, 503,
                "[+]data_corruption ok\n[+]serializable_read ok\n[-]linearizable_read failed: etcdserver: no leader\n"
                "[+]non_learner ok\n\n");
  EXPECT_EQ(Readyz(kLin).passed.Value(), 0);
  EXPECT_EQ(Readyz(kLin).error.Value(), 1u);
  EXPECT_EQ(Readyz(kSer).passed.Value(), 1);
  // verbose changes nothing on failure
  EXPECT_EQ(Get("/readyz?verbose").body, r.body);
  EXPECT_EQ(Get("/readyz?exclude=linearizable_read").status, 200);
  EXPECT_EQ(Get("/readyz/linearizable_read").body, "[-]linearizable_read failed: etcdserver: no leader\n\n");
  EXPECT_EQ(Get("/readyz/serializable_read").status, 200);
}

TEST_F(EndpointsTest, ReadyzCorruptNotNospace) {
  ctx_.alarms = {"NOSPACE"};
  EXPECT_EQ(Get("/readyz").status, 200);
  ctx_.alarms = {"NOSPACE", "CORRUPT"};
  auto r = Get("/readyz");
  EXPECT_EQ(r.status, 503);
  EXPECT_NE(r.body.find("[-]data_corruption failed: alarm activated: CORRUPT\n"), std::string::npos) << r.body;
  EXPECT_EQ(Get("/readyz/data_corruption").body, "[-]data_corruption failed: alarm activated: CORRUPT\n\n");
}

TEST_F(EndpointsTest, ReadyzLearner) {
  ctx_.learner = true;
  EXPECT_EQ(Get("/readyz/non_learner").body, "[-]non_learner failed: not supported for learner\n\n");
  EXPECT_EQ(Get("/readyz").status, 503);
  EXPECT_EQ(Get("/livez").status, 200);
}

TEST_F(EndpointsTest, ReadyzExclude) {
  EXPECT_EQ(Get("/readyz?verbose&exclude=linearizable_read&exclude=non_learner").body,
            "[+]data_corruption ok\n[+]serializable_read ok\nok\n");
  // unknown names are ignored (logged), empty values too
  EXPECT_EQ(Get("/readyz?verbose&exclude=nope&exclude=").body,
            "[+]data_corruption ok\n[+]serializable_read ok\n[+]linearizable_read ok\n[+]non_learner ok\nok\n");
  EXPECT_EQ(Get("/livez?verbose&exclude=serializable_read").body, "ok\n");
  // linearizable_read is not a livez check: ignored
  EXPECT_EQ(Get("/livez?verbose&exclude=linearizable_read").body, "[+]serializable_read ok\nok\n");
}

TEST_F(EndpointsTest, PerCheckPaths) {
  EXPECT_EQ(Get("/livez/serializable_read?verbose").body, "[+]serializable_read ok\nok\n");
  EXPECT_EQ(Get("/readyz/data_corruption?verbose").body, "[+]data_corruption ok\nok\n");
  EXPECT_EQ(Get("/readyz/non_learner").body, "ok\n");
  // sub paths ignore exclude
  EXPECT_EQ(Get("/readyz/linearizable_read?verbose&exclude=linearizable_read").body, "[+]linearizable_read ok\nok\n");
  // only registered checks exist
  ExpectGoError(Get("/livez/linearizable_read"), 404, "404 page not found\n");
  ExpectGoError(Get("/livez/non_learner"), 404, "404 page not found\n");
  ExpectGoError(Get("/readyz/nope"), 404, "404 page not found\n");
  ExpectGoError(Get("/readyz/"), 404, "404 page not found\n");
  ExpectGoError(Get("/livez/"), 404, "404 page not found\n");
  ExpectGoError(Get("/readyz/serializable_read/x"), 404, "404 page not found\n");
  ExpectGoError(Do("POST", "/readyz/nope"), 404, "404 page not found\n");
}

// ---------------------------------------------------------------- methods

TEST_F(EndpointsTest, NonGetIs405) {
  for (const char* path : {"/health", "/livez", "/readyz", "/livez/serializable_read", "/readyz/linearizable_read",
                           "/readyz/data_corruption", "/readyz/non_learner", "/readyz/serializable_read"}) {
    for (const char* m : {"POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS"}) {
      auto r = Do(m, path);
      ExpectGoError(r, 405, "Method Not Allowed\n");
      EXPECT_EQ(r.Header("Allow"), "GET") << m << " " << path;
    }
  }
  auto r = Do("POST", "/version", Listener::kClient);
  ExpectGoError(r, 405, "Method Not Allowed\n");
  EXPECT_EQ(r.Header("Allow"), "GET");
  // 405 runs no check and counts nothing
  EXPECT_EQ(ctx_.ranges, 0);
  EXPECT_EQ(probe_.health_success.Value() + probe_.health_failures.Value(), 0u);
  EXPECT_FALSE(Readyz(kSer).ran.load());
}

TEST_F(EndpointsTest, MetricsAnyMethod) {
  EXPECT_EQ(Do("POST", "/metrics").status, 200);  // promhttp does not check the method
  EXPECT_EQ(Do("HEAD", "/metrics").status, 200);
}

// ---------------------------------------------------------------- /version

TEST_F(EndpointsTest, Version36) {
  auto r = Get("/version", Listener::kClient);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.Header("Content-Type"), "application/json");
  EXPECT_EQ(r.body, "{\"etcdserver\":\"3.6.0\",\"etcdcluster\":\"3.6.0\",\"storage\":\"3.6.0\"}");
}

TEST_F(EndpointsTest, Version34And35) {
  ctx_.version = {"3.4.23", "3.4", false};
  EXPECT_EQ(Get("/version", Listener::kClient).body, "{\"etcdserver\":\"3.4.23\",\"etcdcluster\":\"3.4.0\"}");
  ctx_.version = {"3.5.17", "3.5", true};
  EXPECT_EQ(Get("/version", Listener::kClient).body, "{\"etcdserver\":\"3.5.17\",\"etcdcluster\":\"3.5.0\"}");
  ctx_.version = {"3.7.1", "3.7", true};
  EXPECT_EQ(Get("/version", Listener::kClient).body,
            "{\"etcdserver\":\"3.7.1\",\"etcdcluster\":\"3.7.0\",\"storage\":\"3.6.0\"}");
}

TEST_F(EndpointsTest, VersionOnlyOnClientUrls) {
  ExpectGoError(Get("/version", Listener::kMetrics), 404, "404 page not found\n");
}

// ---------------------------------------------------------------- status page, 404

TEST_F(EndpointsTest, StatusPage) {
  for (Listener l : {Listener::kMetrics, Listener::kClient}) {
    auto r = Get("/", l);
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.Header("Content-Type"), "text/html; charset=utf-8");
    EXPECT_EQ(r.body, StatusPageHtml());
  }
  const std::string& page = StatusPageHtml();
  EXPECT_EQ(page.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_NE(page.find("</html>"), std::string::npos);
  // self-contained: nothing loaded from elsewhere
  EXPECT_EQ(page.find("http://"), std::string::npos);
  EXPECT_EQ(page.find("https://"), std::string::npos);
  EXPECT_EQ(page.find("<link"), std::string::npos);
  EXPECT_EQ(page.find("src="), std::string::npos);
  EXPECT_EQ(Do("POST", "/").status, 405);
}

TEST_F(EndpointsTest, StatusJson) {
  ctx_.alarms = {"NOSPACE"};
  auto r = Get("/status.json");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.Header("Content-Type"), "application/json");
  EXPECT_EQ(r.body,
            "{\"name\":\"infra1\",\"member_id\":\"8e9e05c52164694d\",\"cluster_id\":\"cdf818194e3a8c32\","
            "\"leader\":\"8e9e05c52164694d\",\"is_leader\":true,\"is_learner\":false,\"revision\":5,"
            "\"compact_revision\":0,\"raft_term\":2,\"raft_index\":7,\"raft_applied_index\":7,\"db_size\":20480,"
            "\"db_size_in_use\":16384,\"db_size_quota\":2147483648,\"alarms\":[\"NOSPACE\"],"
            "\"client_urls\":[\"http://127.0.0.1:2379\"],\"peer_urls\":[],\"version\":\"3.6.0\","
            "\"cluster_version\":\"3.6.0\"}\n");
}

TEST_F(EndpointsTest, NotFound) {
  for (const char* p : {"/nope", "/health/", "/healthz", "/metrics/", "/v3/kv/range", "/debug/vars", "/HEALTH"}) {
    ExpectGoError(Get(p), 404, "404 page not found\n");
    ExpectGoError(Get(p, Listener::kClient), 404, "404 page not found\n");
  }
}

// ---------------------------------------------------------------- helpers

TEST(ParseQueryTest, GoSemantics) {
  using P = std::vector<std::pair<std::string, std::string>>;
  EXPECT_EQ(ParseQuery(""), P{});
  EXPECT_EQ(ParseQuery("verbose"), (P{{"verbose", ""}}));
  EXPECT_EQ(ParseQuery("a=1&a=2&&b=x+y%21"), (P{{"a", "1"}, {"a", "2"}, {"b", "x y!"}}));
  EXPECT_EQ(ParseQuery("exclude="), (P{{"exclude", ""}}));
  // Go skips pairs with a bad escape or a ';' (Go 1.17+)
  EXPECT_EQ(ParseQuery("k=%zz&a=1"), (P{{"a", "1"}}));
  EXPECT_EQ(ParseQuery("k=1;j=2&a=1"), (P{{"a", "1"}}));
}

TEST(GzipTest, RoundTrip) {
  std::string s(100000, 'a');
  std::string z = Gzip(s);
  ASSERT_GE(z.size(), 2u);
  EXPECT_EQ(static_cast<unsigned char>(z[0]), 0x1f);  // gzip magic
  EXPECT_EQ(static_cast<unsigned char>(z[1]), 0x8b);
  EXPECT_EQ(Gunzip(z), s);
  EXPECT_EQ(Gunzip(Gzip("")), "");
}

}  // namespace
}  // namespace engram::exporter
