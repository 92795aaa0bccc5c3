// Put latency while a large compaction runs (issue 12): a real KvServer (WAL
// with fdatasync, LMDB), N revisions written over a small key set, then puts
// from several threads are timed for a steady phase and again while the
// compaction of those revisions runs. The compaction's removal runs in steps
// between apply batches; the goal is put p99 during it within 2x of steady.
// Also reports the raft thread's ticks per second in both phases.
//
//   build/bench/compaction_bench [revisions=1000000] [threads=8] [steady_seconds=5]
//
// Not run by ctest (a timing goal; the behaviour is tested in
// src/kv/write_path_test.cc).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <thread>
#include <vector>

#include "src/kv/server.h"
#include "src/kv/testing.h"

using namespace engram;
using Clock = std::chrono::steady_clock;

namespace {

double Pct(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

// Runs puts from threads until stop() is true; returns latencies in ms.
template <class Stop>
std::vector<double> TimedPuts(kv::KvServer& s, int threads, Stop stop) {
  std::mutex mu;
  std::vector<double> all;
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; t++) {
    ts.emplace_back([&, t] {
      std::vector<double> mine;
      for (int i = 0; !stop(); i++) {
        auto t0 = Clock::now();
        Status st = kv::kvtest::PutSync(s, "load/" + std::to_string(t) + "/" + std::to_string(i % 100), "v");
        if (!st.ok()) {
          std::fprintf(stderr, "put failed: %s\n", st.ToString().c_str());
          std::exit(1);
        }
        mine.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
      }
      std::lock_guard<std::mutex> lk(mu);
      all.insert(all.end(), mine.begin(), mine.end());
    });
  }
  for (auto& t : ts) t.join();
  return all;
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t revisions = argc > 1 ? std::atoll(argv[1]) : 1000000;
  const int threads = argc > 2 ? std::atoi(argv[2]) : 8;
  const int steady_s = argc > 3 ? std::atoi(argv[3]) : 5;
  const std::string dir = kv::kvtest::FreshDir("/tmp", "compaction-bench", "run");
  kv::Options o = kv::kvtest::TestOptions(dir);
  o.heartbeat_ms = 100;
  o.election_ms = 1000;
  auto opened = kv::KvServer::Open(o);
  if (!opened.ok()) {
    std::fprintf(stderr, "open: %s\n", opened.status().ToString().c_str());
    return 1;
  }
  kv::KvServer& s = **opened;

  // Preload: txns of 128 puts over 1000 keys, from 8 threads (group commit).
  auto p0 = Clock::now();
  std::atomic<int64_t> next{0};
  {
    std::vector<std::thread> ts;
    for (int t = 0; t < 8; t++) {
      ts.emplace_back([&] {
        while (true) {
          int64_t base = next.fetch_add(128);
          if (base >= revisions) break;
          etcdserverpb::TxnRequest req;
          for (int k = 0; k < 128; k++) {
            auto* p = req.add_success()->mutable_request_put();
            p->set_key("pre/" + std::to_string((base + k) % 1000));
            p->set_value(std::string(64, 'x'));
          }
          etcdserverpb::TxnResponse resp;
          Status st = kv::Await([&](kv::Done done) { s.Txn(&req, &resp, std::move(done)); });
          if (!st.ok()) {
            std::fprintf(stderr, "preload: %s\n", st.ToString().c_str());
            std::exit(1);
          }
        }
      });
    }
    for (auto& t : ts) t.join();
  }
  const int64_t rev = s.GetStatus().revision;
  std::printf("preloaded %lld revisions (%lld txns of 128 puts) in %.1f s\n", static_cast<long long>(revisions),
              static_cast<long long>(revisions / 128), std::chrono::duration<double>(Clock::now() - p0).count());

  // Steady.
  uint64_t ticks0 = s.ticks();
  auto t0 = Clock::now();
  auto steady = TimedPuts(s, threads, [&] { return Clock::now() - t0 > std::chrono::seconds(steady_s); });
  double steady_secs = std::chrono::duration<double>(Clock::now() - t0).count();
  double steady_tps = static_cast<double>(s.ticks() - ticks0) / steady_secs;

  // During the compaction of every preloaded revision.
  auto& mp = s.mvcc_probe();
  const uint64_t removed0 = mp.compaction_keys_total.Value();
  const int64_t compact_hist0 = static_cast<int64_t>(mp.db_compaction_total_ms.Snapshot().count);
  etcdserverpb::CompactionRequest creq;
  creq.set_revision(rev);
  etcdserverpb::CompactionResponse cresp;
  std::atomic<bool> compact_acked{false};
  ticks0 = s.ticks();
  t0 = Clock::now();
  s.Compact(&creq, &cresp, [&](const Status& st) {
    if (!st.ok()) std::fprintf(stderr, "compact: %s\n", st.ToString().c_str());
    compact_acked = true;
  });
  auto during = TimedPuts(s, threads, [&] {
    return static_cast<int64_t>(mp.db_compaction_total_ms.Snapshot().count) > compact_hist0;  // finished
  });
  double during_secs = std::chrono::duration<double>(Clock::now() - t0).count();
  double during_tps = static_cast<double>(s.ticks() - ticks0) / during_secs;
  const uint64_t removed = mp.compaction_keys_total.Value() - removed0;

  std::printf("compaction removed %llu revisions in %.2f s while %zu puts ran\n",
              static_cast<unsigned long long>(removed), during_secs, during.size());
  std::printf("%-8s %8s %8s %8s %8s %10s\n", "phase", "puts", "p50 ms", "p99 ms", "max ms", "ticks/s");
  std::printf("%-8s %8zu %8.2f %8.2f %8.2f %10.1f\n", "steady", steady.size(), Pct(steady, 0.5), Pct(steady, 0.99),
              Pct(steady, 1.0), steady_tps);
  std::printf("%-8s %8zu %8.2f %8.2f %8.2f %10.1f\n", "compact", during.size(), Pct(during, 0.5), Pct(during, 0.99),
              Pct(during, 1.0), during_tps);
  std::printf("{\"bench\":\"compaction\",\"revisions\":%lld,\"removed\":%llu,\"compaction_s\":%.3f,"
              "\"steady_p99_ms\":%.3f,\"compact_p99_ms\":%.3f,\"p99_ratio\":%.2f,\"steady_ticks_per_s\":%.1f,"
              "\"compact_ticks_per_s\":%.1f}\n",
              static_cast<long long>(revisions), static_cast<unsigned long long>(removed), during_secs,
              Pct(steady, 0.99), Pct(during, 0.99), Pct(during, 0.99) / std::max(1e-9, Pct(steady, 0.99)),
              steady_tps, during_tps);
  opened->reset();
  std::filesystem::remove_all(dir);
  return 0;
}
