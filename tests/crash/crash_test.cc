// Crash test: concurrent writers against a real engram process, kill -9 at a
// random moment, restart on the same data dir, and check that every write the
// server acknowledged is there with its value and that the revision never
// goes backwards. Repeats for several rounds on the same data dir.
//
// Leases ride along: a lease writer grants leases, attaches keys to them and
// revokes every other one. After each restart every acknowledged grant is
// there with its acknowledged keys attached, every acknowledged revoke left
// neither the lease nor any of its keys, and no key in the store points at a
// lease that does not exist (no key of a revoked lease left behind).
//
//   crash_test <path to engram> [rounds] [seed]
//
// Ends with a plain "N passed, M failed" line (one check per round).
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "etcdserverpb/rpc.grpc.pb.h"

namespace {

int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  int port = ntohs(a.sin_port);
  ::close(fd);
  return port;
}

struct Server {
  std::string bin, dir, log;
  int cport = 0, pport = 0;
  pid_t pid = -1;

  void Start() {
    std::string c = "http://127.0.0.1:" + std::to_string(cport);
    std::string p = "http://127.0.0.1:" + std::to_string(pport);
    pid = fork();
    if (pid == 0) {
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      dup2(fd, 1);
      dup2(fd, 2);
      execl(bin.c_str(), bin.c_str(), "--name", "s1", "--data-dir", dir.c_str(), "--listen-client-urls", c.c_str(),
            "--advertise-client-urls", c.c_str(), "--listen-peer-urls", p.c_str(), "--initial-advertise-peer-urls",
            p.c_str(), "--initial-cluster", ("s1=" + p).c_str(), "--snapshot-count", "2000",
            "--snapshot-catchup-entries", "500", "--listen-metrics-urls", "", static_cast<char*>(nullptr));
      _exit(127);
    }
  }
  void Kill9() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      int st;
      waitpid(pid, &st, 0);
      pid = -1;
    }
  }
  bool Alive() {
    if (pid <= 0) return false;
    int st;
    return waitpid(pid, &st, WNOHANG) == 0;
  }
};

std::unique_ptr<etcdserverpb::KV::Stub> Connect(int port) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);  // the final check reads every key at once
  auto ch = grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials(), args);
  return etcdserverpb::KV::NewStub(ch);
}

