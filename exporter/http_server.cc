// The only Beast translation unit (see http_server.h). Boost 1.74 + GCC 12 +
// C++20 need <utility> before any Asio header (BUILD-NOTES.md).
#include <utility>

#include "exporter/http_server.h"

#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "src/common/log.h"

namespace engram::exporter {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using Proto = net::generic::stream_protocol;
using Stream = beast::basic_stream<Proto>;

constexpr int kThreads = 2;
constexpr int kMaxConnections = 512;
constexpr auto kIoTimeout = std::chrono::seconds(30);
constexpr uint32_t kHeaderLimit = 8 * 1024;
constexpr uint64_t kBodyLimit = 16 * 1024;

}  // namespace

struct AsyncRoute {
  std::string prefix;
  Listener listener;
  uint64_t body_limit;
  HttpServer::AsyncHandler handler;
};

struct HttpServer::Impl {
  // Declared first, destroyed last: sessions still owned by pending handlers
  // die with ioc and touch `live`.
  std::atomic<int> live{0};
  std::atomic<bool> stopped{false};
  std::mutex stop_mu;
  Handler handler;
  std::vector<AsyncRoute> routes;  // set before Start, read-only after
  net::io_context ioc{kThreads};
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work;
  std::vector<std::unique_ptr<net::basic_socket_acceptor<Proto>>> acceptors;
  std::vector<std::thread> threads;

  void Accept(net::basic_socket_acceptor<Proto>* acc, Listener listener);
  void Serve(Proto::socket sock, Listener listener);
  const AsyncRoute* FindRoute(std::string_view target, Listener listener) const {
    std::string_view path = target.substr(0, target.find('?'));
    for (const auto& r : routes) {
      if (r.listener != listener || path.substr(0, r.prefix.size()) != r.prefix) continue;
      if (path.size() == r.prefix.size() || path[r.prefix.size()] == '/') return &r;
    }
    return nullptr;
  }
};

namespace {

// One connection: read a request, answer, repeat while keep-alive. Runs on
// its strand; owned by the pending async operation (shared_from_this).
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(Proto::socket sock, HttpServer::Impl* srv, Listener listener)
      : stream_(std::move(sock)), srv_(srv), listener_(listener) {
    srv_->live.fetch_add(1);
  }
  ~Session() { srv_->live.fetch_sub(1); }
  auto executor() { return stream_.get_executor(); }

  void Read() {
    parser_.emplace();
    parser_->header_limit(kHeaderLimit);
    parser_->body_limit(kBodyLimit);
    stream_.expires_after(kIoTimeout);
    http::async_read_header(stream_, buf_, *parser_,
                            beast::bind_front_handler(&Session::OnHeader, shared_from_this()));
  }

  // ---- asynchronous routes (HttpResponder); all on the strand ----
  // Each request dispatched gets a generation: calls from the responder of
  // an earlier request on the same (keep-alive) connection are ignored.
  void AsyncReply(uint64_t g, HttpResponse r) {
    if (g != gen_ || answered_ || gone_) return;
    answered_ = true;
    std::string out = StatusLine(r.status);
    for (auto& [k, v] : r.headers) out += k + ": " + v + "\r\n";
    out += "Content-Length: " + std::to_string(r.body.size()) + "\r\n";
    if (!keep_alive_) out += "Connection: close\r\n";
    out += "\r\n";
    out += r.body;
    Queue(std::move(out), /*last=*/true);
  }
  void AsyncStart(uint64_t g, int status, std::vector<std::pair<std::string, std::string>> headers) {
    if (g != gen_ || answered_ || gone_) return;
    answered_ = true;
    streaming_ = true;
    std::string out = StatusLine(status);
    for (auto& [k, v] : headers) out += k + ": " + v + "\r\n";
    out += "Transfer-Encoding: chunked\r\n";
    if (!keep_alive_) out += "Connection: close\r\n";
    out += "\r\n";
    Queue(std::move(out), false);
  }
  void AsyncWrite(uint64_t g, std::string chunk) {
    if (g != gen_ || !streaming_ || ended_ || gone_ || chunk.empty()) return;
    char len[24];
    std::snprintf(len, sizeof len, "%zx\r\n", chunk.size());
    Queue(std::string(len) + chunk + "\r\n", false);
  }
  void AsyncEnd(uint64_t g, const std::vector<std::pair<std::string, std::string>>& trailers = {}) {
    if (g != gen_ || !streaming_ || ended_ || gone_) return;
    ended_ = true;
    std::string last = "0\r\n";
    for (const auto& [k, v] : trailers) last += k + ": " + v + "\r\n";
    Queue(last + "\r\n", true);
  }
  void AsyncFinal(uint64_t g) {
    if (g != gen_) return;
    if (!answered_) {  // dropped unanswered: close the connection
      answered_ = true;
      keep_alive_ = false;
      closing_ = true;
      if (!writing_) Close();
      return;
    }
    AsyncEnd(g);
  }
  void SetOnGone(uint64_t g, std::function<void()> cb) {
    if (g != gen_) return;
    if (gone_) {
      if (cb) cb();
      return;
    }
    on_gone_ = std::move(cb);
  }

