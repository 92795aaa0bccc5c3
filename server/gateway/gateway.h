// The gRPC-JSON gateway: etcd's HTTP/JSON API (/v3/kv/range, /v3/watch, ...)
// on the client URLs, as etcd 3.4 serves it with grpc-gateway v1
// (docs/design/gateway.md has the facts it follows).
//
// Every request becomes a real gRPC call to this member's own services over
// an in-process channel, so the gateway answers exactly what gRPC clients
// get (same checks, errors, interceptors and metrics), as etcd's gateway,
// which is a gRPC client of its own server:
//   - the path (after /v3, /v3beta or /v3alpha) names the method;
//   - the body is the request message in protobuf's JSON mapping (field
//     names as in the .proto, int64 as strings, bytes as base64);
//   - a unary answer is the response message in the same mapping; an error
//     is {"error": msg, "code": grpc code, "message": msg} with grpc-gateway's
//     HTTP status for the code;
//   - streams (watch, lease keepalive, election observe, snapshot) take the
//     body's JSON objects as the requests and answer each message as one
//     {"result": ...} line of a chunked response, until the call ends or the
//     client goes away (which cancels the call).
//
// Thread-safety: Handle may be called from any thread; Shutdown once, after
// the HTTP server stopped handing requests.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include "exporter/http_server.h"

namespace engram::server::gateway {

class Gateway {
 public:
  // channel: an in-process channel to this member's gRPC server.
  // max_calls: calls running at once (--max-concurrent-streams: etcd's
  // gateway shares one HTTP/2 connection, so its calls queue beyond it).
  explicit Gateway(std::shared_ptr<grpc::Channel> channel, uint64_t max_calls = UINT32_MAX);
  ~Gateway();  // Shutdown()s

  // The HttpServer route handler (exporter/http_server.h Route).
  void Handle(exporter::HttpRequest req, std::shared_ptr<exporter::HttpResponder> out);

  // Cancels every call still running and waits (a few seconds at most) for
  // them to end; later requests are answered 503.
  void Shutdown();

  // The API prefixes etcd 3.4 serves the gateway under.
  static const std::vector<std::string>& Prefixes();

  struct Call;  // one HTTP request's gRPC call (gateway.cc)

 private:
  friend struct Call;
  uint64_t Track(Call* c);
  void Untrack(uint64_t id);  // the call ended: the next queued one starts
  void Admit(std::function<void()> start);
  void CancelIfLive(uint64_t id);

  std::shared_ptr<grpc::Channel> channel_;
  grpc::GenericStub stub_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::unordered_map<uint64_t, Call*> live_;  // guarded by mu_
  uint64_t next_id_ = 1;                      // guarded by mu_
  const uint64_t max_calls_;
  uint64_t running_ = 0;                          // guarded by mu_: admitted, not ended
  std::deque<std::function<void()>> queued_;      // guarded by mu_: waiting for a slot
  bool shutdown_ = false; // guarded by mu_
};

}  // namespace engram::server::gateway
