// ClientListener: which handler gets a connection, by its first bytes.
#include "server/listener.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

namespace engram::server {
namespace {

using Kind = ClientListener::Kind;

TEST(ListenerClassifyTest, Preface) {
  const std::string p = ClientListener::kHttp2Preface;
  ASSERT_EQ(p.size(), 24u);
  EXPECT_EQ(ClientListener::Classify(p.data(), p.size()), Kind::kGrpc);
  std::string more = p + "\x00\x00\x12\x04";  // + a SETTINGS frame header
  EXPECT_EQ(ClientListener::Classify(more.data(), more.size()), Kind::kGrpc);
  for (size_t n = 1; n < p.size(); n++) EXPECT_EQ(ClientListener::Classify(p.data(), n), Kind::kMore) << n;
  for (const char* s : {"GET / HTTP/1.1\r\n", "POST /health HTTP/1.1", "PUT /x", "PRI * HTTP/1.1\r\n", "\x16\x03\x01"})
    EXPECT_EQ(ClientListener::Classify(s, std::strlen(s)), Kind::kHttp) << s;
  EXPECT_EQ(ClientListener::Classify("PO", 2), Kind::kHttp);
}

class ListenerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto urls = ParseUrls("listen-client-urls", "http://127.0.0.1:0");
    ASSERT_TRUE(urls.ok());
    auto l = ClientListener::Bind(*urls);
    ASSERT_TRUE(l.ok()) << l.status().ToString();
    listener_ = std::move(*l);
    port_ = listener_->ports().at(0);
    ASSERT_GT(port_, 0);
    listener_->Start({[this](int fd) { Got("grpc", fd); }, [this](int fd) { Got("http", fd); }});
  }
  void TearDown() override { listener_->Stop(); }

  void Got(const std::string& kind, int fd) {
    char buf[64];
    ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);  // the peeked bytes are still there
    std::lock_guard<std::mutex> lk(mu_);
    got_.push_back(kind + ":" + (n > 0 ? std::string(buf, std::min<ssize_t>(n, 3)) : ""));
    ::close(fd);
    cv_.notify_all();
  }
  std::vector<std::string> WaitFor(size_t n) {
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait_for(lk, std::chrono::seconds(5), [&] { return got_.size() >= n; });
    return got_;
  }
  int Connect() {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(static_cast<uint16_t>(port_));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    return fd;
  }
  void Send(int fd, const std::string& s) { ASSERT_EQ(::send(fd, s.data(), s.size(), 0), ssize_t(s.size())); }

  // A round trip through the listener thread instead of a sleep: a fresh
  // connection sends a whole HTTP request; once its handler has run (5 s
  // deadline, a failure bound only), the listener has accepted every
  // connection made before it (the accept queue is FIFO, drained each loop)
  // and peeks each one in that same loop (every loop peeks all pending
  // connections after accepting). Its own entry is taken out of got_ again.
  void RoundTrip() {
    size_t before;
    {
      std::lock_guard<std::mutex> lk(mu_);
      before = got_.size();
    }
    int c = Connect();
    Send(c, "OPTIONS * HTTP/1.0\r\n\r\n");
    std::unique_lock<std::mutex> lk(mu_);
    auto mine = [&] { return std::find(got_.begin() + static_cast<std::ptrdiff_t>(before), got_.end(), "http:OPT"); };
    cv_.wait_for(lk, std::chrono::seconds(5), [&] { return mine() != got_.end(); });
    auto it = mine();
    ::close(c);
    ASSERT_NE(it, got_.end()) << "the listener did not hand over the round-trip connection within 5 s";
    got_.erase(it);
  }
  // Two round trips: the second connection is accepted on a later loop than
  // the first is handed over on, so that whole loop (and its peek of every
  // earlier connection with whatever it had received) is over.
  void Sync() {
    RoundTrip();
    RoundTrip();
  }

  std::unique_ptr<ClientListener> listener_;
  int port_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> got_;
};

TEST_F(ListenerTest, RoutesByFirstBytes) {
  int a = Connect(), b = Connect();
  Send(a, std::string(ClientListener::kHttp2Preface) + "\x00\x00\x00\x04\x00\x00\x00\x00\x00");
  EXPECT_EQ(WaitFor(1), std::vector<std::string>{"grpc:PRI"});
  Send(b, "GET /metrics HTTP/1.1\r\n\r\n");
  EXPECT_EQ(WaitFor(2), (std::vector<std::string>{"grpc:PRI", "http:GET"}));
  ::close(a);
  ::close(b);
}

TEST_F(ListenerTest, SplitPreface) {
  int a = Connect();
  std::string p = ClientListener::kHttp2Preface;
  Send(a, p.substr(0, 5));
  Sync();  // the listener has peeked the 5 bytes: not enough to decide
  {
    std::lock_guard<std::mutex> lk(mu_);
    EXPECT_TRUE(got_.empty());
  }
  Send(a, p.substr(5));
  EXPECT_EQ(WaitFor(1), std::vector<std::string>{"grpc:PRI"});
  // a one-byte HTTP start that shares the preface's first letter
  int b = Connect();
  Send(b, "P");
  Sync();  // "P" alone has been peeked (a preface prefix) before the rest arrives
  Send(b, "OST /x HTTP/1.1\r\n\r\n");
  EXPECT_EQ(WaitFor(2), (std::vector<std::string>{"grpc:PRI", "http:POS"}));
  ::close(a);
  ::close(b);
}

TEST_F(ListenerTest, SilentAndClosedClientsDoNotBlock) {
  int silent = Connect();
  int closed = Connect();
  ::close(closed);
  int c = Connect();
  Send(c, "GET / HTTP/1.0\r\n\r\n");
  EXPECT_EQ(WaitFor(1), std::vector<std::string>{"http:GET"});
  ::close(c);
  ::close(silent);
}

TEST_F(ListenerTest, StopClosesPending) {
  int silent = Connect();
  RoundTrip();  // the listener has accepted it: pending, so Stop closes it
  listener_->Stop();
  char buf[8];
  timeval tv{5, 0};
  ::setsockopt(silent, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  EXPECT_EQ(::recv(silent, buf, sizeof buf, 0), 0);  // closed by Stop, not by the 5 s timeout
  ::close(silent);
}

}  // namespace
}  // namespace engram::server
