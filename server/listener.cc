#include "server/listener.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <thread>
#include <cstring>

#include "src/common/log.h"

namespace engram::server {
namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kPrefaceLen = sizeof(ClientListener::kHttp2Preface) - 1;  // 24
constexpr int kPartialRecheckMs = 10;

}  // namespace

Status BindTcp(const Url& u, const char* what, int* fd_out, int* port_out) {
  struct addrinfo hints = {}, *res = nullptr;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  std::string port = std::to_string(u.port);
  if (getaddrinfo(u.host.empty() ? nullptr : u.host.c_str(), port.c_str(), &hints, &res) != 0 || !res)
    return Status::InvalidArgument(std::string("cannot resolve ") + what + " URL " + u.raw);
  // A name with both families (localhost) binds IPv4, as Go's net.Listen does.
  const struct addrinfo* ai = res;
  for (const struct addrinfo* p = res; p; p = p->ai_next) {
    if (p->ai_family == AF_INET) {
      ai = p;
      break;
    }
  }
  int fd = ::socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  int one = 1;
  if (fd >= 0) ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (fd < 0 || ::bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || ::listen(fd, 1024) != 0) {
    int err = errno;
    freeaddrinfo(res);
    if (fd >= 0) ::close(fd);
    return Status::Unavailable("listen tcp " + u.HostPort() + ": bind: " + std::strerror(err));
  }
  freeaddrinfo(res);
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  *port_out = ss.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port)
                                       : ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  *fd_out = fd;
  return Status::OK();
}

namespace {

Status BindUnix(const std::string& path, int* fd_out) {
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof sa.sun_path)
    return Status::InvalidArgument("unix socket path \"" + path + "\" is empty or too long");
  std::memcpy(sa.sun_path, path.data(), path.size());
  // etcd removes what is at the path first; remove only a stale socket.
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) ::unlink(path.c_str());
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || ::listen(fd, 1024) != 0) {
    int err = errno;
    if (fd >= 0) ::close(fd);
    return Status::Unavailable("listen unix " + path + ": bind: " + std::strerror(err));
  }
  *fd_out = fd;
  return Status::OK();
}

}  // namespace

ClientListener::Kind ClientListener::Classify(const char* data, size_t n) {
  size_t m = std::min(n, kPrefaceLen);
  if (std::memcmp(data, kHttp2Preface, m) != 0) return Kind::kHttp;
  return m == kPrefaceLen ? Kind::kGrpc : Kind::kMore;
}

Result<std::unique_ptr<ClientListener>> ClientListener::Bind(const std::vector<Url>& urls) {
  std::unique_ptr<ClientListener> l(new ClientListener);
  for (const auto& u : urls) {
    if (u.scheme != "http" && u.scheme != "unix") continue;
    int fd = -1, port = 0;
    Status st = u.scheme == "unix" ? BindUnix(u.host, &fd) : BindTcp(u, "client", &fd, &port);
    if (!st.ok()) return st;  // ~ClientListener closes what is bound
    l->fds_.push_back(fd);
    l->unix_.push_back(u.scheme == "unix");
    if (u.scheme == "unix") l->unix_paths_.push_back(u.host);
    l->ports_.push_back(port);
  }
  if (::pipe2(l->wake_, O_CLOEXEC | O_NONBLOCK) != 0) return Status::Errno("pipe2", "", errno);
  return l;
}

ClientListener::~ClientListener() {
  Stop();
  for (int fd : wake_)
    if (fd >= 0) ::close(fd);
}

void ClientListener::Start(Handlers handlers) {
  handlers_ = std::move(handlers);
  thread_ = std::thread([this] { Loop(); });
}

void ClientListener::Stop() {
  if (stopped_.exchange(true)) return;
  if (wake_[1] >= 0) {
    char c = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_[1], &c, 1);
  }
  if (thread_.joinable()) thread_.join();
  for (int fd : fds_) ::close(fd);
  fds_.clear();
  for (const auto& p : unix_paths_) ::unlink(p.c_str());
}

void ClientListener::Loop() {
  struct Pending {
    int fd;
    bool unix_socket;
    Clock::time_point deadline;
    bool partial;  // saw a prefix of the preface: recheck on a timer, not on POLLIN
  };
  std::vector<Pending> pending;
  std::vector<pollfd> pfds;
  Clock::time_point last_emfile_log{};
  while (!stopped_.load()) {
    pfds.clear();
    pfds.push_back({wake_[0], POLLIN, 0});
    for (int fd : fds_) pfds.push_back({fd, POLLIN, 0});
    auto now = Clock::now();
    int timeout = -1;
    for (const auto& p : pending) {
      if (!p.partial) pfds.push_back({p.fd, POLLIN, 0});
      int ms = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(p.deadline - now).count()) + 1;
      if (p.partial) ms = std::min(ms, kPartialRecheckMs);
      timeout = timeout < 0 ? std::max(ms, 0) : std::min(timeout, std::max(ms, 0));
    }
    int n = ::poll(pfds.data(), pfds.size(), timeout);
    if (n < 0 && errno != EINTR) {
      LOG_ERROR("client listener: poll failed", {{"error", std::strerror(errno)}});
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      continue;
    }
    if (stopped_.load() || (n > 0 && (pfds[0].revents & POLLIN))) break;

    // New connections.
    for (size_t i = 0; n > 0 && i < fds_.size(); i++) {
      if (!(pfds[1 + i].revents & POLLIN)) continue;
      while (true) {
        int c = ::accept4(fds_[i], nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c < 0) {
          if (errno == EINTR || errno == ECONNABORTED) continue;
          if ((errno == EMFILE || errno == ENFILE) && Clock::now() - last_emfile_log > std::chrono::seconds(10)) {
            last_emfile_log = Clock::now();
            LOG_WARN("client listener: accept failed", {{"error", std::strerror(errno)}});
          }
          if (errno == EMFILE || errno == ENFILE) {
            // The socket stays readable: back off instead of spinning.
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
          }
          break;  // EAGAIN, or out of descriptors (retried on the next poll)
        }
        if (pending.size() >= kMaxPending) {
          ::close(c);
          continue;
        }
        pending.push_back({c, unix_[i], Clock::now() + std::chrono::milliseconds(kPeekTimeoutMs), false});
      }
    }

    // Classify what has spoken (cheap: a non-blocking MSG_PEEK each).
    now = Clock::now();
    for (size_t i = 0; i < pending.size();) {
      Pending& p = pending[i];
      char buf[kPrefaceLen];
      ssize_t r = ::recv(p.fd, buf, sizeof buf, MSG_PEEK | MSG_DONTWAIT);
      bool done = false;
      if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        ::close(p.fd);  // closed (or reset) before saying anything
        done = true;
      } else if (r > 0) {
        Kind k = Classify(buf, static_cast<size_t>(r));
        if (k == Kind::kMore) {
          p.partial = true;
        } else {
          if (!p.unix_socket) {
            int one = 1;
            ::setsockopt(p.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          }
          (k == Kind::kGrpc ? handlers_.grpc : handlers_.http)(p.fd);
          done = true;
        }
      }
      if (!done && now >= p.deadline) {
        ::close(p.fd);  // silent client
        done = true;
      }
      if (done) {
        pending[i] = pending.back();
        pending.pop_back();
      } else {
        i++;
      }
    }
  }
  for (const auto& p : pending) ::close(p.fd);
}

}  // namespace engram::server