 private:
  static std::string StatusLine(int status) {
    return "HTTP/1.1 " + std::to_string(status) + " " +
           std::string(http::obsolete_reason(static_cast<http::status>(status))) + "\r\n";
  }

  void Queue(std::string bytes, bool last) {
    out_.push_back(std::move(bytes));
    if (last) closing_ = true;
    if (!writing_) WriteNext();
  }
  void WriteNext() {
    if (out_.empty()) {
      writing_ = false;
      if (closing_) Finished();
      return;
    }
    writing_ = true;
    net::async_write(stream_, net::buffer(out_.front()),
                     [self = shared_from_this()](beast::error_code ec, std::size_t) {
                       self->writing_ = false;
                       self->out_.pop_front();  // the buffer just written (kept until now, even if gone)
                       if (self->gone_) {
                         self->out_.clear();
                         return;
                       }
                       if (ec) return self->Gone();
                       self->WriteNext();
                     });
  }
  // The answer is written: close, or (keep-alive) read the next request once
  // the close watch has stopped.
  void Finished() {
    if (!keep_alive_) return Close();
    if (watching_) {
      resume_ = true;
      beast::error_code ec;
      stream_.socket().cancel(ec);  // the watch's read ends with operation_aborted, then Resume
      return;
    }
    Resume();
  }
  void Resume() {
    ++gen_;  // the old responder no longer reaches this connection
    route_ = nullptr;
    answered_ = streaming_ = ended_ = closing_ = resume_ = false;
    on_gone_ = nullptr;
    Read();
  }
  // The client went away (a read or write failed) before the answer ended.
  void Gone() {
    if (gone_) return;
    gone_ = true;
    if (!writing_) out_.clear();  // a write in flight still owns out_.front()
    if (auto cb = std::move(on_gone_)) cb();
    Close();
  }
  // While an asynchronous answer is pending: notice the client closing.
  // Bytes that arrive meanwhile (the next request) are kept for the parser.
  void WatchForClose() {
    watching_ = true;
    stream_.async_read_some(watch_buf_.prepare(4096), [self = shared_from_this()](beast::error_code ec, std::size_t n) {
      self->watching_ = false;
      if (n > 0) {  // the next request's first bytes: keep them for the parser
        self->watch_buf_.commit(n);
        self->buf_.commit(net::buffer_copy(self->buf_.prepare(n), self->watch_buf_.data()));
        self->watch_buf_.consume(n);
      }
      if (self->resume_) return self->Resume();  // the answer is done: keep-alive
      if (ec) {
        // The client closed: before the whole answer was queued it is gone;
        // after, it just read the answer and left (writes still in flight
        // finish or fail on their own).
        if (!self->closing_) self->Gone();
        return;
      }
      self->WatchForClose();
    });
  }

  void OnHeader(beast::error_code ec, std::size_t) {
    if (ec) return OnRead(ec, 0);
    auto t = parser_->get().target();
    route_ = srv_->FindRoute(std::string_view(t.data(), t.size()), listener_);
    if (route_) parser_->body_limit(route_->body_limit);
    if (route_ && !parser_->is_done() && beast::iequals(parser_->get()[http::field::expect], "100-continue")) {
      // curl waits a second for this before sending a body over 1 KiB.
      static const char kContinue[] = "HTTP/1.1 100 Continue\r\n\r\n";
      beast::error_code wec;
      net::write(stream_.socket(), net::buffer(kContinue, sizeof kContinue - 1), wec);
    }
    if (parser_->is_done()) return OnRead({}, 0);
    http::async_read(stream_, buf_, *parser_, beast::bind_front_handler(&Session::OnRead, shared_from_this()));
  }

