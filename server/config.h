// Engram's configuration: etcd's flags, ETCD_* environment variables and
// --config-file YAML, with etcd's names, defaults and precedence.
//
// Precedence (as etcd 3.4-3.6): with --config-file, the file alone configures
// the server (flags and environment are ignored, with a log line); otherwise a
// command-line flag wins, and an ETCD_* variable for a flag that is also given
// on the command line is an error ("conflicting environment variable ... is
// shadowed by corresponding command-line flag").
//
// Every flag etcd 3.4-3.6 accepts is known here and has one of three kinds
// (see kFlags in config.cc and the table in README.md):
//   implemented  - Engram honours it;
//   accepted     - Engram accepts it because ignoring it cannot change
//                  behaviour for what Engram serves today (e.g. peer TLS
//                  settings of a single member, which has no peer traffic);
//   unsupported  - setting it to anything but its default stops the server
//                  with "engram: flag --X is not supported yet".
// A flag that is not in the table is an error, as in etcd.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "src/common/status.h"

namespace engram::server {

struct Url {
  std::string scheme;  // http, https, unix, unixs
  std::string host;    // without brackets for IPv6
  int port = 0;
  std::string raw;     // as given
  // "host:port" for gRPC/bind ("[::1]:2379" for IPv6).
  std::string HostPort() const;
  bool Tls() const { return scheme == "https" || scheme == "unixs"; }
};

// Parses a comma-separated URL list, etcd's way ("http://a:1,http://b:2").
Result<std::vector<Url>> ParseUrls(const std::string& flag, const std::string& list);

struct TlsInfo {
  std::string cert_file, key_file, trusted_ca_file, crl_file;
  bool client_cert_auth = false;
  bool auto_tls = false;
  bool Empty() const { return cert_file.empty() && key_file.empty() && !auto_tls; }
};

struct Config {
  std::string name = "default";
  std::string data_dir;  // default "<name>.engram" (etcd: "<name>.etcd")
  std::string wal_dir;   // default <data-dir>/member/wal

  std::vector<Url> listen_client_urls, advertise_client_urls;
  std::vector<Url> listen_peer_urls, initial_advertise_peer_urls;
  std::vector<Url> listen_metrics_urls;
  std::string initial_cluster;  // "name=url,name=url"
  std::string initial_cluster_state = "new";
  std::string initial_cluster_token = "etcd-cluster";

  uint64_t snapshot_count = 100000;
  uint64_t snapshot_catchup_entries = 5000;
  uint32_t heartbeat_ms = 100;
  uint32_t election_ms = 1000;
  int64_t quota_backend_bytes = 0;  // 0 = default 2 GiB
  uint64_t max_request_bytes = 1572864;
  uint32_t max_txn_ops = 128;
  uint32_t max_concurrent_streams = 0xffffffffu;
  uint64_t backend_batch_interval_ms = 100;
  uint64_t backend_batch_limit = 10000;
  std::string auto_compaction_mode = "periodic";
  std::string auto_compaction_retention = "0";
  uint64_t grpc_keepalive_min_time_ms = 5000;
  uint64_t grpc_keepalive_interval_ms = 2 * 3600 * 1000;
  uint64_t grpc_keepalive_timeout_ms = 20000;
  uint64_t watch_progress_notify_interval_ms = 600000;  // --watch-progress-notify-interval
  uint64_t watch_stream_buffer_bytes = 8u << 20;         // engram: --watch-stream-buffer-bytes

  TlsInfo client_tls, peer_tls;
  std::string metrics = "basic";
  int metrics_prefix_depth = 2;  // engram: --metrics-prefix-depth (engram_mvcc_prefix_*; 0 disables)

  std::string logger = "zap";
  std::string log_level = "info";
  std::vector<std::string> log_outputs = {"default"};

  bool force_new_cluster = false;
  bool strict_reconfig_check = true;
  bool pre_vote = true;
  uint64_t warning_apply_duration_ms = 100;  // --(experimental-)warning-apply-duration
  bool lease_checkpoint = false;          // --experimental-enable-lease-checkpoint
  bool lease_checkpoint_persist = false;  // --experimental-enable-lease-checkpoint-persist
  uint64_t compaction_batch_limit = 1000;  // --experimental-compaction-batch-limit
  uint64_t compaction_sleep_interval_ms = 10;  // --experimental-compaction-sleep-interval  // --pre-vote (raft pre-vote; check-quorum is always on)

  // Which flags were set (by flag, env or file), for logging.
  std::map<std::string, std::string> set_flags;
  std::vector<std::string> notes;  // accepted-but-ignored explanations, logged at start

  int64_t EffectiveQuota() const { return quota_backend_bytes == 0 ? 2147483648LL : quota_backend_bytes; }
  std::string MemberDir() const { return data_dir + "/member"; }
  std::string WalDir() const { return wal_dir.empty() ? MemberDir() + "/wal" : wal_dir; }
};

enum class ParseOutcome { kRun, kHelp, kVersion };

struct ParseResult {
  ParseOutcome outcome = ParseOutcome::kRun;
  Config config;
};

// args excludes argv[0]. env is the process environment as NAME=VALUE strings.
Result<ParseResult> ParseCommandLine(const std::vector<std::string>& args,
                                     const std::vector<std::string>& env);

std::string HelpText();

// etcd's member ID: first 8 bytes (big-endian) of SHA-1 over the sorted peer
// URLs concatenated, then the cluster token.
uint64_t ComputeMemberId(std::vector<std::string> peer_urls, const std::string& token);
// etcd's cluster ID: SHA-1 over the sorted member IDs as 8-byte big-endian.
uint64_t ComputeClusterId(std::vector<uint64_t> member_ids);

// A member of --initial-cluster.
struct InitialMember {
  std::string name;
  std::vector<std::string> peer_urls;
};
Result<std::vector<InitialMember>> ParseInitialCluster(const std::string& s);

}  // namespace engram::server
