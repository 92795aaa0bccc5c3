// Watch memory test: a Watch stream that does not read what the server sends
// must not make the server's memory grow without bound. Runs the real engram
// binary and measures its resident memory (VmRSS in /proc/<pid>/status).
//
//   watch_memory_test <path to engram> [all|flood|stalled]
//
// Scenarios (each on a fresh server with a fresh data dir and free ports):
//
//  1. Flooding client: one stream creates a watcher, then sends
//     WatchRequest{progress_request} in a tight loop (buffered writes flushed
//     every kFloodBatch, so the client outpaces the server) and never reads. Runs
//     for kFloodSeconds or until the client's Write has made no progress for
//     kBlockedSeconds (a server that stops reading a stream whose replies are
//     not being taken blocks the client, as etcd does). Meanwhile a second,
//     well-behaved stream watches a key that a writer keeps putting; it must
//     receive events during the flood, in order, and in the end every event.
//     Checked: max RSS during the flood minus the RSS before it stays below
//     BUDGET + MARGIN.
//  2. Stalled watcher, values of kValueBytes (4 KiB: 100k events are ~400 MB,
//     far beyond BUDGET + MARGIN). A warm-up puts kWarmupEvents keys under w/
//     (the raft log and the heap reach their steady size); phase A puts
//     kEvents keys under a/ with no watcher (the control: what the store
//     itself needs); phase B puts kEvents keys under b/ while a stream that
//     watches the prefix b/ does not read. Checked: growth(B) - growth(A) <
//     BUDGET + MARGIN. Then the stream resumes reading, as a slow client
//     (at most kCatchUpBytesPerSec, so the server's catch-up from the store
//     can run ahead of it), and must get every event of phase B exactly once,
//     in revision order (no compaction runs, so a cancel is a failure).
//     Checked: the anonymous RSS (RssAnon) while catching up minus before it
//     < BUDGET + MARGIN. RssAnon, because the catch-up reads ~400 MB of the
//     store through its file mapping (RssFile), which is the store's and not
//     a buffer; what the server queues for the stream is heap.
//     (A server without a byte budget keeps up to 128 catch-up replies of
//     1000 revisions per stream, ~4 MB each here: it fails this check. It
//     passes the stall check, since no reply is taken while the stream is
//     stalled, and its queue holds then only 128 one-revision replies.)
//
// BUDGET is the per-stream buffer budget given to the server with
// kBufferFlag; MARGIN covers gRPC's own buffers and allocator slack. With
// WATCHMEM_NO_FLAG=1 the flag is not passed (for servers that do not have it
// yet); the budget used in the checks stays the same.
//
// The second argument runs one scenario only. The data dir and the server log
// are kept (and their place printed) when a check fails.
//
// Ends with a plain "N passed, M failed" line; exits non-zero on a failure.
// Timings only bound how long the test waits; nothing passes or fails on
// speed.
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "etcdserverpb/rpc.grpc.pb.h"

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// The server flag that bounds what one Watch stream may buffer.
constexpr const char* kBufferFlag = "--watch-stream-buffer-bytes";
constexpr int64_t kBudgetBytes = 4 << 20;   // passed as kBufferFlag
constexpr int64_t kMarginBytes = 64 << 20;  // gRPC's buffers, allocator slack

constexpr auto kFloodSeconds = 8s;    // longest flood
constexpr int kFloodBatch = 64;       // progress requests per flush
constexpr auto kBlockedSeconds = 2s;  // no completed Write for this long = the client is blocked
constexpr int kEvents = 100000;       // puts per phase in scenario 2
constexpr int kWarmupEvents = 20000;  // puts before phase A (two snapshot cycles)
constexpr int kValueBytes = 4096;     // scenario 2's values
constexpr int64_t kCatchUpBytesPerSec = 128 << 20;  // the resumed reader's pace (~3 s for 400 MB)
constexpr int kWriters = 8;
constexpr auto kOverallDeadline = 570s;  // below ctest's TIMEOUT 600

int passed = 0, failed = 0;

