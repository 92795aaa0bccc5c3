// RpcProbe: what the gRPC layer counts, per etcd gRPC method, with the
// semantics of go-grpc-prometheus (etcd's grpc_server_* families) plus the
// client gRPC byte counters (etcd_network_client_grpc_{sent,received}_bytes_total)
// and etcd_server_client_requests_total. server/grpc_metrics.cc counts into it
// (a gRPC server interceptor); exporter/ publishes it. Plain atomics, no
// Prometheus (STYLE practice 10).
//
// The method table is fixed: every method of the services in
// proto/etcdserverpb/rpc.proto plus grpc.health.v1.Health/Check and /Watch. Its series
// exist (at zero) from start, as etcd pre-creates them for every registered
// method x every status code (reference §1.6).
//
// Thread-safety: everything is safe from any thread. Counting is wait-free
// except the first request carrying a new client-api-version value (a mutex,
// once per distinct value).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "src/common/probe.h"

namespace engram::kv {

enum class GrpcType : uint8_t { kUnary, kClientStream, kServerStream, kBidiStream };

inline const char* GrpcTypeName(GrpcType t) {
  switch (t) {
    case GrpcType::kUnary: return "unary";
    case GrpcType::kClientStream: return "client_stream";
    case GrpcType::kServerStream: return "server_stream";
    case GrpcType::kBidiStream: return "bidi_stream";
  }
  return "unary";
}

// gRPC status codes 0..16 by their Go codes.Code names (the grpc_code label).
inline constexpr int kGrpcCodes = 17;
inline constexpr const char* kGrpcCodeNames[kGrpcCodes] = {
    "OK",       "Canceled",   "Unknown",      "InvalidArgument", "DeadlineExceeded", "NotFound",
    "AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted",
    "OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated"};

// Prometheus' default buckets (DEF), used by grpc_server_handling_seconds.
inline std::vector<double> BucketsDefault() { return {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}; }

struct RpcMethodInfo {
  const char* service;  // grpc_service label, e.g. "etcdserverpb.KV"
  const char* method;   // grpc_method label, e.g. "Range"
  GrpcType type;
  // Series appear only once used (etcd registers these services after its
  // gRPC metrics are initialized, so they are not pre-created at zero).
  bool lazy = false;
};

// Every method Engram's gRPC server can be asked for (served or not: an
// UNIMPLEMENTED answer is counted too, as in etcd when a method fails).
inline constexpr RpcMethodInfo kRpcMethods[] = {
    {"etcdserverpb.KV", "Range", GrpcType::kUnary},
    {"etcdserverpb.KV", "RangeStream", GrpcType::kServerStream},
    {"etcdserverpb.KV", "Put", GrpcType::kUnary},
    {"etcdserverpb.KV", "DeleteRange", GrpcType::kUnary},
    {"etcdserverpb.KV", "Txn", GrpcType::kUnary},
    {"etcdserverpb.KV", "Compact", GrpcType::kUnary},
    {"etcdserverpb.Watch", "Watch", GrpcType::kBidiStream},
    {"etcdserverpb.Lease", "LeaseGrant", GrpcType::kUnary},
    {"etcdserverpb.Lease", "LeaseRevoke", GrpcType::kUnary},
    {"etcdserverpb.Lease", "LeaseKeepAlive", GrpcType::kBidiStream},
    {"etcdserverpb.Lease", "LeaseTimeToLive", GrpcType::kUnary},
    {"etcdserverpb.Lease", "LeaseLeases", GrpcType::kUnary},
    {"etcdserverpb.Cluster", "MemberAdd", GrpcType::kUnary},
    {"etcdserverpb.Cluster", "MemberRemove", GrpcType::kUnary},
    {"etcdserverpb.Cluster", "MemberUpdate", GrpcType::kUnary},
    {"etcdserverpb.Cluster", "MemberList", GrpcType::kUnary},
    {"etcdserverpb.Cluster", "MemberPromote", GrpcType::kUnary},
    {"etcdserverpb.Maintenance", "Alarm", GrpcType::kUnary},
    {"etcdserverpb.Maintenance", "Status", GrpcType::kUnary},
    {"etcdserverpb.Maintenance", "Defragment", GrpcType::kUnary},
    {"etcdserverpb.Maintenance", "Hash", GrpcType::kUnary},
    {"etcdserverpb.Maintenance", "HashKV", GrpcType::kUnary},
    {"etcdserverpb.Maintenance", "Snapshot", GrpcType::kServerStream},
    {"etcdserverpb.Maintenance", "MoveLeader", GrpcType::kUnary},
    {"etcdserverpb.Maintenance", "Downgrade", GrpcType::kUnary},
    {"etcdserverpb.Auth", "AuthEnable", GrpcType::kUnary},
    {"etcdserverpb.Auth", "AuthDisable", GrpcType::kUnary},
    {"etcdserverpb.Auth", "AuthStatus", GrpcType::kUnary},
    {"etcdserverpb.Auth", "Authenticate", GrpcType::kUnary},
    {"etcdserverpb.Auth", "UserAdd", GrpcType::kUnary},
    {"etcdserverpb.Auth", "UserGet", GrpcType::kUnary},
    {"etcdserverpb.Auth", "UserList", GrpcType::kUnary},
    {"etcdserverpb.Auth", "UserDelete", GrpcType::kUnary},
    {"etcdserverpb.Auth", "UserChangePassword", GrpcType::kUnary},
    {"etcdserverpb.Auth", "UserGrantRole", GrpcType::kUnary},
    {"etcdserverpb.Auth", "UserRevokeRole", GrpcType::kUnary},
    {"etcdserverpb.Auth", "RoleAdd", GrpcType::kUnary},
    {"etcdserverpb.Auth", "RoleGet", GrpcType::kUnary},
    {"etcdserverpb.Auth", "RoleList", GrpcType::kUnary},
    {"etcdserverpb.Auth", "RoleDelete", GrpcType::kUnary},
    {"etcdserverpb.Auth", "RoleGrantPermission", GrpcType::kUnary},
    {"etcdserverpb.Auth", "RoleRevokePermission", GrpcType::kUnary},
    {"grpc.health.v1.Health", "Check", GrpcType::kUnary},
    {"grpc.health.v1.Health", "Watch", GrpcType::kServerStream},  // etcd 3.4's grpc-go registers it too
    {"v3lockpb.Lock", "Lock", GrpcType::kUnary, true},
    {"v3lockpb.Lock", "Unlock", GrpcType::kUnary, true},
    {"v3electionpb.Election", "Campaign", GrpcType::kUnary, true},
    {"v3electionpb.Election", "Proclaim", GrpcType::kUnary, true},
    {"v3electionpb.Election", "Leader", GrpcType::kUnary, true},
    {"v3electionpb.Election", "Observe", GrpcType::kServerStream, true},
    {"v3electionpb.Election", "Resign", GrpcType::kUnary, true},
};
inline constexpr int kRpcMethodCount = static_cast<int>(sizeof(kRpcMethods) / sizeof(kRpcMethods[0]));

// etcd_server_client_requests_total{type, client_api_version}: requests by the
// client-api-version metadata value ("unknown" when absent). At most kSlots
// distinct values are kept; later ones are counted under "other".
class ClientRequestCounter {
 public:
  static constexpr int kSlots = 16;
  static constexpr size_t kMaxVersion = 31;

