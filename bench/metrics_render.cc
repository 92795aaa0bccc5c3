// How long a /metrics scrape takes to render (the requirement: < 5 ms), on a
// member with data in it: 20,000 keys over 200 prefixes, every request
// histogram in use, every gRPC series present (etcd's pre-created set).
//
//   build/bench/metrics_render_bench [--benchmark_repetitions=5]
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <condition_variable>
#include <filesystem>
#include <mutex>

#include "exporter/exporter.h"
#include "src/common/log.h"
#include "src/kv/testing.h"

namespace engram {
namespace {

struct Fixture {
  std::string dir;
  std::unique_ptr<kv::KvServer> kv;
  kv::RpcProbe rpc;
  exporter::HealthProbe health;
  std::unique_ptr<exporter::Exporter> ex;

  Fixture() {
    dir = "/tmp/engram-metrics-bench-" + std::to_string(::getpid());
    std::filesystem::remove_all(dir);
    kv::Options o = kv::kvtest::TestOptions(dir, "bench");
    auto s = kv::KvServer::Open(o);
    if (!s.ok()) std::abort();
    kv = std::move(*s);
    // 20k keys, 200 prefixes, in batches (many in flight at once).
    std::mutex mu;
    std::condition_variable cv;
    int pending = 0;
    std::vector<std::unique_ptr<etcdserverpb::PutRequest>> reqs;
    std::vector<std::unique_ptr<etcdserverpb::PutResponse>> resps;
    for (int i = 0; i < 20000; i++) {
      auto req = std::make_unique<etcdserverpb::PutRequest>();
      req->set_key("/registry/r" + std::to_string(i % 200) + "/ns/obj" + std::to_string(i));
      req->set_value(std::string(100, 'v'));
      auto resp = std::make_unique<etcdserverpb::PutResponse>();
      {
        std::lock_guard<std::mutex> lk(mu);
        pending++;
      }
      kv->Put(req.get(), resp.get(), [&](const Status&) {
        std::lock_guard<std::mutex> lk(mu);
        if (--pending == 0) cv.notify_all();
      });
      reqs.push_back(std::move(req));
      resps.push_back(std::move(resp));
    }
    std::unique_lock<std::mutex> lk(mu);
    cv.wait(lk, [&] { return pending == 0; });
    for (int i = 0; i < kv::kRpcMethodCount; i++) {
      rpc.method(i).started.Inc();
      rpc.method(i).handled[0].Inc();
      rpc.method(i).handling_seconds.Observe(0.002);
    }
    for (int t = 0; t < kv::kRequestTypes; t++) kv->probe().request_seconds.at(t, true).Observe(0.001);
    rpc.client_requests.Inc(false, "3.5");
    ex = std::make_unique<exporter::Exporter>(kv.get(), &rpc, &health);
  }
  ~Fixture() {
    ex.reset();
    kv.reset();
    std::filesystem::remove_all(dir);
  }
};

Fixture& F() {
  static Fixture* f = new Fixture;  // lives for the whole run
  return *f;
}

void BM_RenderText(benchmark::State& state) {
  Fixture& f = F();
  size_t bytes = 0;
  for (auto _ : state) {
    std::string s = f.ex->RenderText();
    bytes = s.size();
    benchmark::DoNotOptimize(s);
  }
  state.counters["bytes"] = static_cast<double>(bytes);
}
BENCHMARK(BM_RenderText)->Unit(benchmark::kMillisecond);

void BM_Collect(benchmark::State& state) {
  Fixture& f = F();
  for (auto _ : state) benchmark::DoNotOptimize(f.ex->Collect());
}
BENCHMARK(BM_Collect)->Unit(benchmark::kMillisecond);

void BM_Serialize(benchmark::State& state) {
  Fixture& f = F();
  auto fams = f.ex->Collect();
  for (auto _ : state) benchmark::DoNotOptimize(exporter::SerializeText(fams));
}
BENCHMARK(BM_Serialize)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace engram

int main(int argc, char** argv) {
  engram::log::SetLevel("warn");
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