void Check(bool ok, const std::string& what) {
  std::printf("%s: %s\n", ok ? "PASS" : "FAIL", what.c_str());
  std::fflush(stdout);
  ok ? passed++ : failed++;
}

double MiB(int64_t bytes) { return static_cast<double>(bytes) / (1 << 20); }

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

// Resident memory of a process, from /proc/<pid>/status (bytes; 0 if gone).
struct Rss {
  int64_t total = 0, anon = 0, file = 0;
};

Rss ReadRss(pid_t pid) {
  Rss r;
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    auto field = [&](const char* name, int64_t* out) {
      size_t n = std::strlen(name);
      if (line.compare(0, n, name) == 0) *out = std::strtoll(line.c_str() + n, nullptr, 10) * 1024;
    };
    field("VmRSS:", &r.total);
    field("RssAnon:", &r.anon);
    field("RssFile:", &r.file);
  }
  return r;
}

std::string Fmt(const Rss& r) {
  char buf[128];
  std::snprintf(buf, sizeof buf, "%.1f MiB (anon %.1f, file %.1f)", MiB(r.total), MiB(r.anon), MiB(r.file));
  return buf;
}

// Samples a process's RSS every 20 ms; keeps the maximum since the last Reset.
class RssSampler {
 public:
  explicit RssSampler(pid_t pid) : pid_(pid), thread_([this] { Loop(); }) {}
  ~RssSampler() {
    stop_ = true;
    thread_.join();
  }
  // Starts a new window; returns the RSS now (the window's baseline).
  Rss Reset() {
    Rss now = ReadRss(pid_);
    std::lock_guard<std::mutex> lk(mu_);
    max_ = now;
    return now;
  }
  Rss Max() {
    Rss now = ReadRss(pid_);
    std::lock_guard<std::mutex> lk(mu_);
    Fold(now);
    return max_;
  }

 private:
  void Fold(const Rss& r) {
    max_.total = std::max(max_.total, r.total);
    max_.anon = std::max(max_.anon, r.anon);
    max_.file = std::max(max_.file, r.file);
  }
  void Loop() {
    while (!stop_) {
      Rss r = ReadRss(pid_);
      {
        std::lock_guard<std::mutex> lk(mu_);
        Fold(r);
      }
      std::this_thread::sleep_for(20ms);
    }
  }
  const pid_t pid_;
  std::mutex mu_;
  Rss max_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

struct Server {
  std::string bin, dir, log;
  int cport = 0, pport = 0;
  pid_t pid = -1;

  void Start(const std::vector<std::string>& extra) {
    cport = FreePort();
    pport = FreePort();
    std::string c = "http://127.0.0.1:" + std::to_string(cport);
    std::string p = "http://127.0.0.1:" + std::to_string(pport);
    std::vector<std::string> args = {bin,
                                     "--name", "s1",
                                     "--data-dir", dir,
                                     "--listen-client-urls", c,
                                     "--advertise-client-urls", c,
                                     "--listen-peer-urls", p,
                                     "--initial-advertise-peer-urls", p,
                                     "--initial-cluster", "s1=" + p,
                                     "--listen-metrics-urls", ""};
    args.insert(args.end(), extra.begin(), extra.end());
    std::string line;
    for (const auto& a : args) line += (line.empty() ? "" : " ") + (a.empty() ? std::string("''") : a);
    std::printf("starting: %s\n", line.c_str());
    std::fflush(stdout);
    pid_t parent = getpid();
    pid = fork();
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(127);
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      dup2(fd, 1);
      dup2(fd, 2);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(bin.c_str(), argv.data());
      _exit(127);
    }
  }
  bool Alive() {
    if (pid <= 0) return false;
    int st;
    if (waitpid(pid, &st, WNOHANG) == 0) return true;
    if (WIFSIGNALED(st)) std::printf("server (pid %d) was killed by signal %d\n", pid, WTERMSIG(st));
    else std::printf("server (pid %d) exited with status %d\n", pid, WEXITSTATUS(st));
    pid = -1;
    return false;
  }
  void Stop() {
    if (!Alive()) return;
    ::kill(pid, SIGTERM);
    auto deadline = Clock::now() + 10s;
    int st;
    while (waitpid(pid, &st, WNOHANG) == 0) {
      if (Clock::now() > deadline) {
        ::kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        break;
      }
      std::this_thread::sleep_for(20ms);
    }
    pid = -1;
  }
};

