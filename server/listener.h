// ClientListener: the plain client URLs (http://, unix://) serve gRPC and
// HTTP/1.1 on the same port, as etcd does (cmux).
//
// It owns the listening sockets of those URLs (gRPC itself listens on none of
// them; https/unixs URLs stay on gRPC's own TLS port). One thread accepts and,
// for each new connection, peeks (MSG_PEEK, nothing is consumed) at the first
// bytes the client sends:
//   - the HTTP/2 client preface "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" -> the
//     connection is handed to gRPC (grpc::AddInsecureChannelFromFd);
//   - anything else -> the HTTP server (/metrics, /health, /version, ...).
// Both protocols are client-speaks-first, so a connection that sends nothing
// within kPeekTimeoutMs (or closes) is closed; it never blocks the acceptor:
// pending connections are polled together with the listening sockets, at most
// kMaxPending of them (more are closed at once).
//
// Thread-safety: Bind() and Start() from one thread; Stop() from any, once
// (idempotent). The handlers run on the listener thread and take ownership
// of the fd (non-blocking, close-on-exec; TCP_NODELAY set for TCP).
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "server/config.h"
#include "src/common/status.h"

namespace engram::server {

// Binds and listens on a TCP URL (a name with both families, e.g.
// localhost, binds IPv4 as Go's net.Listen does). what names the URL's role
// in errors ("client", "peer"). *port_out gets the bound port.
Status BindTcp(const Url& u, const char* what, int* fd_out, int* port_out);

class ClientListener {
 public:
  static constexpr int kPeekTimeoutMs = 5000;
  static constexpr size_t kMaxPending = 256;
  static constexpr char kHttp2Preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

  struct Handlers {
    std::function<void(int fd)> grpc;  // saw the HTTP/2 preface
    std::function<void(int fd)> http;  // anything else
  };

  // Binds and listens on every URL with scheme http or unix (others are
  // skipped). A unix URL's path is its host part ("unix://localhost:2379" ->
  // file "localhost:2379"); an existing socket file there is replaced, as
  // etcd does, and removed again by Stop().
  static Result<std::unique_ptr<ClientListener>> Bind(const std::vector<Url>& urls);
  ~ClientListener();  // Stop()s

  // Starts the accept thread.
  void Start(Handlers handlers);
  // Closes the listening sockets and pending (not yet classified)
  // connections and joins the thread. Connections already handed over
  // belong to their handler.
  void Stop();

  // The bound TCP port of each bound URL (0 for unix), in URL order.
  const std::vector<int>& ports() const { return ports_; }
  bool empty() const { return fds_.empty(); }

  // What the first bytes say. kMore: a prefix of the preface, wait for more.
  enum class Kind { kGrpc, kHttp, kMore };
  static Kind Classify(const char* data, size_t n);

 private:
  ClientListener() = default;
  void Loop();

  std::vector<int> fds_;          // listening sockets
  std::vector<bool> unix_;        // per fd: AF_UNIX
  std::vector<std::string> unix_paths_;
  std::vector<int> ports_;
  int wake_[2] = {-1, -1};        // pipe: Stop() wakes the loop
  Handlers handlers_;
  std::thread thread_;
  std::atomic<bool> stopped_{false};
};

}  // namespace engram::server