  void OnRead(beast::error_code ec, std::size_t) {
    if (ec) {  // end of stream, timeout, oversized request, garbage
      if (ec != http::error::end_of_stream && ec != beast::error::timeout)
        LOG_DEBUG("http: dropping connection", {{"error", ec.message()}});
      return Close();
    }
    auto& req = parser_->get();
    HttpRequest r;
    r.method = std::string(req.method_string());
    r.target = std::string(req.target());
    r.accept_encoding = std::string(req[http::field::accept_encoding]);
    r.listener = listener_;
    if (route_ != nullptr) return Dispatch(std::move(r));
    HttpResponse out;
    try {
      out = srv_->handler(r);
    } catch (const std::exception& e) {
      LOG_ERROR("http: handler failed", {{"path", r.target}, {"error", e.what()}});
      out = HttpResponse{500, {{"Content-Type", "text/plain; charset=utf-8"}}, "Internal Server Error\n"};
    }
    res_ = {};
    res_.version(req.version());
    res_.result(static_cast<unsigned>(out.status));
    for (auto& [k, v] : out.headers) res_.insert(k, v);
    size_t n = out.body.size();
    if (req.method() != http::verb::head) res_.body() = std::move(out.body);
    res_.content_length(n);  // HEAD: the length the GET would have, no body
    res_.keep_alive(req.keep_alive());
    stream_.expires_after(kIoTimeout);
    http::async_write(stream_, res_,
                      beast::bind_front_handler(&Session::OnWrite, shared_from_this(), !res_.keep_alive()));
  }

  void Dispatch(HttpRequest r);

  void OnWrite(bool close, beast::error_code ec, std::size_t) {
    if (ec || close) return Close();
    Read();
  }

  void Close() {
    beast::error_code ec;
    stream_.socket().shutdown(Proto::socket::shutdown_send, ec);
    // The socket closes when the last handler lets go of this session.
  }

  Stream stream_;
  HttpServer::Impl* srv_;
  Listener listener_;
  beast::flat_buffer buf_;  // the parser enforces the header and body limits
  std::optional<http::request_parser<http::string_body>> parser_;
  http::response<http::string_body> res_;
  // Asynchronous routes.
  const AsyncRoute* route_ = nullptr;
  beast::flat_buffer watch_buf_;
  std::deque<std::string> out_;  // bytes to write, in order
  bool writing_ = false, closing_ = false, answered_ = false, streaming_ = false, ended_ = false, gone_ = false;
  bool keep_alive_ = false, watching_ = false, resume_ = false;
  uint64_t gen_ = 0;
  std::function<void()> on_gone_;
};

// Hands the session's strand every call (the gateway answers from gRPC
// threads).
class Responder final : public HttpResponder {
 public:
  Responder(std::shared_ptr<Session> s, uint64_t gen) : s_(std::move(s)), g_(gen) {}
  ~Responder() override {
    // Dropped without an end: end the stream, or close a connection that
    // got no answer at all.
    net::post(s_->executor(), [s = s_, g = g_] { s->AsyncFinal(g); });
  }
  void Reply(HttpResponse r) override {
    net::post(s_->executor(), [s = s_, g = g_, r = std::move(r)]() mutable { s->AsyncReply(g, std::move(r)); });
  }
  void StartStream(int status, std::vector<std::pair<std::string, std::string>> headers) override {
    net::post(s_->executor(),
              [s = s_, g = g_, status, h = std::move(headers)]() mutable { s->AsyncStart(g, status, std::move(h)); });
  }
  void Write(std::string chunk) override {
    net::post(s_->executor(), [s = s_, g = g_, c = std::move(chunk)]() mutable { s->AsyncWrite(g, std::move(c)); });
  }
  void End(std::vector<std::pair<std::string, std::string>> trailers) override {
    net::post(s_->executor(), [s = s_, g = g_, t = std::move(trailers)] { s->AsyncEnd(g, t); });
  }
  void OnClientGone(std::function<void()> cb) override {
    net::post(s_->executor(), [s = s_, g = g_, cb = std::move(cb)]() mutable { s->SetOnGone(g, std::move(cb)); });
  }

 private:
  std::shared_ptr<Session> s_;
  const uint64_t g_;
};

void Session::Dispatch(HttpRequest r) {
  auto& req = parser_->get();
  r.body = std::move(req.body());
  for (const auto& f : req) r.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
  keep_alive_ = req.keep_alive();
  stream_.expires_never();  // streams last as long as the client stays
  WatchForClose();
  auto responder = std::make_shared<Responder>(shared_from_this(), gen_);
  try {
    route_->handler(std::move(r), responder);
  } catch (const std::exception& e) {
    LOG_ERROR("http: handler failed", {{"path", std::string(req.target())}, {"error", e.what()}});
    responder->Reply(HttpResponse{500, {{"Content-Type", "text/plain; charset=utf-8"}}, "Internal Server Error\n"});
  }
}

}  // namespace

void HttpServer::Impl::Serve(Proto::socket sock, Listener listener) {
  if (stopped.load() || live.load() >= kMaxConnections) {
    beast::error_code ec;
    sock.close(ec);
    return;
  }
  std::make_shared<Session>(std::move(sock), this, listener)->Read();
}