Server* g_server = nullptr;  // for the overall deadline

// Each channel gets its own TCP connection (no subchannel sharing), so one
// stream's flow control never touches another's.
std::shared_ptr<grpc::Channel> NewChannel(int port) {
  static std::atomic<int> n{0};
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetInt("engram.watchmem.channel", n++);
  return grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials(), args);
}

bool WaitReady(Server& s, std::chrono::seconds timeout) {
  auto deadline = Clock::now() + timeout;
  auto kv = etcdserverpb::KV::NewStub(NewChannel(s.cport));
  while (Clock::now() < deadline) {
    if (!s.Alive()) return false;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 500ms);
    etcdserverpb::RangeRequest req;
    req.set_key("ready-probe");
    etcdserverpb::RangeResponse resp;
    if (kv->Range(&ctx, req, &resp).ok()) return true;
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

void TailLog(const std::string& path) {
  std::string cmd = "tail -n 30 '" + path + "' >&2";
  int rc = std::system(cmd.c_str());
  (void)rc;
}

// Extra server flags: the buffer budget unless WATCHMEM_NO_FLAG=1.
std::vector<std::string> BudgetFlags() {
  const char* no = std::getenv("WATCHMEM_NO_FLAG");
  if (no && std::string(no) == "1") {
    std::printf("WATCHMEM_NO_FLAG=1: not passing %s (checks still use a budget of %ld bytes)\n", kBufferFlag,
                static_cast<long>(kBudgetBytes));
    return {};
  }
  return {kBufferFlag, std::to_string(kBudgetBytes)};
}

bool StartServer(Server& srv, const std::vector<std::string>& extra) {
  std::filesystem::remove_all(srv.dir);
  srv.Start(extra);
  if (!WaitReady(srv, 30s)) {
    std::fprintf(stderr, "server did not become ready\n");
    TailLog(srv.log);
    srv.Stop();
    return false;
  }
  return true;
}

int64_t Put(etcdserverpb::KV::Stub* kv, const std::string& key, const std::string& value) {
  etcdserverpb::PutRequest req;
  req.set_key(key);
  req.set_value(value);
  etcdserverpb::PutResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 30s);
  grpc::Status st = kv->Put(&ctx, req, &resp);
  if (!st.ok()) {
    std::fprintf(stderr, "put %s failed: %s\n", key.c_str(), st.error_message().c_str());
    return -1;
  }
  return resp.header().revision();
}

int64_t CurrentRevision(etcdserverpb::KV::Stub* kv) {
  etcdserverpb::RangeRequest req;
  req.set_key("ready-probe");
  etcdserverpb::RangeResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 30s);
  if (!kv->Range(&ctx, req, &resp).ok()) return -1;
  return resp.header().revision();
}

etcdserverpb::WatchRequest CreateReq(const std::string& key, const std::string& range_end, int64_t start_rev) {
  etcdserverpb::WatchRequest req;
  auto* c = req.mutable_create_request();
  c->set_key(key);
  c->set_range_end(range_end);
  c->set_start_revision(start_rev);
  return req;
}

// ---------------------------------------------------------------------------
// Scenario 1: a client floods progress requests and never reads.

