// /health, /livez and /readyz against a real member whose WAL fsync hangs
// (issue 12): /health and /readyz's linearizable_read go through raft and
// fail with etcd's reason within the request timeout; /livez (a serializable
// read) stays true; NOSPACE and no-leader keep their answers (endpoints_test).
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "exporter/endpoints.h"
#include "exporter/health_probe.h"
#include "src/common/failpoint.h"
#include "src/kv/testing.h"

namespace engram::exporter {
namespace {

TEST(HealthWritePath, StuckFsyncMakesHealthFalseButNotLivez) {
  const std::string dir = kv::kvtest::FreshDir(::testing::TempDir(), "healthwp", "stuck");
  kv::Options o = kv::kvtest::TestOptions(dir);
  o.request_timeout_ms = 400;
  auto s = kv::KvServer::Open(o);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  KvContext ctx(s->get(), [] { return std::string(); });
  HealthProbe probe;
  auto get = [&](const std::string& target) {
    HttpRequest r;
    r.method = "GET";
    r.target = target;
    return Handle(r, ctx, probe);
  };
  ASSERT_EQ(200, get("/health").status);
  ASSERT_EQ(200, get("/readyz").status);

  ASSERT_TRUE(failpoint::Set("wal-fsync", "sleep(3000)"));
  etcdserverpb::PutRequest req;
  req.set_key("k");
  req.set_value("v");
  etcdserverpb::PutResponse resp;
  std::atomic<bool> put_done{false};
  (*s)->Put(&req, &resp, [&](const Status&) { put_done = true; });
  // Once the raft thread has been inside the put's fsync for longer than a
  // heartbeat (10 ms here), a linearizable read is no longer served locally:
  // it needs a read index, which comes back only after the fsync.
  while (failpoint::Triggered("wal-fsync") == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const auto t0 = std::chrono::steady_clock::now();
  HttpResponse h = get("/health");
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(503, h.status);
  EXPECT_EQ("{\"health\":\"false\",\"reason\":\"RANGE ERROR:etcdserver: request timed out\"}\n", h.body);
  EXPECT_LT(took, 2.5) << "answered after the request timeout, not after the fsync";
  EXPECT_EQ(1, probe.health_failures.Value());
  HttpResponse live = get("/livez");
  EXPECT_EQ(200, live.status) << live.body;
  HttpResponse ready = get("/readyz?verbose");
  EXPECT_EQ(503, ready.status);
  EXPECT_NE(std::string::npos, ready.body.find("[-]linearizable_read failed: etcdserver: request timed out"))
      << ready.body;
  EXPECT_NE(std::string::npos, ready.body.find("[+]serializable_read ok")) << ready.body;

  ASSERT_TRUE(failpoint::Set("wal-fsync", "off"));
  // Healthy again once the disk answers.
  int status = 0;
  for (int i = 0; i < 50 && status != 200; i++) {
    status = get("/health").status;
    if (status != 200) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(200, status);
  s->reset();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace engram::exporter
