// The only Beast translation unit (see http_server.h). Boost 1.74 + GCC 12 +
// C++20 need <utility> before any Asio header (BUILD-NOTES.md).
#include <utility>

#include "exporter/http_server.h"

#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
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

struct HttpServer::Impl {
  // Declared first, destroyed last: sessions still owned by pending handlers
  // die with ioc and touch `live`.
  std::atomic<int> live{0};
  std::atomic<bool> stopped{false};
  std::mutex stop_mu;
  Handler handler;
  net::io_context ioc{kThreads};
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work;
  std::vector<std::unique_ptr<net::basic_socket_acceptor<Proto>>> acceptors;
  std::vector<std::thread> threads;

  void Accept(net::basic_socket_acceptor<Proto>* acc, Listener listener);
  void Serve(Proto::socket sock, Listener listener);
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

  void Read() {
    parser_.emplace();
    parser_->header_limit(kHeaderLimit);
    parser_->body_limit(kBodyLimit);
    stream_.expires_after(kIoTimeout);
    http::async_read(stream_, buf_, *parser_, beast::bind_front_handler(&Session::OnRead, shared_from_this()));
  }

 private:
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
  beast::flat_buffer buf_{kHeaderLimit + kBodyLimit};  // max size: one request
  std::optional<http::request_parser<http::string_body>> parser_;
  http::response<http::string_body> res_;
};

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