void FloodingClient(Server& srv) {
  std::printf("\n== scenario 1: flooding client ==\n");
  if (!StartServer(srv, BudgetFlags())) {
    Check(false, "flood: server started");
    return;
  }
  RssSampler sampler(srv.pid);
  Rss at_start = sampler.Reset();
  std::printf("RSS after startup: %s\n", Fmt(at_start).c_str());

  // The well-behaved stream: watches good/k, reads everything.
  const std::string kGoodKey = "good/k";
  auto good_ch = NewChannel(srv.cport);
  auto good_watch = etcdserverpb::Watch::NewStub(good_ch);
  grpc::ClientContext good_ctx;
  auto good = good_watch->Watch(&good_ctx);
  std::mutex good_mu;
  std::condition_variable good_cv;
  std::vector<int64_t> good_revs;  // revisions received, in arrival order
  bool good_order_ok = true, good_key_ok = true, good_created = false, good_ended = false;
  std::atomic<bool> flooding{false};
  std::atomic<int64_t> good_during_flood{0};
  good->Write(CreateReq(kGoodKey, "", 0));
  std::thread good_reader([&] {
    etcdserverpb::WatchResponse resp;
    while (good->Read(&resp)) {
      std::lock_guard<std::mutex> lk(good_mu);
      if (resp.created()) good_created = true;
      for (const auto& ev : resp.events()) {
        int64_t rev = ev.kv().mod_revision();
        if (!good_revs.empty() && rev <= good_revs.back()) good_order_ok = false;
        if (ev.kv().key() != kGoodKey) good_key_ok = false;
        good_revs.push_back(rev);
        if (flooding) good_during_flood++;
      }
      good_cv.notify_all();
    }
    std::lock_guard<std::mutex> lk(good_mu);
    good_ended = true;
    good_cv.notify_all();
  });
  {
    std::unique_lock<std::mutex> lk(good_mu);
    good_cv.wait_for(lk, 30s, [&] { return good_created || good_ended; });
  }
  Check(good_created, "flood: the well-behaved stream's watcher was created");

  // The writer of good/k.
  std::atomic<bool> writer_stop{false};
  std::vector<int64_t> acked;  // only the writer thread touches it until joined
  bool writer_ok = true;
  std::thread writer([&] {
    auto kv = etcdserverpb::KV::NewStub(NewChannel(srv.cport));
    for (int i = 0; !writer_stop; i++) {
      int64_t rev = Put(kv.get(), kGoodKey, "value-" + std::to_string(i));
      if (rev < 0) {
        writer_ok = false;
        return;
      }
      acked.push_back(rev);
    }
  });
  std::this_thread::sleep_for(1s);  // let the writer and the good stream settle

  // The flooding stream.
  auto flood_ch = NewChannel(srv.cport);
  auto flood_watch = etcdserverpb::Watch::NewStub(flood_ch);
  grpc::ClientContext flood_ctx;
  auto flood = flood_watch->Watch(&flood_ctx);
  flood->Write(CreateReq("flood/none", "", 0));
  Rss base = sampler.Reset();
  std::printf("RSS before the flood (baseline): %s\n", Fmt(base).c_str());
  std::atomic<int64_t> sent{0};
  std::atomic<bool> flood_stop{false};
  flooding = true;
  auto flood_start = Clock::now();
  std::thread flooder([&] {
    etcdserverpb::WatchRequest req;
    req.mutable_progress_request();
    while (!flood_stop) {
      // Buffered writes (flushed every kFloodBatch) so the client is not the
      // bottleneck; each one is still a separate message on the stream.
      bool flush = (sent.load(std::memory_order_relaxed) + 1) % kFloodBatch == 0;
      if (!flood->Write(req, flush ? grpc::WriteOptions() : grpc::WriteOptions().set_buffer_hint())) break;
      sent.fetch_add(1, std::memory_order_relaxed);
    }
  });
  // Watchdog: stop after kFloodSeconds, or once Write has been stuck for kBlockedSeconds.
  bool blocked = false;
  int64_t last = -1;
  auto last_change = Clock::now();
  while (true) {
    std::this_thread::sleep_for(50ms);
    auto now = Clock::now();
    int64_t s = sent.load();
    if (s != last) {
      last = s;
      last_change = now;
    } else if (now - last_change >= kBlockedSeconds) {
      blocked = true;
      break;
    }
    if (now - flood_start >= kFloodSeconds) break;
    if (!srv.Alive()) break;
  }
  Rss peak = sampler.Max();
  double flood_secs = std::chrono::duration<double>(Clock::now() - flood_start).count();
  flooding = false;
  flood_stop = true;
  flood_ctx.TryCancel();
  flooder.join();
  flood->Finish();
  int64_t growth = peak.total - base.total;
  std::printf("flood ran %.1f s; progress requests sent: %ld; client Write %s\n", flood_secs,
              static_cast<long>(sent.load()),
              blocked ? "blocked (no completed write for 2 s)" : "never blocked");
  std::printf("  baseline RSS %s\n  max RSS      %s\n  growth %.1f MiB (budget %.1f + margin %.1f = %.1f MiB)\n",
              Fmt(base).c_str(), Fmt(peak).c_str(), MiB(growth), MiB(kBudgetBytes), MiB(kMarginBytes),
              MiB(kBudgetBytes + kMarginBytes));
  if (blocked) {
    std::printf("  blocked after %ld progress requests, %.1f s into the flood\n", static_cast<long>(last),
                std::chrono::duration<double>(last_change - flood_start).count());
  }
  std::this_thread::sleep_for(1s);
  std::printf("  RSS 1 s after the flooding stream was cancelled: %s\n", Fmt(ReadRss(srv.pid)).c_str());

  // The well-behaved stream got every event, in order.
  writer_stop = true;
  writer.join();
  bool all = false;
  {
    std::unique_lock<std::mutex> lk(good_mu);
    all = good_cv.wait_for(lk, 60s, [&] { return good_ended || good_revs.size() >= acked.size(); });
    all = all && good_revs == acked;
  }
  std::printf("good stream: %zu puts acknowledged, %zu events received, %ld during the flood\n", acked.size(),
              good_revs.size(), static_cast<long>(good_during_flood.load()));
  good_ctx.TryCancel();
  good_reader.join();
  good->Finish();

  Check(srv.Alive(), "flood: the server is still running");
  Check(growth < kBudgetBytes + kMarginBytes, "flood: RSS growth " + std::to_string(growth >> 20) + " MiB < budget + margin " +
                                                   std::to_string((kBudgetBytes + kMarginBytes) >> 20) + " MiB");
  Check(writer_ok, "flood: every put of the well-behaved writer succeeded");
  Check(good_during_flood > 0, "flood: the well-behaved stream received events during the flood (" +
                                   std::to_string(good_during_flood.load()) + ")");
  Check(good_order_ok && good_key_ok, "flood: the well-behaved stream's events are in revision order and for its key");
  Check(all, "flood: the well-behaved stream received every acknowledged put exactly once");
  srv.Stop();
}

