// Test support for code that runs a real KvServer (kv, server, exporter tests
// and benchmarks): a fresh per-test directory, the options of a fast
// single-member server in it, and a blocking Put.
#pragma once

#include <unistd.h>

#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <string>

#include "src/kv/server.h"

namespace engram::kv::kvtest {

// <base>/<prefix>-<pid>-<name>, emptied.
inline std::string FreshDir(const std::string& base, const std::string& prefix, const std::string& name) {
  std::string dir = base + "/" + prefix + "-" + std::to_string(::getpid()) + "-" + name;
  std::filesystem::remove_all(dir);
  return dir;
}

// A single member in dir with 10 ms raft ticks (member 0x1234, cluster 0x5678).
inline Options TestOptions(const std::string& dir, const std::string& name = "t1") {
  Options o;
  o.name = name;
  o.member_dir = dir + "/member";
  o.wal_dir = dir + "/member/wal";
  o.peer_urls = {"http://127.0.0.1:2380"};
  o.client_urls = {"http://127.0.0.1:2379"};
  o.member_id = 0x1234;
  o.cluster_id = 0x5678;
  o.heartbeat_ms = 10;
  o.election_ms = 100;
  return o;
}

// Put and wait for the outcome; *rev gets the response's revision.
inline Status PutSync(KvServer& s, const std::string& k, const std::string& v, int64_t* rev = nullptr,
                      KvServer::Caller caller = KvServer::Caller::kInternal) {
  etcdserverpb::PutRequest req;
  req.set_key(k);
  req.set_value(v);
  etcdserverpb::PutResponse resp;
  Status st = Await([&](Done done) { s.Put(&req, &resp, std::move(done), caller); });
  if (rev) *rev = resp.header().revision();
  return st;
}

}  // namespace engram::kv::kvtest