  void Inc(bool stream, std::string_view version) {
    if (version.size() > kMaxVersion) version = version.substr(0, kMaxVersion);
    Slot* s = Find(version);
    if (s == nullptr) s = Claim(version);
    (stream ? s->stream : s->unary).Inc();
  }
  // fn(version, unary, stream) for every value seen, in first-seen order.
  template <class Fn>
  void ForEach(Fn&& fn) const {
    for (const Slot& s : slots_) {
      if (!s.used.load(std::memory_order_acquire)) break;
      fn(std::string_view(s.version, s.len), s.unary.Value(), s.stream.Value());
    }
  }

 private:
  struct Slot {
    std::atomic<bool> used{false};
    char version[kMaxVersion + 1] = {};
    size_t len = 0;
    Counter unary, stream;
  };
  Slot* Find(std::string_view v) {
    for (Slot& s : slots_) {
      if (!s.used.load(std::memory_order_acquire)) return nullptr;
      if (std::string_view(s.version, s.len) == v) return &s;
    }
    return nullptr;
  }
  Slot* Claim(std::string_view v) {
    std::lock_guard<std::mutex> lk(mu_);
    if (Slot* s = Find(v)) return s;
    int n = 0;
    while (n < kSlots && slots_[n].used.load(std::memory_order_relaxed)) n++;
    if (n >= kSlots - 1) {  // the last slot is only ever "other"
      if (Slot* o = Find("other")) return o;
      v = "other";
    }
    Slot& s = slots_[n];
    std::memcpy(s.version, v.data(), v.size());
    s.len = v.size();
    s.used.store(true, std::memory_order_release);
    return &s;
  }

  std::array<Slot, kSlots> slots_;
  std::mutex mu_;  // serializes Claim
};

class RpcProbe {
 public:
  struct Method {
    Counter started;       // grpc_server_started_total
    Counter msg_received;  // grpc_server_msg_received_total
    Counter msg_sent;      // grpc_server_msg_sent_total
    std::array<Counter, kGrpcCodes> handled;  // grpc_server_handled_total by grpc_code
    Histogram handling_seconds{BucketsDefault()};  // grpc_server_handling_seconds
  };

  RpcProbe() : methods_(new Method[kRpcMethodCount]) {}
  RpcProbe(const RpcProbe&) = delete;
  RpcProbe& operator=(const RpcProbe&) = delete;

  // Index into kRpcMethods of a full gRPC method name ("/etcdserverpb.KV/Range"),
  // or -1 if it is not one of them.
  static int Find(std::string_view full_method) {
    // Built once; the keys view strings that live as long as the process.
    static const std::vector<std::string> names = [] {
      std::vector<std::string> v;
      for (int i = 0; i < kRpcMethodCount; i++)
        v.push_back(std::string("/") + kRpcMethods[i].service + "/" + kRpcMethods[i].method);
      return v;
    }();
    static const std::unordered_map<std::string_view, int> index = [] {
      std::unordered_map<std::string_view, int> m;
      for (int i = 0; i < kRpcMethodCount; i++) m.emplace(names[i], i);
      return m;
    }();
    auto it = index.find(full_method);
    return it == index.end() ? -1 : it->second;
  }

  Method& method(int i) { return methods_[i]; }
  const Method& method(int i) const { return methods_[i]; }

  Counter sent_bytes;      // etcd_network_client_grpc_sent_bytes_total: protobuf bytes of responses
  Counter received_bytes;  // etcd_network_client_grpc_received_bytes_total: protobuf bytes of requests
  ClientRequestCounter client_requests;  // etcd_server_client_requests_total

 private:
  std::unique_ptr<Method[]> methods_;
};

}  // namespace engram::kv
