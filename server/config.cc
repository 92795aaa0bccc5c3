#include "server/config.h"

#include <openssl/sha.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <functional>
#include <set>
#include <sstream>

#include "src/common/coding.h"

namespace engram::server {
namespace {

enum class Kind { kString, kUint, kInt, kBool, kDuration, kList };
enum class Support { kImplemented, kAccepted, kUnsupported };

struct Flag {
  const char* name;
  Kind kind;
  const char* def;  // etcd's default, as text
  Support support;
  const char* help;
  std::function<Status(Config&, const std::string&)> set;  // null for accepted/unsupported
};

Result<uint64_t> ParseUint(const std::string& flag, const std::string& v) {
  if (v.empty() || !std::all_of(v.begin(), v.end(), ::isdigit))
    return Status::InvalidArgument("invalid value \"" + v + "\" for flag -" + flag + ": parse error");
  return std::strtoull(v.c_str(), nullptr, 10);
}
Result<int64_t> ParseInt(const std::string& flag, const std::string& v) {
  std::string d = (!v.empty() && v[0] == '-') ? v.substr(1) : v;
  if (d.empty() || !std::all_of(d.begin(), d.end(), ::isdigit))
    return Status::InvalidArgument("invalid value \"" + v + "\" for flag -" + flag + ": parse error");
  return std::strtoll(v.c_str(), nullptr, 10);
}
Result<bool> ParseBool(const std::string& flag, const std::string& v) {
  std::string l = v;
  std::transform(l.begin(), l.end(), l.begin(), ::tolower);
  if (l == "1" || l == "t" || l == "true") return true;
  if (l == "0" || l == "f" || l == "false") return false;
  return Status::InvalidArgument("invalid boolean value \"" + v + "\" for -" + flag + ": parse error");
}
// Go time.ParseDuration subset: sequences of <number><unit>, units ns us ms s m h.
Result<uint64_t> ParseDurationMs(const std::string& flag, const std::string& v) {
  if (v == "0") return 0;
  double total_ms = 0;
  size_t i = 0;
  if (v.empty()) return Status::InvalidArgument("invalid value \"\" for flag -" + flag + ": parse error");
  while (i < v.size()) {
    size_t j = i;
    while (j < v.size() && (std::isdigit(v[j]) || v[j] == '.')) j++;
    if (j == i) return Status::InvalidArgument("invalid value \"" + v + "\" for flag -" + flag + ": parse error");
    double num = std::atof(v.substr(i, j - i).c_str());
    size_t k = j;
    while (k < v.size() && std::isalpha(static_cast<unsigned char>(v[k]))) k++;
    std::string unit = v.substr(j, k - j);
    double mult;
    if (unit == "ns") mult = 1e-6;
    else if (unit == "us" || unit == "µs") mult = 1e-3;
    else if (unit == "ms") mult = 1;
    else if (unit == "s") mult = 1000;
    else if (unit == "m") mult = 60000;
    else if (unit == "h") mult = 3600000;
    else return Status::InvalidArgument("invalid value \"" + v + "\" for flag -" + flag + ": time: unknown unit");
    total_ms += num * mult;
    i = k;
  }
  return static_cast<uint64_t>(total_ms);
}

std::vector<std::string> SplitComma(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

#define SET_STR(field) [](Config& c, const std::string& v) { c.field = v; return Status::OK(); }
#define SET_BOOL(field)                                     \
  [](Config& c, const std::string& v) -> Status {           \
    auto r = ParseBool("", v);                              \
    if (!r.ok()) return r.status();                         \
    c.field = *r;                                           \
    return Status::OK();                                    \
  }
#define SET_UINT(field, flag)                               \
  [](Config& c, const std::string& v) -> Status {           \
    auto r = ParseUint(flag, v);                            \
    if (!r.ok()) return r.status();                         \
    c.field = static_cast<decltype(c.field)>(*r);           \
    return Status::OK();                                    \
  }
#define SET_DUR(field, flag)                                \
  [](Config& c, const std::string& v) -> Status {           \
    auto r = ParseDurationMs(flag, v);                      \
    if (!r.ok()) return r.status();                         \
    c.field = *r;                                           \
    return Status::OK();                                    \
  }
#define SET_URLS(field, flag)                               \
  [](Config& c, const std::string& v) -> Status {           \
    auto r = ParseUrls(flag, v);                            \
    if (!r.ok()) return r.status();                         \
    c.field = std::move(*r);                                \
    return Status::OK();                                    \
  }

constexpr Support I = Support::kImplemented;
constexpr Support A = Support::kAccepted;
constexpr Support U = Support::kUnsupported;

const std::vector<Flag>& Flags() {
  static const std::vector<Flag> flags = {
      // member
      {"name", Kind::kString, "default", I, "Human-readable name for this member.", SET_STR(name)},
      {"data-dir", Kind::kString, "${name}.engram", I, "Path to the data directory.", SET_STR(data_dir)},
      {"wal-dir", Kind::kString, "", I, "Path to the dedicated wal directory.", SET_STR(wal_dir)},
      {"snapshot-count", Kind::kUint, "100000", I,
       "Number of committed transactions after which the applied state is checkpointed and older WAL segments are released.",
       SET_UINT(snapshot_count, "snapshot-count")},
      {"snapshot-catchup-entries", Kind::kUint, "5000", I,
       "Number of entries kept in the WAL for slow followers after a checkpoint.",
       SET_UINT(snapshot_catchup_entries, "snapshot-catchup-entries")},
      {"experimental-snapshot-catchup-entries", Kind::kUint, "5000", I, "Deprecated alias of --snapshot-catchup-entries.",
       SET_UINT(snapshot_catchup_entries, "experimental-snapshot-catchup-entries")},
      {"heartbeat-interval", Kind::kUint, "100", I, "Time (in milliseconds) of a heartbeat interval.",
       SET_UINT(heartbeat_ms, "heartbeat-interval")},
      {"election-timeout", Kind::kUint, "1000", I, "Time (in milliseconds) for an election to timeout.",
       SET_UINT(election_ms, "election-timeout")},
      {"initial-election-tick-advance", Kind::kBool, "true", A,
       "Whether to fast-forward initial election ticks on boot (a single member always campaigns at once).", nullptr},
      {"listen-peer-urls", Kind::kString, "http://127.0.0.1:2380", I, "List of URLs to listen on for peer traffic.",
       SET_URLS(listen_peer_urls, "listen-peer-urls")},
      {"listen-client-urls", Kind::kString, "http://127.0.0.1:2379", I, "List of URLs to listen on for client traffic.",
       SET_URLS(listen_client_urls, "listen-client-urls")},
      {"listen-client-http-urls", Kind::kString, "", U, "List of URLs to listen on for http only client traffic.", nullptr},
      {"max-snapshots", Kind::kUint, "5", A, "Maximum number of snapshot files to retain (Engram keeps none).", nullptr},
      {"max-wals", Kind::kUint, "5", A, "Maximum number of wal files to retain (Engram releases by --snapshot-count).", nullptr},
      {"quota-backend-bytes", Kind::kInt, "0", I, "Raise alarms when backend size exceeds the given quota (0 defaults to low space quota).",
       [](Config& c, const std::string& v) -> Status {
         auto r = ParseInt("quota-backend-bytes", v);
         if (!r.ok()) return r.status();
         c.quota_backend_bytes = *r;
         return Status::OK();
       }},
      {"backend-batch-interval", Kind::kDuration, "100ms", I, "Maximum time before the backend is synced to disk.",
       SET_DUR(backend_batch_interval_ms, "backend-batch-interval")},
      {"backend-batch-limit", Kind::kUint, "10000", I, "Maximum applied entries before the backend is synced to disk.",
       SET_UINT(backend_batch_limit, "backend-batch-limit")},
      {"backend-bbolt-freelist-type", Kind::kString, "map", A, "bbolt freelist type (not used: Engram's backend is LMDB).", nullptr},
      {"experimental-backend-bbolt-freelist-type", Kind::kString, "array", A, "bbolt freelist type (not used: Engram's backend is LMDB).", nullptr},
      {"max-txn-ops", Kind::kUint, "128", I, "Maximum number of operations permitted in a transaction.",
       SET_UINT(max_txn_ops, "max-txn-ops")},
      {"max-request-bytes", Kind::kUint, "1572864", I, "Maximum client request size in bytes the server will accept.",
       SET_UINT(max_request_bytes, "max-request-bytes")},
      {"max-concurrent-streams", Kind::kUint, "4294967295", I, "Maximum concurrent streams that each client can open at a time.",
       SET_UINT(max_concurrent_streams, "max-concurrent-streams")},
      {"grpc-keepalive-min-time", Kind::kDuration, "5s", I, "Minimum interval duration that a client should wait before pinging server.",
       SET_DUR(grpc_keepalive_min_time_ms, "grpc-keepalive-min-time")},
      {"grpc-keepalive-interval", Kind::kDuration, "2h0m0s", I, "Frequency duration of server-to-client ping to check if a connection is alive (0 to disable).",
       SET_DUR(grpc_keepalive_interval_ms, "grpc-keepalive-interval")},
      {"grpc-keepalive-timeout", Kind::kDuration, "20s", I, "Additional duration of wait before closing a non-responsive connection (0 to disable).",
       SET_DUR(grpc_keepalive_timeout_ms, "grpc-keepalive-timeout")},
      {"socket-reuse-port", Kind::kBool, "false", U, "Enable SO_REUSEPORT on listeners.", nullptr},
      {"socket-reuse-address", Kind::kBool, "false", U, "Enable SO_REUSEADDR on listeners.", nullptr},
      {"unsafe-no-fsync", Kind::kBool, "false", U, "Disables fsync, unsafe, will cause data loss.", nullptr},
      {"memory-mlock", Kind::kBool, "false", U, "Lock the backend's memory.", nullptr},
      {"experimental-memory-mlock", Kind::kBool, "false", U, "Lock the backend's memory.", nullptr},
      // clustering
      {"initial-advertise-peer-urls", Kind::kString, "http://127.0.0.1:2380", I, "List of this member's peer URLs to advertise to the rest of the cluster.",
       SET_URLS(initial_advertise_peer_urls, "initial-advertise-peer-urls")},
      {"initial-cluster", Kind::kString, "default=http://127.0.0.1:2380", I, "Initial cluster configuration for bootstrapping.",
       SET_STR(initial_cluster)},
      {"initial-cluster-state", Kind::kString, "new", I, "Initial cluster state ('new' or 'existing').", SET_STR(initial_cluster_state)},
      {"initial-cluster-token", Kind::kString, "etcd-cluster", I, "Initial cluster token for the etcd cluster during bootstrap.",
       SET_STR(initial_cluster_token)},
      {"advertise-client-urls", Kind::kString, "http://127.0.0.1:2379", I, "List of this member's client URLs to advertise to the public.",
       SET_URLS(advertise_client_urls, "advertise-client-urls")},
      {"discovery", Kind::kString, "", U, "Discovery URL used to bootstrap the cluster.", nullptr},
      {"discovery-fallback", Kind::kString, "proxy", A, "Expected behavior when discovery services fails (only used with --discovery).", nullptr},
      {"discovery-proxy", Kind::kString, "", U, "HTTP proxy to use for traffic to discovery service.", nullptr},
      {"discovery-srv", Kind::kString, "", U, "DNS srv domain used to bootstrap the cluster.", nullptr},
      {"discovery-srv-name", Kind::kString, "", U, "Suffix to the dns srv name queried when bootstrapping.", nullptr},
      {"discovery-token", Kind::kString, "", U, "V3 discovery: discovery token.", nullptr},
      {"discovery-endpoints", Kind::kString, "", U, "V3 discovery: endpoints.", nullptr},
      {"strict-reconfig-check", Kind::kBool, "true", I, "Reject reconfiguration requests that would cause quorum loss.",
       SET_BOOL(strict_reconfig_check)},
      {"pre-vote", Kind::kBool, "true", I,
       "Enable the raft Pre-Vote algorithm to prevent disruption when a node that has been partitioned away rejoins "
       "the cluster (on by default, as in etcd 3.6; check-quorum is always on).",
       SET_BOOL(pre_vote)},
      {"auto-compaction-retention", Kind::kString, "0", I, "Auto compaction retention length. 0 means disable auto compaction.",
       SET_STR(auto_compaction_retention)},
      {"auto-compaction-mode", Kind::kString, "periodic", I, "Interpret 'auto-compaction-retention' one of: periodic|revision.",
       SET_STR(auto_compaction_mode)},
      {"enable-v2", Kind::kBool, "false", U, "Accept etcd V2 client requests (Engram serves the v3 API only).", nullptr},
      {"experimental-enable-v2v3", Kind::kString, "", U, "v3 prefix for serving emulated v2 state.", nullptr},
      {"v2-deprecation", Kind::kString, "not-yet", A, "Phase of v2store deprecation (Engram has no v2 store).", nullptr},
      {"max-learners", Kind::kUint, "1", A, "Maximum number of learners (membership changes come with clustering).", nullptr},
      {"experimental-max-learners", Kind::kUint, "1", A, "Maximum number of learners.", nullptr},
      // security
      {"cert-file", Kind::kString, "", I, "Path to the client server TLS cert file.", SET_STR(client_tls.cert_file)},
      {"key-file", Kind::kString, "", I, "Path to the client server TLS key file.", SET_STR(client_tls.key_file)},
      {"client-cert-auth", Kind::kBool, "false", I, "Enable client cert authentication.", SET_BOOL(client_tls.client_cert_auth)},
      {"client-crl-file", Kind::kString, "", U, "Path to the client certificate revocation list file.", nullptr},
      {"client-cert-allowed-hostname", Kind::kString, "", U, "Allowed TLS hostname for client cert authentication.", nullptr},
      {"trusted-ca-file", Kind::kString, "", I, "Path to the client server TLS trusted CA cert file.", SET_STR(client_tls.trusted_ca_file)},
      {"auto-tls", Kind::kBool, "false", U, "Client TLS using generated certificates.", nullptr},
      {"client-cert-file", Kind::kString, "", A, "Client certificate used by the server when it dials clients (gateway/proxy only).", nullptr},
      {"client-key-file", Kind::kString, "", A, "Client key used by the server when it dials clients (gateway/proxy only).", nullptr},
      {"peer-cert-file", Kind::kString, "", A, "Path to the peer server TLS cert file (no peer traffic on a single member).", SET_STR(peer_tls.cert_file)},
      {"peer-key-file", Kind::kString, "", A, "Path to the peer server TLS key file.", SET_STR(peer_tls.key_file)},
      {"peer-client-cert-auth", Kind::kBool, "false", A, "Enable peer client cert authentication.", SET_BOOL(peer_tls.client_cert_auth)},
      {"peer-trusted-ca-file", Kind::kString, "", A, "Path to the peer server TLS trusted CA file.", SET_STR(peer_tls.trusted_ca_file)},
      {"peer-cert-allowed-cn", Kind::kString, "", A, "Allowed CN for inter peer authentication.", nullptr},
      {"peer-cert-allowed-hostname", Kind::kString, "", A, "Allowed TLS hostname for inter peer authentication.", nullptr},
      {"peer-auto-tls", Kind::kBool, "false", A, "Peer TLS using self-generated certificates if --peer-key-file and --peer-cert-file are not provided.",
       SET_BOOL(peer_tls.auto_tls)},
      {"peer-crl-file", Kind::kString, "", A, "Path to the peer certificate revocation list file.", nullptr},
      {"peer-client-cert-file", Kind::kString, "", A, "Peer client certificate file.", nullptr},
      {"peer-client-key-file", Kind::kString, "", A, "Peer client key file.", nullptr},
      {"self-signed-cert-validity", Kind::kUint, "1", A, "Validity period in years of the auto-generated certificates.", nullptr},
      {"cipher-suites", Kind::kList, "", U, "Comma-separated list of supported TLS cipher suites.", nullptr},
      {"tls-min-version", Kind::kString, "TLS1.2", U, "Minimum TLS version supported.", nullptr},
      {"tls-max-version", Kind::kString, "", U, "Maximum TLS version supported.", nullptr},
      {"cors", Kind::kList, "", A, "Comma-separated white list of origins for CORS (HTTP gateway not served yet).", nullptr},
      {"host-whitelist", Kind::kList, "", A, "Acceptable hostnames from HTTP client requests (HTTP gateway not served yet).", nullptr},
      // auth
      {"auth-token", Kind::kString, "simple", A, "Specify auth token specific options (auth comes in a later release).", nullptr},
      {"bcrypt-cost", Kind::kUint, "10", A, "Specify bcrypt algorithm cost factor for auth password hashing.", nullptr},
      {"auth-token-ttl", Kind::kUint, "300", A, "The lifetime in seconds of the auth token.", nullptr},
      // profiling and monitoring
      {"enable-pprof", Kind::kBool, "false", U, "Enable runtime profiling data via HTTP server (Go only).", nullptr},
      {"metrics", Kind::kString, "basic", I,
       "Set level of detail for exported metrics: 'basic' or 'extensive'. Engram exports the server side grpc "
       "histogram (grpc_server_handling_seconds) in both, so 'extensive' changes nothing more (docs/metrics.md).",
       SET_STR(metrics)},
      {"listen-metrics-urls", Kind::kString, "http://127.0.0.1:2381", I,
       "List of plain-http URLs to serve /metrics, /health, /livez, /readyz and the status page on (etcd's default is "
       "none; set it to \"\" for none).",
       SET_URLS(listen_metrics_urls, "listen-metrics-urls")},
      {"metrics-prefix-depth", Kind::kUint, "2", I,
       "Engram only: export live keys and bytes per key prefix of this many '/'-separated segments "
       "(engram_mvcc_prefix_keys/_bytes, at most 256 prefixes); 0 disables.",
       SET_UINT(metrics_prefix_depth, "metrics-prefix-depth")},
      {"enable-grpc-gateway", Kind::kBool, "true", A, "Enable GRPC gateway (JSON over HTTP; not served yet).", nullptr},
      // logging
      {"logger", Kind::kString, "zap", I, "'zap' (structured JSON lines) or 'capnslog' (text lines).", SET_STR(logger)},
      {"log-outputs", Kind::kList, "default", I, "'default', 'stderr', 'stdout', or file paths, comma-separated.",
       [](Config& c, const std::string& v) { c.log_outputs = SplitComma(v); return Status::OK(); }},
      {"log-level", Kind::kString, "info", I, "Configures log level. Only supports debug, info, warn, error, panic, or fatal.", SET_STR(log_level)},
      {"log-format", Kind::kString, "json", A, "Log format (json or console).", nullptr},
      {"enable-log-rotation", Kind::kBool, "false", U, "Enable log rotation of a single log-outputs file target.", nullptr},
      {"log-rotation-config-json", Kind::kString, "", U, "Log rotation configuration.", nullptr},
      {"debug", Kind::kBool, "false", I, "Enable debug-level logging (deprecated: use --log-level=debug).",
       [](Config& c, const std::string& v) -> Status {
         auto r = ParseBool("debug", v);
         if (!r.ok()) return r.status();
         if (*r) c.log_level = "debug";
         return Status::OK();
       }},
      {"log-package-levels", Kind::kString, "", A, "Per-package log levels (capnslog only; deprecated).", nullptr},
      // v2 proxy
      {"proxy", Kind::kString, "off", U, "Proxy mode setting ('off', 'readonly' or 'on').", nullptr},
      {"proxy-failure-wait", Kind::kUint, "5000", A, "v2 proxy setting.", nullptr},
      {"proxy-refresh-interval", Kind::kUint, "30000", A, "v2 proxy setting.", nullptr},
      {"proxy-dial-timeout", Kind::kUint, "1000", A, "v2 proxy setting.", nullptr},
      {"proxy-write-timeout", Kind::kUint, "5000", A, "v2 proxy setting.", nullptr},
      {"proxy-read-timeout", Kind::kUint, "0", A, "v2 proxy setting.", nullptr},
      // experimental and feature gates
      {"experimental-initial-corrupt-check", Kind::kBool, "false", A,
       "Check the member's data against its peers before serving (no peers on a single member).", nullptr},
      {"initial-corrupt-check", Kind::kBool, "false", A, "Same as --experimental-initial-corrupt-check.", nullptr},
      {"experimental-corrupt-check-time", Kind::kDuration, "0s", A, "Duration between cluster corruption checks (needs peers).", nullptr},
      {"corrupt-check-time", Kind::kDuration, "0s", A, "Duration between cluster corruption checks (needs peers).", nullptr},
      {"experimental-compact-hash-check-enabled", Kind::kBool, "false", A, "Leader compaction-hash checks (needs peers).", nullptr},
      {"experimental-compact-hash-check-time", Kind::kDuration, "1m", A, "Leader compaction-hash check period.", nullptr},
      {"experimental-enable-lease-checkpoint", Kind::kBool, "false", I,
       "Enable leader to send regular checkpoints to other members to prevent reset of remaining TTL on leader change "
       "or restart (the remaining TTL is persisted, as etcd 3.6 always does).",
       SET_BOOL(lease_checkpoint)},
      {"experimental-enable-lease-checkpoint-persist", Kind::kBool, "false", I,
       "Enable persisting remainingTTL to prevent indefinite auto-renewal of long lived leases (always on with "
       "--experimental-enable-lease-checkpoint, as in etcd 3.6).",
       SET_BOOL(lease_checkpoint_persist)},
      {"experimental-compaction-batch-limit", Kind::kUint, "1000", I,
       "Sets the maximum revisions deleted in each compaction batch (one LMDB write transaction; writes are applied "
       "between batches).",
       SET_UINT(compaction_batch_limit, "experimental-compaction-batch-limit")},
      {"compaction-batch-limit", Kind::kUint, "1000", I, "Same as --experimental-compaction-batch-limit (etcd 3.6).",
       SET_UINT(compaction_batch_limit, "compaction-batch-limit")},
      {"experimental-compaction-sleep-interval", Kind::kDuration, "10ms", I,
       "Sets the sleep interval between each compaction batch: while writes are being applied, at most one batch of "
       "removals runs per interval (when idle, batches run back to back).",
       SET_DUR(compaction_sleep_interval_ms, "experimental-compaction-sleep-interval")},
      {"compaction-sleep-interval", Kind::kDuration, "10ms", I, "Same as --experimental-compaction-sleep-interval (etcd 3.6).",
       SET_DUR(compaction_sleep_interval_ms, "compaction-sleep-interval")},
      {"experimental-peer-skip-client-san-verification", Kind::kBool, "false", A, "Skip verification of SAN field in client certificate for peer connections.", nullptr},
      {"experimental-watch-progress-notify-interval", Kind::kDuration, "10m", I, "Duration of periodic watch progress notifications.",
       SET_DUR(watch_progress_notify_interval_ms, "experimental-watch-progress-notify-interval")},
      {"watch-progress-notify-interval", Kind::kDuration, "10m", I, "Duration of periodic watch progress notifications.",
       SET_DUR(watch_progress_notify_interval_ms, "watch-progress-notify-interval")},
      {"watch-stream-buffer-bytes", Kind::kUint, "8388608", I,
       "Engram only: memory budget of one watch stream, in bytes (replies buffered for a client that does not read). "
       "At the budget its watchers fall back to catching up from the store and the stream's requests are not read "
       "until the client drains (engram_watch_stream_buffered_bytes).",
       SET_UINT(watch_stream_buffer_bytes, "watch-stream-buffer-bytes")},
      {"experimental-warning-apply-duration", Kind::kDuration, "100ms", I, "Time duration after which a warning is generated if request takes more time (and counts in etcd_server_slow_apply_total).",
       SET_DUR(warning_apply_duration_ms, "experimental-warning-apply-duration")},
      {"warning-apply-duration", Kind::kDuration, "100ms", I, "Same as --experimental-warning-apply-duration (etcd 3.6).",
       SET_DUR(warning_apply_duration_ms, "warning-apply-duration")},
      {"experimental-warning-unary-request-duration", Kind::kDuration, "300ms", A, "Slow unary request warning threshold.", nullptr},
      {"warning-unary-request-duration", Kind::kDuration, "300ms", A, "Slow unary request warning threshold.", nullptr},
      {"experimental-txn-mode-write-with-shared-buffer", Kind::kBool, "true", A, "bbolt write-transaction mode (not used).", nullptr},
      {"experimental-bootstrap-defrag-threshold-megabytes", Kind::kUint, "0", A, "Defrag at bootstrap threshold (not used).", nullptr},
      {"experimental-stop-grpc-service-on-defrag", Kind::kBool, "false", A, "gRPC health NOT_SERVING during defrag.", nullptr},
      {"experimental-downgrade-check-time", Kind::kDuration, "5s", A, "Downgrade check period.", nullptr},
      {"experimental-wait-cluster-ready-timeout", Kind::kDuration, "5s", A, "Wait for cluster readiness at start.", nullptr},
      {"experimental-enable-distributed-tracing", Kind::kBool, "false", U, "OpenTelemetry tracing.", nullptr},
      {"experimental-distributed-tracing-address", Kind::kString, "localhost:4317", A, "OpenTelemetry collector address.", nullptr},
      {"experimental-distributed-tracing-service-name", Kind::kString, "etcd", A, "OpenTelemetry service name.", nullptr},
      {"experimental-distributed-tracing-instance-id", Kind::kString, "", A, "OpenTelemetry instance id.", nullptr},
      {"experimental-distributed-tracing-sampling-rate", Kind::kUint, "0", A, "OpenTelemetry sampling rate.", nullptr},
      {"feature-gates", Kind::kString, "", A, "Feature gates (etcd 3.6); the gates name etcd behaviours Engram already has or does not need.", nullptr},
      {"force-new-cluster", Kind::kBool, "false", I, "Force to create a new one member cluster.", SET_BOOL(force_new_cluster)},
      {"config-file", Kind::kString, "", I, "Path to the server configuration file (YAML). Flags and environment variables are then ignored.", nullptr},
  };
  return flags;
}

const Flag* FindFlag(const std::string& name) {
  for (const auto& f : Flags())
    if (name == f.name) return &f;
  return nullptr;
}

std::string EnvName(const std::string& flag) {
  std::string e = "ETCD_";
  for (char c : flag) e.push_back(c == '-' ? '_' : static_cast<char>(std::toupper(c)));
  return e;
}

std::string NormBool(const std::string& v) {
  std::string l = v;
  std::transform(l.begin(), l.end(), l.begin(), ::tolower);
  if (l == "1" || l == "t" || l == "true") return "true";
  if (l == "0" || l == "f" || l == "false") return "false";
  return v;
}

// Applies one flag value from any source.
Status Apply(Config& c, const Flag& f, const std::string& value, const std::string& source) {
  std::string v = value;
  if (f.kind == Kind::kBool) {
    auto b = ParseBool(f.name, v);
    if (!b.ok()) return b.status();
    v = *b ? "true" : "false";
  }
  if (f.support == Support::kUnsupported) {
    std::string def = f.def;
    if (f.kind == Kind::kBool) def = NormBool(def);
    if (v != def)
      return Status::InvalidArgument("flag --" + std::string(f.name) + " is not supported by engram yet (" + f.help +
                                     "); remove it or set it to its default \"" + def + "\"");
    return Status::OK();
  }
  c.set_flags[f.name] = v;
  if (f.set) ENGRAM_RETURN_IF_ERROR(f.set(c, v));
  if (f.support == Support::kAccepted && v != (f.kind == Kind::kBool ? NormBool(f.def) : std::string(f.def)))
    c.notes.push_back("--" + std::string(f.name) + " (" + source + ") is accepted and has no effect: " + f.help);
  return Status::OK();
}

Status ApplyDefaults(Config& c) {
  if (c.data_dir.empty()) c.data_dir = c.name + ".engram";
  auto def = [](const char* flag, const char* v) { return std::move(ParseUrls(flag, v).value()); };
  if (c.listen_client_urls.empty()) c.listen_client_urls = def("listen-client-urls", "http://127.0.0.1:2379");
  if (c.advertise_client_urls.empty()) c.advertise_client_urls = def("advertise-client-urls", "http://127.0.0.1:2379");
  if (c.listen_peer_urls.empty()) c.listen_peer_urls = def("listen-peer-urls", "http://127.0.0.1:2380");
  if (c.initial_advertise_peer_urls.empty())
    c.initial_advertise_peer_urls = def("initial-advertise-peer-urls", "http://127.0.0.1:2380");
  // Engram serves metrics on 127.0.0.1:2381 unless told otherwise (etcd: none).
  if (!c.set_flags.count("listen-metrics-urls"))
    c.listen_metrics_urls = def("listen-metrics-urls", "http://127.0.0.1:2381");
  if (c.initial_cluster.empty()) {
    // etcd: "<name>=<each initial-advertise-peer-url>"
    for (const auto& u : c.initial_advertise_peer_urls) {
      if (!c.initial_cluster.empty()) c.initial_cluster += ",";
      c.initial_cluster += c.name + "=" + u.raw;
    }
  }
  return Status::OK();
}

Status Validate(Config& c) {
  if (c.initial_cluster_state != "new" && c.initial_cluster_state != "existing")
    return Status::InvalidArgument("invalid value \"" + c.initial_cluster_state +
                                   "\" for flag -initial-cluster-state: valid values are \"new\", \"existing\"");
  if (c.auto_compaction_mode != "periodic" && c.auto_compaction_mode != "revision")
    return Status::InvalidArgument("unknown auto-compaction-mode \"" + c.auto_compaction_mode + "\"");
  if (c.metrics != "basic" && c.metrics != "extensive")
    return Status::InvalidArgument("unknown metrics \"" + c.metrics + "\": expected basic or extensive");
  if (c.logger != "zap" && c.logger != "capnslog")
    return Status::InvalidArgument("unknown logger option \"" + c.logger + "\"");
  static const std::set<std::string> levels = {"debug", "info", "warn", "error", "panic", "fatal"};
  if (!levels.count(c.log_level)) return Status::InvalidArgument("unknown log-level \"" + c.log_level + "\"");
  if (c.heartbeat_ms == 0) return Status::InvalidArgument("--heartbeat-interval must be > 0");
  if (c.lease_checkpoint_persist && !c.lease_checkpoint)
    return Status::InvalidArgument(
        "setting experimental-enable-lease-checkpoint-persist requires experimental-enable-lease-checkpoint");
  if (5 * c.heartbeat_ms > c.election_ms)
    return Status::InvalidArgument("--election-timeout[" + std::to_string(c.election_ms) +
                                   "ms] should be at least as 5 times as --heartbeat-interval[" +
                                   std::to_string(c.heartbeat_ms) + "ms]");
  if (c.election_ms > 50000)
    return Status::InvalidArgument("--election-timeout[" + std::to_string(c.election_ms) +
                                   "ms] is too long, and should be set less than 50000ms");
  if (c.max_txn_ops == 0) return Status::InvalidArgument("--max-txn-ops must be > 0");
  for (const auto& u : c.listen_client_urls) {
    if (u.Tls() && c.client_tls.Empty())
      return Status::InvalidArgument("TLS key/cert (--cert-file, --key-file) must be provided for client url " + u.raw +
                                     " with HTTPS scheme");
  }
  for (const auto& u : c.listen_metrics_urls) {
    if (u.scheme != "http")
      return Status::InvalidArgument("--listen-metrics-urls " + u.raw +
                                     ": only http:// metrics URLs are supported by engram yet");
  }
  // advertise-client-urls is required when listen-client-urls is set (etcd 3.4 rule).
  if (c.set_flags.count("listen-client-urls") && !c.set_flags.count("advertise-client-urls"))
    return Status::InvalidArgument(
        "--advertise-client-urls is required when --listen-client-urls is set explicitly");
  if (c.auto_compaction_retention != "0" && !c.auto_compaction_retention.empty()) {
    // periodic: a duration ("1h", "30m") or an integer number of hours; revision: an integer.
    if (c.auto_compaction_mode == "revision") {
      auto r = ParseUint("auto-compaction-retention", c.auto_compaction_retention);
      if (!r.ok()) return r.status();
    } else if (!std::all_of(c.auto_compaction_retention.begin(), c.auto_compaction_retention.end(), ::isdigit)) {
      auto r = ParseDurationMs("auto-compaction-retention", c.auto_compaction_retention);
      if (!r.ok()) return r.status();
    }
  }
  auto im = ParseInitialCluster(c.initial_cluster);
  if (!im.ok()) return im.status();
  return Status::OK();
}

Status LoadYaml(Config& c, const std::string& path) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const std::exception& e) {
    return Status::InvalidArgument("cannot load config file " + path + ": " + e.what());
  }
  if (!root.IsMap()) return Status::InvalidArgument("config file " + path + " is not a YAML mapping");
  auto scalar = [](const YAML::Node& n) -> std::string {
    if (n.IsNull()) return "";
    if (n.IsSequence()) {
      std::string out;
      for (const auto& e : n) {
        if (!out.empty()) out += ",";
        out += e.as<std::string>();
      }
      return out;
    }
    return n.as<std::string>();
  };
  for (const auto& kv : root) {
    std::string key = kv.first.as<std::string>();
    if (key == "client-transport-security" || key == "peer-transport-security") {
      bool peer = key[0] == 'p';
      if (!kv.second.IsMap()) continue;
      for (const auto& t : kv.second) {
        std::string k = t.first.as<std::string>();
        std::string v = scalar(t.second);
        std::string flag = k;
        if (k == "cert-file" || k == "key-file" || k == "client-cert-auth" || k == "trusted-ca-file" ||
            k == "auto-tls" || k == "crl-file" || k == "allowed-cn" || k == "allowed-hostname") {
          if (k == "crl-file") flag = peer ? "peer-crl-file" : "client-crl-file";
          else if (k == "allowed-cn") flag = "peer-cert-allowed-cn";
          else if (k == "allowed-hostname") flag = peer ? "peer-cert-allowed-hostname" : "client-cert-allowed-hostname";
          else if (peer) flag = "peer-" + k;
        } else {
          return Status::InvalidArgument("config file " + path + ": unknown field \"" + k + "\" in " + key);
        }
        if (peer && k == "allowed-cn") flag = "peer-cert-allowed-cn";
        const Flag* f = FindFlag(flag);
        if (!f) return Status::InvalidArgument("config file " + path + ": unknown field \"" + k + "\"");
        if (v.empty()) continue;
        ENGRAM_RETURN_IF_ERROR(Apply(c, *f, v, "config file"));
      }
      continue;
    }
    // A few YAML keys differ from flag names.
    std::string flag = key;
    if (key == "enable-debug") flag = "debug";
    if (key == "log-output") flag = "log-outputs";
    const Flag* f = FindFlag(flag);
    if (!f || flag == "config-file")
      return Status::InvalidArgument("config file " + path + ": unknown field \"" + key + "\"");
    std::string v = scalar(kv.second);
    if (v.empty() && f->kind != Kind::kString && f->kind != Kind::kList) continue;
    if (v.empty()) continue;
    ENGRAM_RETURN_IF_ERROR(Apply(c, *f, v, "config file"));
  }
  return Status::OK();
}

}  // namespace

