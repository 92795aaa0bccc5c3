// engram: the server binary. Parses etcd's flags, opens the member (src/kv),
// serves etcd's gRPC API and the HTTP endpoints (/metrics, /health, /livez,
// /readyz, /version, the status page) on the client URLs, the HTTP endpoints
// on the metrics URLs, and shuts down cleanly on SIGTERM/SIGINT.
//
// Sockets: plain client URLs (http://, unix://) are owned by
// server/listener.cc, which sends each connection to gRPC or to the HTTP
// server by its first bytes; https:// client URLs are gRPC's own TLS ports;
// metrics URLs are the HTTP server's (exporter/http_server.cc).
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <atomic>
#include <csignal>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <grpcpp/server_posix.h>

#include "exporter/endpoints.h"
#include "exporter/exporter.h"
#include "exporter/health_probe.h"
#include "exporter/http_server.h"
#include "server/gateway/gateway.h"
#include "server/config.h"
#include "server/grpc_metrics.h"
#include "server/listener.h"
#include "server/services.h"
#include "src/common/failpoint.h"
#include "src/common/log.h"
#include "src/kv/server.h"

#ifndef ENGRAM_VERSION
#define ENGRAM_VERSION "0.0.0"
#endif
#ifndef ENGRAM_GIT_SHA
#define ENGRAM_GIT_SHA "unknown"
#endif

extern char** environ;

