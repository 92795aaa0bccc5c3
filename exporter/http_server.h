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

// The answer to a request of an asynchronous route, given later from any
// thread: either one whole response (Reply), or a stream (StartStream, then
// Write chunks, then End) sent with Transfer-Encoding: chunked. Either way the
// connection closes after it (no keep-alive on asynchronous routes).
class HttpResponder {
 public:
  virtual ~HttpResponder() = default;
  virtual void Reply(HttpResponse r) = 0;
  virtual void StartStream(int status, std::vector<std::pair<std::string, std::string>> headers) = 0;
  virtual void Write(std::string chunk) = 0;
  // Ends the stream, with HTTP trailers if any (announce them in a Trailer
  // header at StartStream).
  virtual void End(std::vector<std::pair<std::string, std::string>> trailers = {}) = 0;
  // cb runs once, on an io thread, if the client closes the connection (or
  // the server stops) before the response ended. Set it before answering.
  virtual void OnClientGone(std::function<void()> cb) = 0;
};

class HttpServer {
 public:
  using Handler = std::function<HttpResponse(const HttpRequest&)>;
  using AsyncHandler = std::function<void(HttpRequest, std::shared_ptr<HttpResponder>)>;

  explicit HttpServer(Handler handler);
  ~HttpServer();  // Stop()s
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and listens on host:port (host may be a name, an IPv4 or IPv6
  // literal, or empty for all interfaces; port 0 picks one). Requests on it
  // are tagged with `listener`. Returns the bound port.
  Result<int> Listen(const std::string& host, int port, Listener listener);

  // Requests on `listener` whose path is prefix or starts with prefix + "/"
  // go to handler instead (bodies up to body_limit bytes; no I/O timeout
  // once the request is read: streams last as long as the client stays).
  // Before Start().
  void Route(std::string prefix, Listener listener, uint64_t body_limit, AsyncHandler handler);

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
