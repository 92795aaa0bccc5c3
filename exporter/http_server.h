// A small HTTP/1.1 server for the observability endpoints (exporter/endpoints.h).
// The only Beast code in Engram: everything is in http_server.cc, so this
// header is cheap to include and edits elsewhere never recompile Beast.
//
// It serves
//   - its own listening sockets (--listen-metrics-urls, plain http), accepted
//     asynchronously, and
//   - connections handed over by server/listener.cc (Adopt): plain-http client
//     URL connections whose first bytes were not the HTTP/2 preface.
// Keep-alive is supported. Limits: request headers 8 KiB, bodies 16 KiB,
// 30 s to read a request or write a response (a slow or silent client is
// dropped), at most 512 connections at once (more are closed at once).
//
// Threads: Start() runs one io_context on kThreads threads; each connection
// runs on its own strand. The handler is called on those threads, one request
// at a time per connection, and must be thread-safe.
//
// Thread-safety: Adopt() and Stop() may be called from any thread; Listen()
// before Start().
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "exporter/endpoints.h"
#include "src/common/status.h"

namespace engram::exporter {

class HttpServer {
 public:
  using Handler = std::function<HttpResponse(const HttpRequest&)>;

  explicit HttpServer(Handler handler);
  ~HttpServer();  // Stop()s
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and listens on host:port (host may be a name, an IPv4 or IPv6
  // literal, or empty for all interfaces; port 0 picks one). Requests on it
  // are tagged with `listener`. Returns the bound port.
  Result<int> Listen(const std::string& host, int port, Listener listener);

  // Starts serving (the io threads).
  void Start();

  // Serves an accepted, connected stream socket (TCP or unix); takes
  // ownership of fd. After Stop(), closes it.
  void Adopt(int fd, Listener listener);

  // Closes the listening sockets and every connection, joins the threads.
  // Idempotent.
  void Stop();

  struct Impl;  // defined in http_server.cc (public only for its sessions)

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace engram::exporter