// ---------------------------------------------------------------------------
// Scenario 2: a watcher that stops reading while 100k events happen.

// n puts under prefix from kWriters threads; revs[i] = revision of key i.
bool PutMany(Server& srv, const std::string& prefix, int n, std::vector<int64_t>* revs) {
  revs->assign(n, 0);
  std::atomic<int> next{0};
  std::atomic<bool> ok{true};
  std::vector<std::thread> threads;
  for (int w = 0; w < kWriters; w++) {
    threads.emplace_back([&] {
      auto kv = etcdserverpb::KV::NewStub(NewChannel(srv.cport));
      std::string value(kValueBytes, 'x');
      char key[64];
      for (int i; ok && (i = next.fetch_add(1)) < n;) {
        std::snprintf(key, sizeof key, "%s%06d", prefix.c_str(), i);
        std::memcpy(value.data(), key, std::strlen(key));
        int64_t rev = Put(kv.get(), key, value);
        if (rev < 0) {
          ok = false;
          return;
        }
        (*revs)[i] = rev;
      }
    });
  }
  for (auto& t : threads) t.join();
  return ok;
}

void StalledWatcher(Server& srv) {
  std::printf("\n== scenario 2: stalled watcher ==\n");
  // A smaller snapshot count keeps the raft log's retention the same in both
  // phases, so phase A is a fair control for phase B.
  std::vector<std::string> flags = BudgetFlags();
  flags.insert(flags.end(), {"--snapshot-count", "10000", "--snapshot-catchup-entries", "1000"});
  if (!StartServer(srv, flags)) {
    Check(false, "stalled: server started");
    return;
  }
  RssSampler sampler(srv.pid);
  auto kv = etcdserverpb::KV::NewStub(NewChannel(srv.cport));
  std::printf("RSS after startup: %s\n", Fmt(ReadRss(srv.pid)).c_str());

  // Warm-up: the raft log (kept between snapshots) and the allocator's heap
  // reach their steady size, so phase A's growth is the store's alone and
  // not a one-time cost that would make the control too generous.
  std::vector<int64_t> revs_w;
  auto t0 = Clock::now();
  bool ok_w = PutMany(srv, "w/", kWarmupEvents, &revs_w);
  std::printf("warm-up (%d puts of %d bytes) took %.1f s; RSS %s\n", kWarmupEvents, kValueBytes,
              std::chrono::duration<double>(Clock::now() - t0).count(), Fmt(ReadRss(srv.pid)).c_str());
  Check(ok_w, "stalled: warm-up puts succeeded");

  // Phase A: no watcher.
  std::vector<int64_t> revs_a;
  Rss base_a = sampler.Reset();
  t0 = Clock::now();
  bool ok_a = PutMany(srv, "a/", kEvents, &revs_a);
  std::this_thread::sleep_for(1s);
  Rss peak_a = sampler.Max();
  int64_t growth_a = peak_a.total - base_a.total;
  std::printf("phase A (%d puts, no watcher) took %.1f s\n  before %s\n  max    %s\n  growth %.1f MiB\n", kEvents,
              std::chrono::duration<double>(Clock::now() - t0).count(), Fmt(base_a).c_str(), Fmt(peak_a).c_str(),
              MiB(growth_a));
  Check(ok_a, "stalled: phase A puts succeeded");

  // Phase B: a watcher on b/ that does not read.
  int64_t start_rev = CurrentRevision(kv.get()) + 1;
  auto ch = NewChannel(srv.cport);
  auto watch = etcdserverpb::Watch::NewStub(ch);
  grpc::ClientContext ctx;
  auto stream = watch->Watch(&ctx);
  stream->Write(CreateReq("b/", "b0", start_rev));  // prefix b/ = [b/, b0)
  etcdserverpb::WatchResponse resp;
  bool created = stream->Read(&resp) && resp.created() && !resp.canceled();
  Check(created, "stalled: watcher on b/ created");
  if (!created) {
    ctx.TryCancel();
    stream->Finish();
    srv.Stop();
    return;
  }
  // From here the stream is not read until every put is done.
  std::vector<int64_t> revs_b;
  Rss base_b = sampler.Reset();
  t0 = Clock::now();
  bool ok_b = PutMany(srv, "b/", kEvents, &revs_b);
  std::this_thread::sleep_for(1s);
  Rss peak_b = sampler.Max();
  int64_t growth_b = peak_b.total - base_b.total;
  std::printf("phase B (%d puts, stalled watcher) took %.1f s\n  before %s\n  max    %s\n  growth %.1f MiB\n", kEvents,
              std::chrono::duration<double>(Clock::now() - t0).count(), Fmt(base_b).c_str(), Fmt(peak_b).c_str(),
              MiB(growth_b));
  std::printf("growth B - growth A = %.1f MiB (budget %.1f + margin %.1f = %.1f MiB)\n", MiB(growth_b - growth_a),
              MiB(kBudgetBytes), MiB(kMarginBytes), MiB(kBudgetBytes + kMarginBytes));
  Check(ok_b, "stalled: phase B puts succeeded");
  Check(growth_b - growth_a < kBudgetBytes + kMarginBytes,
        "stalled: RSS growth with the stalled watcher minus without (" + std::to_string((growth_b - growth_a) >> 20) +
            " MiB) < budget + margin " + std::to_string((kBudgetBytes + kMarginBytes) >> 20) + " MiB");

  // Resume reading: every event of phase B, once, in revision order.
  std::vector<int64_t> want = revs_b;
  std::sort(want.begin(), want.end());
  std::vector<int64_t> got;
  got.reserve(kEvents);
  bool order_ok = true, key_ok = true, canceled = false, stream_ok = true;
  std::string cancel_text;
  std::atomic<bool> reading{true};
  std::thread guard([&] {  // a failure deadline for the catch-up
    auto deadline = Clock::now() + 180s;
    while (reading && Clock::now() < deadline) std::this_thread::sleep_for(50ms);
    if (reading) ctx.TryCancel();
  });
  t0 = Clock::now();
  Rss base_r = sampler.Reset();
  int64_t read_bytes = 0;
  while (got.size() < want.size()) {
    // A slow client: at most kCatchUpBytesPerSec (pacing only; nothing
    // passes or fails on speed).
    std::this_thread::sleep_until(t0 + std::chrono::microseconds(read_bytes * 1000000 / kCatchUpBytesPerSec));
    if (!stream->Read(&resp)) {
      stream_ok = false;
      break;
    }
    read_bytes += static_cast<int64_t>(resp.ByteSizeLong());
    if (resp.canceled()) {
      canceled = true;
      cancel_text = "compact_revision " + std::to_string(resp.compact_revision()) + ", reason '" +
                    resp.cancel_reason() + "'";
      break;
    }
    for (const auto& ev : resp.events()) {
      int64_t rev = ev.kv().mod_revision();
      if (!got.empty() && rev <= got.back()) order_ok = false;
      if (ev.kv().key().compare(0, 2, "b/") != 0 || ev.type() != mvccpb::Event::PUT) key_ok = false;
      got.push_back(rev);
    }
  }
  reading = false;
  guard.join();
  Rss peak_r = sampler.Max();
  int64_t growth_r = peak_r.anon - base_r.anon;
  std::printf("resumed: %zu of %d events (%.1f MiB) in %.1f s\n  before %s\n  max    %s\n"
              "  anon growth while catching up %.1f MiB (budget %.1f + margin %.1f = %.1f MiB)\n",
              got.size(), kEvents, MiB(read_bytes), std::chrono::duration<double>(Clock::now() - t0).count(),
              Fmt(base_r).c_str(), Fmt(peak_r).c_str(), MiB(growth_r), MiB(kBudgetBytes), MiB(kMarginBytes),
              MiB(kBudgetBytes + kMarginBytes));
  if (canceled) std::printf("  the watcher was cancelled: %s\n", cancel_text.c_str());
  if (!stream_ok) std::printf("  the stream ended or the deadline passed before every event arrived\n");
  ctx.TryCancel();
  stream->Finish();

  Check(growth_r < kBudgetBytes + kMarginBytes, "stalled: anon RSS growth while catching up (" +
                                                    std::to_string(growth_r >> 20) + " MiB) < budget + margin " +
                                                    std::to_string((kBudgetBytes + kMarginBytes) >> 20) + " MiB");
  Check(!canceled, "stalled: the watcher was not cancelled (no compaction ran)");
  Check(order_ok && key_ok, "stalled: events are PUTs under b/ in increasing revision order");
  Check(got == want, "stalled: every phase-B event received exactly once (" + std::to_string(got.size()) + " of " +
                         std::to_string(want.size()) + ")");
  Check(srv.Alive(), "stalled: the server is still running");
  srv.Stop();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: watch_memory_test <engram> [all|flood|stalled]\n");
    return 2;
  }
  auto tmp = std::filesystem::temp_directory_path() / ("engram-watchmem-" + std::to_string(getpid()));
  std::filesystem::create_directories(tmp);
  Server srv;
  srv.bin = argv[1];
  srv.dir = (tmp / "data").string();
  srv.log = (tmp / "engram.log").string();
  g_server = &srv;
  std::thread([] {  // a failure deadline for the whole run
    std::this_thread::sleep_for(kOverallDeadline);
    std::printf("FAIL: the test did not finish within %ld s\n", static_cast<long>(kOverallDeadline.count()));
    if (g_server && g_server->pid > 0) ::kill(g_server->pid, SIGKILL);
    std::printf("%d passed, %d failed\n", passed, failed + 1);
    std::fflush(stdout);
    _exit(1);
  }).detach();

  std::string which = argc > 2 ? argv[2] : "all";
  if (which == "all" || which == "flood") FloodingClient(srv);
  if (which == "all" || which == "stalled") StalledWatcher(srv);

  if (failed == 0) {
    std::filesystem::remove_all(tmp);
  } else {
    std::fprintf(stderr, "server log (last lines); data dir and log kept in %s\n", tmp.c_str());
    TailLog(srv.log);
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