std::string Url::HostPort() const {
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

Result<std::vector<Url>> ParseUrls(const std::string& flag, const std::string& list) {
  std::vector<Url> out;
  for (const auto& s : SplitComma(list)) {
    Url u;
    u.raw = s;
    size_t p = s.find("://");
    if (p == std::string::npos)
      return Status::InvalidArgument("invalid value \"" + list + "\" for flag -" + flag + ": URL scheme must be http, https, unix, or unixs: " + s);
    u.scheme = s.substr(0, p);
    if (u.scheme != "http" && u.scheme != "https" && u.scheme != "unix" && u.scheme != "unixs")
      return Status::InvalidArgument("invalid value \"" + list + "\" for flag -" + flag + ": URL scheme must be http, https, unix, or unixs: " + s);
    std::string rest = s.substr(p + 3);
    size_t slash = rest.find('/');
    if (slash != std::string::npos) {
      if (rest.substr(slash) != "/")
        return Status::InvalidArgument("invalid value \"" + list + "\" for flag -" + flag + ": URL must not contain a path: " + s);
      rest = rest.substr(0, slash);
    }
    if (u.scheme == "unix" || u.scheme == "unixs") {
      u.host = rest;
      out.push_back(u);
      continue;
    }
    std::string port;
    if (!rest.empty() && rest[0] == '[') {
      size_t close = rest.find(']');
      if (close == std::string::npos) return Status::InvalidArgument("invalid URL " + s);
      u.host = rest.substr(1, close - 1);
      if (close + 1 < rest.size() && rest[close + 1] == ':') port = rest.substr(close + 2);
    } else {
      size_t colon = rest.rfind(':');
      if (colon == std::string::npos) {
        u.host = rest;
      } else {
        u.host = rest.substr(0, colon);
        port = rest.substr(colon + 1);
      }
    }
    if (port.empty() || !std::all_of(port.begin(), port.end(), ::isdigit))
      return Status::InvalidArgument("invalid value \"" + list + "\" for flag -" + flag + ": URL address does not have the form \"host:port\": " + s);
    u.port = std::atoi(port.c_str());
    if (u.port > 65535) return Status::InvalidArgument("invalid port in URL " + s);
    out.push_back(u);
  }
  return out;
}

Result<std::vector<InitialMember>> ParseInitialCluster(const std::string& s) {
  std::vector<InitialMember> members;
  for (const auto& item : SplitComma(s)) {
    size_t eq = item.find('=');
    if (eq == std::string::npos)
      return Status::InvalidArgument("--initial-cluster has an entry without a name: \"" + item + "\" (want name=url)");
    std::string name = item.substr(0, eq), url = item.substr(eq + 1);
    auto u = ParseUrls("initial-cluster", url);
    if (!u.ok()) return u.status();
    auto it = std::find_if(members.begin(), members.end(), [&](const InitialMember& m) { return m.name == name; });
    if (it == members.end()) {
      members.push_back({name, {url}});
    } else {
      it->peer_urls.push_back(url);
    }
  }
  if (members.empty()) return Status::InvalidArgument("--initial-cluster is empty");
  return members;
}

uint64_t ComputeMemberId(std::vector<std::string> peer_urls, const std::string& token) {
  std::sort(peer_urls.begin(), peer_urls.end());
  std::string b;
  for (const auto& u : peer_urls) b += u;
  b += token;
  unsigned char md[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(b.data()), b.size(), md);
  return DecodeBig64(reinterpret_cast<const char*>(md));
}

uint64_t ComputeClusterId(std::vector<uint64_t> ids) {
  std::sort(ids.begin(), ids.end());
  std::string b;
  for (uint64_t id : ids) {
    char buf[8];
    EncodeBig64(buf, id);
    b.append(buf, 8);
  }
  unsigned char md[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(b.data()), b.size(), md);
  return DecodeBig64(reinterpret_cast<const char*>(md));
}

Result<ParseResult> ParseCommandLine(const std::vector<std::string>& args, const std::vector<std::string>& env) {
  ParseResult res;
  Config& c = res.config;
  std::map<std::string, std::string> from_cmdline;  // flag -> value, in order of appearance (last wins)
  std::string config_file;
  for (size_t i = 0; i < args.size(); i++) {
    std::string a = args[i];
    if (a == "--") break;
    if (a.size() < 2 || a[0] != '-') {
      return Status::InvalidArgument("'" + a + "' is not a valid flag");
    }
    std::string body = a.substr(a[1] == '-' ? 2 : 1);
    std::string name = body, value;
    bool has_value = false;
    size_t eq = body.find('=');
    if (eq != std::string::npos) {
      name = body.substr(0, eq);
      value = body.substr(eq + 1);
      has_value = true;
    }
    if (name == "help" || name == "h") {
      res.outcome = ParseOutcome::kHelp;
      return res;
    }
    if (name == "version") {
      res.outcome = ParseOutcome::kVersion;
      return res;
    }
    const Flag* f = FindFlag(name);
    if (!f) return Status::InvalidArgument("flag provided but not defined: -" + name);
    if (!has_value) {
      if (f->kind == Kind::kBool) {
        value = "true";
      } else {
        if (i + 1 >= args.size()) return Status::InvalidArgument("flag needs an argument: -" + name);
        value = args[++i];
      }
    }
    if (name == "config-file") {
      config_file = value;
      continue;
    }
    from_cmdline[name] = value;
  }
  // Environment.
  if (config_file.empty()) {
    for (const auto& kv : env) {
      size_t eq = kv.find('=');
      if (eq == std::string::npos || kv.rfind("ETCD_", 0) != 0) continue;
      std::string var = kv.substr(0, eq), val = kv.substr(eq + 1);
      if (var == "ETCD_CONFIG_FILE") {
        config_file = val;
        continue;
      }
      const Flag* match = nullptr;
      for (const auto& f : Flags())
        if (EnvName(f.name) == var) match = &f;
      if (!match) {
        // etcd warns and goes on for unknown ETCD_ variables (ETCDCTL_* are common in the same shell).
        c.notes.push_back("unrecognized environment variable " + kv);
        continue;
      }
      if (from_cmdline.count(match->name))
        return Status::InvalidArgument("conflicting environment variable \"" + var +
                                       "\" is shadowed by corresponding command-line flag (either unset environment variable or disable flag)");
      ENGRAM_RETURN_IF_ERROR(Apply(c, *match, val, "environment variable " + var));
    }
  }
  if (!config_file.empty()) {
    if (!from_cmdline.empty())
      c.notes.push_back("--config-file is set: the other command-line flags and environment variables are ignored");
    c.set_flags["config-file"] = config_file;
    ENGRAM_RETURN_IF_ERROR(LoadYaml(c, config_file));
  } else {
    for (const auto& [name, value] : from_cmdline) ENGRAM_RETURN_IF_ERROR(Apply(c, *FindFlag(name), value, "flag"));
  }
  ENGRAM_RETURN_IF_ERROR(ApplyDefaults(c));
  ENGRAM_RETURN_IF_ERROR(Validate(c));
  return res;
}

std::string HelpText() {
  std::string out =
      "Usage:\n\n  engram [flags]\n    Start an Engram server (etcd v3 API compatible).\n\n"
      "  engram --version\n    Show the version of Engram.\n\n  engram -h | --help\n    Show the help information about Engram.\n\n"
      "Every flag can also be set with an ETCD_<FLAG> environment variable (ETCD_DATA_DIR for --data-dir), or in a YAML\n"
      "--config-file whose keys are the flag names. Flags marked [accepted] are taken for compatibility and have no\n"
      "effect on what Engram serves today; flags marked [not supported] stop the server unless left at their default.\n\nFlags:\n";
  for (const auto& f : Flags()) {
    out += "  --" + std::string(f.name);
    if (f.kind != Kind::kBool) out += " '" + std::string(f.def) + "'";
    else out += std::string(" (default ") + f.def + ")";
    out += "\n      ";
    out += f.help;
    if (f.support == Support::kAccepted) out += " [accepted]";
    if (f.support == Support::kUnsupported) out += " [not supported]";
    out += "\n";
  }
  return out;
}

}  // namespace engram::server