bool WaitReady(Server& s, int seconds) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  while (std::chrono::steady_clock::now() < deadline) {
    if (!s.Alive()) return false;
    auto kv = Connect(s.cport);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
    etcdserverpb::RangeRequest req;
    req.set_key("ready-probe");
    etcdserverpb::RangeResponse resp;
    if (kv->Range(&ctx, req, &resp).ok()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

void TailLog(const std::string& path) {
  std::string cmd = "tail -n 30 '" + path + "' >&2";
  int rc = std::system(cmd.c_str());
  (void)rc;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: crash_test <engram> [rounds] [seed]\n");
    return 2;
  }
  int rounds = argc > 2 ? std::atoi(argv[2]) : 6;
  uint64_t seed = argc > 3 ? std::strtoull(argv[3], nullptr, 10) : std::random_device{}();
  std::printf("crash_test: seed %lu, %d rounds\n", static_cast<unsigned long>(seed), rounds);
  std::mt19937_64 rng(seed);

  auto tmp = std::filesystem::temp_directory_path() / ("engram-crash-" + std::to_string(getpid()));
  std::filesystem::create_directories(tmp);
  Server srv;
  srv.bin = argv[1];
  srv.dir = (tmp / "data").string();
  srv.log = (tmp / "engram.log").string();
  srv.cport = FreePort();
  srv.pport = FreePort();

  std::map<std::string, std::string> acked;  // key -> last acknowledged value
  std::mutex acked_mu;
  // Leases: acknowledged grants -> keys whose put with the lease was acknowledged;
  // acknowledged revokes -> the keys they had.
  std::map<int64_t, std::vector<std::string>> lease_live, lease_revoked;
  int64_t max_acked_rev = 0;
  int64_t last_seen_rev = 0;
  int passed = 0, failed = 0;

  for (int round = 0; round < rounds; round++) {
    srv.Start();
    if (!WaitReady(srv, 30)) {
      std::fprintf(stderr, "round %d: server did not become ready\n", round);
      TailLog(srv.log);
      failed++;
      break;
    }
    bool ok = true;
    // 1. Everything acknowledged so far is there, and the revision did not go back.
    {
      auto kv = Connect(srv.cport);
      etcdserverpb::RangeRequest req;
      req.set_key(std::string(1, '\0'));
      req.set_range_end(std::string(1, '\0'));
      etcdserverpb::RangeResponse resp;
      grpc::ClientContext ctx;
      grpc::Status st = kv->Range(&ctx, req, &resp);
      if (!st.ok()) {
        std::fprintf(stderr, "round %d: range failed: %s\n", round, st.error_message().c_str());
        ok = false;
      } else {
        std::map<std::string, std::string> have;
        for (const auto& k : resp.kvs()) have[k.key()] = k.value();
        size_t missing = 0, wrong = 0;
        for (const auto& [k, v] : acked) {
          auto it = have.find(k);
          if (it == have.end()) {
            if (missing++ < 5) std::fprintf(stderr, "round %d: acknowledged key %s is missing\n", round, k.c_str());
          } else if (it->second != v) {
            // A later unacknowledged write of the same key may have landed: only
            // "w" keys are written once, so they must match exactly.
            if (wrong++ < 5) std::fprintf(stderr, "round %d: key %s has a different value\n", round, k.c_str());
          }
        }
        int64_t rev = resp.header().revision();
        if (rev < max_acked_rev || rev < last_seen_rev) {
          std::fprintf(stderr, "round %d: revision went back: now %ld, max acked %ld, last seen %ld\n", round,
                       static_cast<long>(rev), static_cast<long>(max_acked_rev), static_cast<long>(last_seen_rev));
          ok = false;
        }
        last_seen_rev = rev;
        if (missing || wrong) ok = false;
        std::printf("round %d: %zu acknowledged keys checked, %zu keys present, revision %ld\n", round, acked.size(),
                    have.size(), static_cast<long>(rev));
      }
    }
    // 1b. Leases: acknowledged grants, attaches and revokes all held.
    {
      auto ch = grpc::CreateChannel("127.0.0.1:" + std::to_string(srv.cport), grpc::InsecureChannelCredentials());
      auto lease = etcdserverpb::Lease::NewStub(ch);
      auto kv = Connect(srv.cport);
      auto ttl_of = [&](int64_t id, etcdserverpb::LeaseTimeToLiveResponse* out) {
        etcdserverpb::LeaseTimeToLiveRequest req;
        req.set_id(id);
        req.set_keys(true);
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
        return lease->LeaseTimeToLive(&ctx, req, out).ok();
      };
      size_t bad = 0;
      for (const auto& [id, keys] : lease_live) {
        etcdserverpb::LeaseTimeToLiveResponse t;
        if (!ttl_of(id, &t) || t.ttl() <= 0) {
          if (bad++ < 5) std::fprintf(stderr, "round %d: acknowledged lease %lx is gone\n", round, (unsigned long)id);
          continue;
        }
        std::set<std::string> attached(t.keys().begin(), t.keys().end());
        for (const auto& k : keys)
          if (!attached.count(k) && bad++ < 5)
            std::fprintf(stderr, "round %d: key %s is not attached to lease %lx\n", round, k.c_str(), (unsigned long)id);
      }
      for (const auto& [id, keys] : lease_revoked) {
        etcdserverpb::LeaseTimeToLiveResponse t;
        if (!ttl_of(id, &t) || t.ttl() != -1) {
          if (bad++ < 5) std::fprintf(stderr, "round %d: revoked lease %lx is back\n", round, (unsigned long)id);
        }
      }
      // No key points at a missing lease (a revoke applies whole or not at all).
      etcdserverpb::RangeRequest req;
      req.set_key(std::string(1, '\0'));
      req.set_range_end(std::string(1, '\0'));
      etcdserverpb::RangeResponse resp;
      grpc::ClientContext ctx;
      std::map<int64_t, bool> exists;
      size_t leased = 0;
      if (kv->Range(&ctx, req, &resp).ok()) {
        for (const auto& k : resp.kvs()) {
          if (k.lease() == 0) continue;
          leased++;
          auto it = exists.find(k.lease());
          if (it == exists.end()) {
            etcdserverpb::LeaseTimeToLiveResponse t;
            it = exists.emplace(k.lease(), ttl_of(k.lease(), &t) && t.ttl() > 0).first;
          }
          if (!it->second && bad++ < 5)
            std::fprintf(stderr, "round %d: key %s is left behind by lease %lx\n", round, k.key().c_str(),
                         (unsigned long)k.lease());
        }
      } else {
        bad++;
      }
      std::printf("round %d: %zu leases and %zu revokes checked, %zu leased keys present\n", round, lease_live.size(),
                  lease_revoked.size(), leased);
      if (bad) ok = false;
    }
    if (round == rounds - 1) {
      ok ? passed++ : failed++;
      srv.Kill9();
      break;
    }
    // 2. Concurrent writers until a random kill -9.
    std::atomic<bool> stop{false};
    std::vector<std::thread> writers;
    const int kWriters = 8;
    for (int w = 0; w < kWriters; w++) {
      writers.emplace_back([&, w] {
        auto kv = Connect(srv.cport);
        for (int i = 0; !stop.load(); i++) {
          std::string key = "w" + std::to_string(round) + "-" + std::to_string(w) + "-" + std::to_string(i);
          std::string value = "value-of-" + key + std::string(static_cast<size_t>(50 + (i % 200)), 'x');
          etcdserverpb::PutRequest req;
          req.set_key(key);
          req.set_value(value);
          etcdserverpb::PutResponse resp;
          grpc::ClientContext ctx;
          ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
          if (kv->Put(&ctx, req, &resp).ok()) {
            std::lock_guard<std::mutex> lk(acked_mu);
            acked[key] = value;
            if (resp.header().revision() > max_acked_rev) max_acked_rev = resp.header().revision();
          } else {
            return;  // the server is gone
          }
        }
      });
    }
    writers.emplace_back([&] {
      auto ch = grpc::CreateChannel("127.0.0.1:" + std::to_string(srv.cport), grpc::InsecureChannelCredentials());
      auto lease = etcdserverpb::Lease::NewStub(ch);
      auto kv = Connect(srv.cport);
      auto deadline = [] { return std::chrono::system_clock::now() + std::chrono::seconds(5); };
      for (int i = 0; !stop.load(); i++) {
        etcdserverpb::LeaseGrantRequest g;
        g.set_ttl(3600);  // outlives the test: only revokes remove these
        etcdserverpb::LeaseGrantResponse gr;
        grpc::ClientContext gctx;
        gctx.set_deadline(deadline());
        if (!lease->LeaseGrant(&gctx, g, &gr).ok()) return;
        const int64_t id = gr.id();
        {
          std::lock_guard<std::mutex> lk(acked_mu);
          lease_live[id];
        }
        for (int j = 0; j < 3; j++) {
          etcdserverpb::PutRequest p;
          p.set_key("l" + std::to_string(round) + "-" + std::to_string(i) + "-" + std::to_string(j));
          p.set_value("leased");
          p.set_lease(id);
          etcdserverpb::PutResponse pr;
          grpc::ClientContext pctx;
          pctx.set_deadline(deadline());
          if (!kv->Put(&pctx, p, &pr).ok()) return;
          std::lock_guard<std::mutex> lk(acked_mu);
          lease_live[id].push_back(p.key());
        }
        if (i % 2 == 1) {
          etcdserverpb::LeaseRevokeRequest r;
          r.set_id(id);
          etcdserverpb::LeaseRevokeResponse rr;
          grpc::ClientContext rctx;
          rctx.set_deadline(deadline());
          {
            // In flight: neither outcome is known until the answer.
            std::lock_guard<std::mutex> lk(acked_mu);
            lease_live.erase(id);
          }
          if (!lease->LeaseRevoke(&rctx, r, &rr).ok()) return;
          std::lock_guard<std::mutex> lk(acked_mu);
          lease_revoked[id] = {};
        }
      }
    });
    int delay_ms = std::uniform_int_distribution<int>(100, 1500)(rng);
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    srv.Kill9();
    stop = true;
    for (auto& t : writers) t.join();
    std::printf("round %d: killed after %d ms with %zu acknowledged keys (max acked revision %ld)\n", round, delay_ms,
                acked.size(), static_cast<long>(max_acked_rev));
    ok ? passed++ : failed++;
    if (!ok) {
      TailLog(srv.log);
      break;
    }
  }
  srv.Kill9();
  if (failed == 0) std::filesystem::remove_all(tmp);
  else std::fprintf(stderr, "data dir and log kept in %s\n", tmp.c_str());
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