void HttpServer::Impl::Accept(net::basic_socket_acceptor<Proto>* acc, Listener listener) {
  acc->async_accept(net::make_strand(ioc), [this, acc, listener](beast::error_code ec, Proto::socket sock) {
    if (ec == net::error::operation_aborted || stopped.load()) return;
    if (!ec) {
      Serve(std::move(sock), listener);
    } else if (ec == net::error::no_descriptors || ec == net::error::no_buffer_space) {
      LOG_WARN("http: accept failed", {{"error", ec.message()}});
      std::this_thread::sleep_for(std::chrono::milliseconds(50));  // let connections drain
    }
    Accept(acc, listener);
  });
}

HttpServer::HttpServer(Handler handler) : impl_(new Impl) { impl_->handler = std::move(handler); }

HttpServer::~HttpServer() { Stop(); }

void HttpServer::Route(std::string prefix, Listener listener, uint64_t body_limit, AsyncHandler handler) {
  impl_->routes.push_back({std::move(prefix), listener, body_limit, std::move(handler)});
}

Result<int> HttpServer::Listen(const std::string& host, int port, Listener listener) {
  beast::error_code ec;
  net::ip::tcp::resolver resolver(impl_->ioc);
  auto results = resolver.resolve(host.empty() ? "0.0.0.0" : host, std::to_string(port),
                                  net::ip::tcp::resolver::passive | net::ip::tcp::resolver::numeric_service, ec);
  if (ec || results.empty())
    return Status::InvalidArgument("cannot resolve " + host + ": " + (ec ? ec.message() : "no address"));
  // A name with both families (localhost) binds IPv4, as Go's net.Listen does.
  net::ip::tcp::endpoint tep = results.begin()->endpoint();
  for (const auto& r : results) {
    if (r.endpoint().address().is_v4()) {
      tep = r.endpoint();
      break;
    }
  }
  std::string where = (tep.address().is_v6() ? "[" + tep.address().to_string() + "]" : tep.address().to_string()) +
                      ":" + std::to_string(port);
  auto acc = std::make_unique<net::basic_socket_acceptor<Proto>>(impl_->ioc);
  Proto::endpoint ep(tep);
  acc->open(ep.protocol(), ec);
  if (!ec) acc->set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acc->bind(ep, ec);
  if (!ec) acc->listen(net::socket_base::max_listen_connections, ec);
  if (ec) return Status::Unavailable("listen tcp " + where + ": bind: " + ec.message());
  Proto::endpoint local = acc->local_endpoint(ec);
  const sockaddr* sa = local.data();
  int bound = port;
  if (!ec && sa->sa_family == AF_INET) bound = ntohs(reinterpret_cast<const sockaddr_in*>(sa)->sin_port);
  if (!ec && sa->sa_family == AF_INET6) bound = ntohs(reinterpret_cast<const sockaddr_in6*>(sa)->sin6_port);
  impl_->Accept(acc.get(), listener);
  impl_->acceptors.push_back(std::move(acc));
  return bound;
}

void HttpServer::Start() {
  std::lock_guard<std::mutex> lk(impl_->stop_mu);
  if (impl_->stopped.load() || !impl_->threads.empty()) return;
  impl_->work.emplace(impl_->ioc.get_executor());
  for (int i = 0; i < kThreads; i++) impl_->threads.emplace_back([this] { impl_->ioc.run(); });
}

void HttpServer::Adopt(int fd, Listener listener) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (impl_->stopped.load() || ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    ::close(fd);
    return;
  }
  Proto proto(ss.ss_family, ss.ss_family == AF_UNIX ? 0 : IPPROTO_TCP);
  Proto::socket sock(net::make_strand(impl_->ioc));
  beast::error_code ec;
  sock.assign(proto, fd, ec);
  if (ec) {
    ::close(fd);
    return;
  }
  // Start on the connection's strand (the caller is the listener's thread).
  auto exec = sock.get_executor();
  net::dispatch(exec, [impl = impl_.get(), s = std::make_shared<Proto::socket>(std::move(sock)), listener]() mutable {
    impl->Serve(std::move(*s), listener);
  });
}

void HttpServer::Stop() {
  std::lock_guard<std::mutex> lk(impl_->stop_mu);
  if (impl_->stopped.exchange(true)) return;
  // Stop the io threads, then close the acceptors (not thread-safe while
  // they run). Handlers still pending (idle keep-alive connections) are
  // destroyed, with their sockets, when the io_context is.
  impl_->work.reset();
  impl_->ioc.stop();
  for (auto& t : impl_->threads) t.join();
  impl_->threads.clear();
  for (auto& a : impl_->acceptors) {
    beast::error_code ec;
    a->close(ec);
  }
}

}  // namespace engram::exporter