namespace engram::server {
namespace {

std::string Hex(uint64_t v) {
  char b[17];
  std::snprintf(b, sizeof b, "%lx", static_cast<unsigned long>(v));
  return b;
}

std::vector<std::string> Raw(const std::vector<Url>& urls) {
  std::vector<std::string> out;
  for (const auto& u : urls) out.push_back(u.raw);
  return out;
}

std::string ReadFile(const std::string& path, bool* ok) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  *ok = f.good() || f.eof();
  return ss.str();
}

// Binds (and listens on) each peer URL so the port is ours, as etcd does. A
// single member has no peer traffic; the raft transport comes with clustering.
Result<std::vector<int>> BindPeers(const std::vector<Url>& urls) {
  std::vector<int> fds;
  for (const auto& u : urls) {
    if (u.scheme == "unix" || u.scheme == "unixs") continue;
    int fd = -1, port = 0;
    Status st = BindTcp(u, "peer", &fd, &port);
    if (!st.ok()) {
      for (int f : fds) ::close(f);
      return st;
    }
    fds.push_back(fd);
  }
  return fds;
}

int Run(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  std::vector<std::string> env;
  for (char** e = environ; e && *e; e++) env.emplace_back(*e);
  auto parsed = ParseCommandLine(args, env);
  if (!parsed.ok()) {
    std::fprintf(stderr, "engram: %s\n", parsed.status().message().c_str());
    std::fprintf(stderr, "Try 'engram --help' for more information.\n");
    return 2;
  }
  if (parsed->outcome == ParseOutcome::kHelp) {
    std::fputs(HelpText().c_str(), stdout);
    return 0;
  }
  if (parsed->outcome == ParseOutcome::kVersion) {
    std::printf("engram Version: %s\netcd API Version: %s\nGit SHA: %s\nOS/Arch: linux/%s\n", ENGRAM_VERSION,
                kv::EmulatedVersion().server.c_str(), ENGRAM_GIT_SHA,
#if defined(__x86_64__)
                "amd64"
#elif defined(__aarch64__)
                "arm64"
#else
                "unknown"
#endif
    );
    return 0;
  }
  Config cfg = std::move(parsed->config);

  log::SetLevel(cfg.log_level);
  log::SetFormat(cfg.logger == "capnslog" ? log::Format::kText : log::Format::kJson);
  std::string err;
  if (!log::SetOutputs(cfg.log_outputs, &err)) {
    std::fprintf(stderr, "engram: %s\n", err.c_str());
    return 2;
  }
  if (!failpoint::LoadFromEnv(&err)) {
    std::fprintf(stderr, "engram: %s\n", err.c_str());
    return 2;
  }
  for (const auto& n : cfg.notes) LOG_WARN(n);

  LOG_INFO("configuring peer listeners", {{"listen-peer-urls", Raw(cfg.listen_peer_urls)}});
  auto peers = BindPeers(cfg.listen_peer_urls);
  if (!peers.ok()) {
    LOG_ERROR("failed to listen on peer URLs", {{"error", peers.status().message()}});
    return 1;
  }
  LOG_INFO("configuring client listeners", {{"listen-client-urls", Raw(cfg.listen_client_urls)}});
  // Plain client URLs: bound here, shared by gRPC and HTTP (server/listener.h).
  auto client_listener = ClientListener::Bind(cfg.listen_client_urls);
  if (!client_listener.ok()) {
    LOG_ERROR("failed to listen on client URLs", {{"error", client_listener.status().message()},
                                                   {"listen-client-urls", Raw(cfg.listen_client_urls)}});
    return 1;
  }
  // Metrics URLs: the HTTP server's own sockets. The handler is set up once
  // the member is open (http_ctx); nothing is served before Start().
  exporter::HealthProbe health_probe;
  std::unique_ptr<exporter::EndpointContext> http_ctx;
  exporter::HttpServer http([&](const exporter::HttpRequest& req) {
    return exporter::Handle(req, *http_ctx, health_probe);
  });
  std::vector<std::string> metrics_served;
  if (!cfg.listen_metrics_urls.empty())
    LOG_INFO("configuring metrics listeners", {{"listen-metrics-urls", Raw(cfg.listen_metrics_urls)}});
  for (const auto& u : cfg.listen_metrics_urls) {
    auto port = http.Listen(u.host, u.port, exporter::Listener::kMetrics);
    if (port.ok()) {
      metrics_served.push_back(u.raw);
    } else if (cfg.set_flags.count("listen-metrics-urls")) {
      LOG_ERROR("failed to listen on metrics URLs", {{"error", port.status().message()}, {"url", u.raw}});
      return 1;
    } else {
      // Only Engram's built-in default (etcd has none): never fatal.
      LOG_WARN("cannot serve metrics on the default metrics URL; set --listen-metrics-urls",
               {{"error", port.status().message()}, {"url", u.raw}});
    }
  }

  auto members = ParseInitialCluster(cfg.initial_cluster);
  std::vector<std::string> my_peer_urls = Raw(cfg.initial_advertise_peer_urls);
  std::vector<uint64_t> ids;
  bool found = false;
  for (const auto& m : *members) {
    ids.push_back(ComputeMemberId(m.peer_urls, cfg.initial_cluster_token));
    if (m.name == cfg.name) found = true;
  }
  if (!found) {
    LOG_ERROR("couldn't find local name in the initial cluster configuration",
              {{"name", cfg.name}, {"initial-cluster", cfg.initial_cluster}});
    return 1;
  }
  if (members->size() > 1) {
    LOG_ERROR("engram does not run multi-member clusters yet; --initial-cluster must list only this member",
              {{"initial-cluster", cfg.initial_cluster}});
    return 1;
  }

  kv::Options ko;
  ko.name = cfg.name;
  ko.member_dir = cfg.MemberDir();
  ko.wal_dir = cfg.WalDir();
  ko.peer_urls = my_peer_urls;
  ko.client_urls = Raw(cfg.advertise_client_urls);
  ko.cluster_token = cfg.initial_cluster_token;
  ko.member_id = ComputeMemberId(my_peer_urls, cfg.initial_cluster_token);
  ko.cluster_id = ComputeClusterId(ids);
  ko.snapshot_count = cfg.snapshot_count;
  ko.catchup_entries = cfg.snapshot_catchup_entries;
  ko.heartbeat_ms = cfg.heartbeat_ms;
  ko.election_ms = cfg.election_ms;
  ko.quota_bytes = cfg.EffectiveQuota();
  ko.max_request_bytes = cfg.max_request_bytes;
  ko.max_txn_ops = cfg.max_txn_ops;
  ko.backend_batch_interval_ms = cfg.backend_batch_interval_ms;
  ko.backend_batch_limit = cfg.backend_batch_limit;
  ko.watch_progress_notify_interval_ms = cfg.watch_progress_notify_interval_ms;
  ko.watch_stream_buffer_bytes = cfg.watch_stream_buffer_bytes;
  ko.pre_vote = cfg.pre_vote;
  ko.lease_checkpoint = cfg.lease_checkpoint;
  ko.warning_apply_duration_ms = cfg.warning_apply_duration_ms;
  ko.compaction_batch_limit = cfg.compaction_batch_limit;
  ko.compaction_sleep_interval_ms = cfg.compaction_sleep_interval_ms;
  ko.metrics_prefix_depth = cfg.metrics_prefix_depth;  // metrics: engram_mvcc_prefix_*
  auto spec = kv::ParseCompaction(cfg.auto_compaction_mode, cfg.auto_compaction_retention);
  if (!spec.ok()) {
    std::fprintf(stderr, "engram: %s\n", spec.status().message().c_str());
    return 2;
  }
  ko.compaction = *spec;

  LOG_INFO("starting an engram server",
           {{"engram-version", ENGRAM_VERSION}, {"etcd-api-version", kv::EmulatedVersion().server.c_str()}, {"git-sha", ENGRAM_GIT_SHA},
            {"name", cfg.name}, {"data-dir", cfg.data_dir}, {"wal-dir", cfg.wal_dir}, {"member-dir", cfg.MemberDir()},
            {"snapshot-count", cfg.snapshot_count}, {"heartbeat-interval", std::to_string(cfg.heartbeat_ms) + "ms"},
            {"election-timeout", std::to_string(cfg.election_ms) + "ms"},
            {"initial-advertise-peer-urls", my_peer_urls}, {"listen-peer-urls", Raw(cfg.listen_peer_urls)},
            {"advertise-client-urls", Raw(cfg.advertise_client_urls)},
            {"listen-client-urls", Raw(cfg.listen_client_urls)}, {"initial-cluster", cfg.initial_cluster},
            {"initial-cluster-state", cfg.initial_cluster_state},
            {"initial-cluster-token", cfg.initial_cluster_token},
            {"quota-backend-bytes", static_cast<int64_t>(cfg.EffectiveQuota())},
            {"max-request-bytes", cfg.max_request_bytes}, {"max-txn-ops", static_cast<uint64_t>(cfg.max_txn_ops)},
            {"auto-compaction-mode", cfg.auto_compaction_mode},
            {"auto-compaction-retention", cfg.auto_compaction_retention}});
  if (cfg.quota_backend_bytes == 0) {
    LOG_INFO("enabled backend quota with default value",
             {{"quota-name", "v3-applier"}, {"quota-size-bytes", static_cast<int64_t>(cfg.EffectiveQuota())}});
  }

  // Signals are handled by sigwait on this thread; block them everywhere.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  // A signal while the member is still starting (the WAL replay or the
  // publish can wait on a stuck disk) ends the process at once, as etcd's
  // interrupt handler does: nothing was acknowledged in this run yet, and
  // every earlier acknowledged write is durable, so this is as safe as
  // kill -9. Once started, main's sigwait below handles signals.
  std::atomic<bool> started{false};
  std::thread startup_signals([&sigs, &started] {
    const timespec tick{0, 100 * 1000 * 1000};
    while (!started.load()) {
      const int sig = sigtimedwait(&sigs, nullptr, &tick);
      if (sig <= 0) continue;
      if (started.load()) {
        ::kill(::getpid(), sig);  // pending again, for main's sigwait
        return;
      }
      LOG_WARN("received signal while starting; exiting", {{"signal", sig == SIGTERM ? "TERM" : "INT"}});
      std::signal(sig, SIG_DFL);
      sigset_t one;
      sigemptyset(&one);
      sigaddset(&one, sig);
      pthread_sigmask(SIG_UNBLOCK, &one, nullptr);
      ::raise(sig);  // dies by the signal, as etcd does
      ::_exit(128 + sig);
    }
  });
  struct JoinOnExit {
    std::atomic<bool>& started;
    std::thread& t;
    ~JoinOnExit() {
      started.store(true);
      if (t.joinable()) t.join();
    }
  } join_startup_signals{started, startup_signals};

  auto kvs = kv::KvServer::Open(ko);
  if (!kvs.ok()) {
    LOG_ERROR("failed to start the member", {{"error", kvs.status().ToString()}, {"data-dir", cfg.data_dir}});
    return 1;
  }
  std::unique_ptr<kv::KvServer> kv = std::move(*kvs);

  Services services(kv.get());
  grpc::ServerBuilder builder;
  std::shared_ptr<grpc::ServerCredentials> creds = grpc::InsecureServerCredentials();
  bool any_tls = false;
  for (const auto& u : cfg.listen_client_urls) any_tls |= u.Tls();
  if (any_tls) {
    grpc::SslServerCredentialsOptions so(cfg.client_tls.client_cert_auth
                                             ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                                             : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
    bool ok1, ok2, ok3 = true;
    grpc::SslServerCredentialsOptions::PemKeyCertPair kp{ReadFile(cfg.client_tls.key_file, &ok1),
                                                         ReadFile(cfg.client_tls.cert_file, &ok2)};
    if (!cfg.client_tls.trusted_ca_file.empty()) so.pem_root_certs = ReadFile(cfg.client_tls.trusted_ca_file, &ok3);
    if (!ok1 || !ok2 || !ok3 || kp.private_key.empty() || kp.cert_chain.empty()) {
      LOG_ERROR("cannot read the client TLS key/cert files",
                {{"cert-file", cfg.client_tls.cert_file}, {"key-file", cfg.client_tls.key_file}});
      kv->Stop();
      return 1;
    }
    so.pem_key_cert_pairs.push_back(kp);
    creds = grpc::SslServerCredentials(so);
  }
  // gRPC listens itself only on TLS client URLs; plain ones come through
  // ClientListener (AddInsecureChannelFromFd).
  std::vector<int> ports;
  ports.reserve(cfg.listen_client_urls.size());
  for (const Url& u : cfg.listen_client_urls) {
    if (!u.Tls()) continue;
    std::string addr = u.scheme == "unixs" ? "unix:" + u.host : u.HostPort();
    ports.push_back(0);
    builder.AddListeningPort(addr, creds, &ports.back());
  }
  // etcd's limits: requests up to --max-request-bytes plus gRPC overhead get
  // "etcdserver: request is too large" from the core; beyond, gRPC refuses.
  builder.SetMaxReceiveMessageSize(static_cast<int>(cfg.max_request_bytes + 512 * 1024));
  builder.SetMaxSendMessageSize(INT32_MAX);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS,
                             static_cast<int>(std::min<uint64_t>(cfg.max_concurrent_streams, INT32_MAX)));
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                             static_cast<int>(cfg.grpc_keepalive_min_time_ms));
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  if (cfg.grpc_keepalive_interval_ms > 0)
    builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, static_cast<int>(std::min<uint64_t>(cfg.grpc_keepalive_interval_ms, INT32_MAX)));
  if (cfg.grpc_keepalive_timeout_ms > 0)
    builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, static_cast<int>(cfg.grpc_keepalive_timeout_ms));
  services.Register(builder);
  // ---- metrics: gRPC interceptor (server/grpc_metrics.h); before BuildAndStart ----
  kv::RpcProbe rpc_probe;  // outlives grpc_server (declared after it)
  InstallGrpcMetrics(builder, &rpc_probe);
  // ---- end metrics interceptor
  std::unique_ptr<grpc::Server> grpc_server = builder.BuildAndStart();
  bool bound = grpc_server != nullptr;
  for (int p : ports) bound &= p != 0;
  if (!bound) {
    LOG_ERROR("failed to listen on client URLs (is the port in use?)",
              {{"listen-client-urls", Raw(cfg.listen_client_urls)}});
    if (grpc_server) grpc_server->Shutdown();
    kv->Stop();
    return 1;
  }

  // ---- metrics exporter (exporter/exporter.h) ----
  exporter::Exporter metrics_exporter(kv.get(), &rpc_probe, &health_probe, {cfg.metrics == "extensive"});
  // ---- end metrics exporter
  http_ctx = std::make_unique<exporter::KvContext>(kv.get(), [&] { return metrics_exporter.RenderText(); });
  // ---- the gRPC-JSON gateway (server/gateway/gateway.h) on the client URLs ----
  grpc::ChannelArguments gw_args;
  gw_args.SetMaxReceiveMessageSize(-1);
  gw_args.SetMaxSendMessageSize(-1);
  gateway::Gateway gw(grpc_server->InProcessChannel(gw_args), cfg.max_concurrent_streams);
  // A JSON body carries the request in base64 (4/3) plus field names.
  const uint64_t gw_body_limit = 2 * cfg.max_request_bytes + (1u << 20);
  for (const auto& prefix : gateway::Gateway::Prefixes()) {
    http.Route(prefix, exporter::Listener::kClient, gw_body_limit,
               [&gw](exporter::HttpRequest req, std::shared_ptr<exporter::HttpResponder> out) {
                 gw.Handle(std::move(req), std::move(out));
               });
  }
  http.Start();
  (*client_listener)->Start({
      [srv = grpc_server.get()](int fd) { grpc::AddInsecureChannelFromFd(srv, fd); },
      [&http](int fd) { http.Adopt(fd, exporter::Listener::kClient); },
  });
  for (const auto& u : cfg.listen_client_urls) {
    if (!u.Tls())
      LOG_INFO("serving client traffic insecurely; this is strongly discouraged!", {{"address", u.HostPort()}});
    else
      LOG_INFO("serving client traffic securely", {{"address", u.HostPort()}});
  }
  for (const auto& m : metrics_served) LOG_INFO("serving metrics", {{"address", m}});
  LOG_INFO("ready to serve client requests");
  LOG_INFO("now serving peer/client/metrics",
           {{"local-member-id", Hex(kv->member_id())}, {"advertise-client-urls", Raw(cfg.advertise_client_urls)},
            {"listen-client-urls", Raw(cfg.listen_client_urls)}, {"listen-peer-urls", Raw(cfg.listen_peer_urls)}});

  started.store(true);
  if (startup_signals.joinable()) startup_signals.join();
  int sig = 0;
  sigwait(&sigs, &sig);
  LOG_INFO("received signal; shutting down", {{"signal", sig == SIGTERM ? "TERM" : "INT"}});
  kv->Quiesce();  // no lease is revoked (or checkpointed) while the server stops
  // Stop accepting (no connection is handed to gRPC after this), answer no
  // more HTTP, give in-flight RPCs a moment to finish, then cancel them.
  // A step that takes long is logged (an operator waiting on a stop sees why).
  auto step = [](const char* what, auto&& fn) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (took > 0.1) LOG_WARN("slow shutdown step", {{"step", what}, {"took-seconds", took}});
  };
  step("client listener", [&] { (*client_listener)->Stop(); });
  step("http", [&] { http.Stop(); });
  step("gateway", [&] { gw.Shutdown(); });  // gateway calls (watch streams through it) end first
  step("streams", [&] { services.Shutdown(); });  // watch streams never end by themselves
  // Calls still running get up to 3 s to finish (named in the log); with none,
  // gRPC is stopped at once: its graceful wait for idle client connections
  // would otherwise hold the exit for seconds (etcd exits at once).
  uint64_t in_flight = 0;
  for (int i = 0; i < kv::kRpcMethodCount; i++) {
    const auto& m = rpc_probe.method(i);
    uint64_t handled = 0;
    for (const auto& c : m.handled) handled += c.Value();
    if (m.started.Value() > handled) {
      in_flight += m.started.Value() - handled;
      LOG_INFO("rpc in flight at shutdown",
               {{"method", std::string(kv::kRpcMethods[i].service) + "/" + kv::kRpcMethods[i].method},
                {"count", m.started.Value() - handled}});
    }
  }
  const auto grace = in_flight > 0 ? std::chrono::seconds(3) : std::chrono::seconds(0);
  step("grpc", [&] { grpc_server->Shutdown(std::chrono::system_clock::now() + grace); });
  step("kv", [&] { kv->Stop(); });
  step("grpc wait", [&] { grpc_server->Wait(); });
  for (int fd : *peers) ::close(fd);
  LOG_INFO("stopped server", {{"local-member-id", Hex(kv->member_id())}});
  return 0;
}

}  // namespace
}  // namespace engram::server

int main(int argc, char** argv) { return engram::server::Run(argc, argv); }
