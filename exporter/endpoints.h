// The HTTP routes of Engram's observability sidecar, as plain functions of
// (method, path, query, Accept-Encoding) -> (status, headers, body), so every
// answer is unit-testable without sockets (exporter/endpoints_test.cc). The
// Beast server (exporter/http_server.cc) only moves bytes.
//
// Routes (etcd's exact answers: ../shared/reference/etcd-observability.md §3):
//   /metrics                 Prometheus text 0.0.4 (gzip on Accept-Encoding: gzip)
//   /health                  ?exclude=<ALARM> (repeatable), ?serializable=true
//   /livez, /livez/<check>   serializable_read
//   /readyz, /readyz/<check> data_corruption, serializable_read, linearizable_read, non_learner
//                            (root paths take ?exclude=<check> and ?verbose)
//   /version                 client URLs only, as etcd
//   /, /status.json          Engram's status page and the JSON it polls (both listeners)
// Anything else is 404 "404 page not found", as Go's ServeMux.
//
// Thread-safety: Handle() is reentrant; it touches the context and the probe,
// which must themselves be thread-safe (KvContext is).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "exporter/health_probe.h"
#include "src/common/status.h"
#include "src/kv/server.h"

namespace engram::exporter {

// Which listener a request came in on: etcd serves only /metrics, /health,
// /livez, /readyz (and subpaths) on --listen-metrics-urls; everything on the
// client URLs.
enum class Listener { kClient, kMetrics };

struct HttpRequest {
  std::string method;           // "GET"
  std::string target;           // "/health?exclude=NOSPACE"
  std::string accept_encoding;  // the Accept-Encoding header, "" if absent
  Listener listener = Listener::kMetrics;
  // Read only for asynchronous routes (HttpServer::Route); empty otherwise.
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // in order
  std::string Header(const std::string& name) const;        // case-insensitive, "" if absent
};

struct HttpResponse {
  int status = 200;
  std::vector<std::pair<std::string, std::string>> headers;  // in order; no Content-Length
  std::string body;
  // The value of header name (case-insensitive), "" if absent.
  std::string Header(const std::string& name) const;
};

// What /status.json reports (and the status page shows).
struct MemberStatus {
  std::string name;
  uint64_t member_id = 0, cluster_id = 0, leader = 0;
  uint64_t raft_term = 0, raft_index = 0, applied_index = 0;
  int64_t revision = 0, compact_revision = 0;
  int64_t db_size = 0, db_size_in_use = 0, quota = 0;
  bool is_learner = false;
  std::vector<std::string> client_urls, peer_urls;
};

// What the routes need from the member. KvContext adapts a KvServer; tests
// use a fake.
class EndpointContext {
 public:
  virtual ~EndpointContext() = default;
  // Active alarm type names ("NOSPACE", "CORRUPT").
  virtual std::vector<std::string> ActiveAlarms() = 0;
  virtual bool HasLeader() = 0;
  // A keys-only, limit-1 Range over the whole keyspace, serializable or
  // linearizable; the error carries etcd's text ("etcdserver: no leader").
  virtual Status CheckRange(bool serializable) = 0;
  virtual bool IsLearner() = 0;
  // Every metric family in text format 0.0.4.
  virtual std::string RenderMetrics() = 0;
  virtual MemberStatus GetMemberStatus() = 0;
  virtual const kv::EtcdVersion& Version() = 0;
};

// Answers one request.
HttpResponse Handle(const HttpRequest& req, EndpointContext& ctx, HealthProbe& probe);

// The adapter for a running member. render_metrics is normally
// Exporter::RenderText.
class KvContext : public EndpointContext {
 public:
  KvContext(kv::KvServer* kv, std::function<std::string()> render_metrics)
      : kv_(kv), render_(std::move(render_metrics)) {}
  std::vector<std::string> ActiveAlarms() override;
  bool HasLeader() override;
  Status CheckRange(bool serializable) override;
  bool IsLearner() override;
  std::string RenderMetrics() override { return render_(); }
  MemberStatus GetMemberStatus() override;
  const kv::EtcdVersion& Version() override { return kv::EmulatedVersion(); }

 private:
  kv::KvServer* kv_;
  std::function<std::string()> render_;
};

// Helpers, exposed for tests.
// Parses a query string the way Go's url.ParseQuery does ('&'-separated,
// '+' and %XX decoded); keys keep their order and repeats.
std::vector<std::pair<std::string, std::string>> ParseQuery(const std::string& query);
// gzip (RFC 1952) of data; gunzip for tests.
std::string Gzip(const std::string& data);
std::string Gunzip(const std::string& data);
// The embedded status page (exporter/status_page.html).
const std::string& StatusPageHtml();

}  // namespace engram::exporter
