#include <gtest/gtest.h>

#include "server/config.h"

namespace engram::server {
namespace {

Result<ParseResult> Parse(std::vector<std::string> args, std::vector<std::string> env = {}) {
  return ParseCommandLine(args, env);
}

TEST(Config, DefaultsMatchEtcd) {
  auto r = Parse({});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const Config& c = r->config;
  EXPECT_EQ("default", c.name);
  EXPECT_EQ("default.engram", c.data_dir);
  EXPECT_EQ(100000u, c.snapshot_count);
  EXPECT_EQ(100u, c.heartbeat_ms);
  EXPECT_EQ(1000u, c.election_ms);
  EXPECT_EQ(1572864u, c.max_request_bytes);
  EXPECT_EQ(128u, c.max_txn_ops);
  EXPECT_EQ(2147483648LL, c.EffectiveQuota());
  ASSERT_EQ(1u, c.listen_client_urls.size());
  EXPECT_EQ("127.0.0.1:2379", c.listen_client_urls[0].HostPort());
  EXPECT_EQ("default=http://127.0.0.1:2380", c.initial_cluster);
}

TEST(Config, GoFlagForms) {
  auto r = Parse({"--name", "s1", "-data-dir=/tmp/x", "--snapshot-count=7", "--strict-reconfig-check=false",
                  "--force-new-cluster"});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ("s1", r->config.name);
  EXPECT_EQ("/tmp/x", r->config.data_dir);
  EXPECT_EQ(7u, r->config.snapshot_count);
  EXPECT_FALSE(r->config.strict_reconfig_check);
  EXPECT_TRUE(r->config.force_new_cluster);
  // initial-cluster follows --name when not given.
  EXPECT_EQ("s1=http://127.0.0.1:2380", r->config.initial_cluster);
}

// --pre-vote is wired (issue 12): on by default as in etcd 3.6, and off when
// asked; main hands it to the raft config (kv write_path_test checks that).
TEST(Config, PreVoteIsImplemented) {
  auto d = Parse({});
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(d->config.pre_vote);
  EXPECT_TRUE(d->config.notes.empty());
  auto off = Parse({"--pre-vote=false"});
  ASSERT_TRUE(off.ok());
  EXPECT_FALSE(off->config.pre_vote);
  EXPECT_TRUE(off->config.notes.empty()) << "an implemented flag is not merely accepted";
  auto env = Parse({}, {"ETCD_PRE_VOTE=false"});
  ASSERT_TRUE(env.ok());
  EXPECT_FALSE(env->config.pre_vote);
}

TEST(Config, MisspeltFlagIsAnError) {
  auto r = Parse({"--snapshot-cout=5"});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ("flag provided but not defined: -snapshot-cout", r.status().message());
}

TEST(Config, UnsupportedFlagStopsUnlessDefault) {
  EXPECT_TRUE(Parse({"--enable-v2=false"}).ok());
  auto r = Parse({"--enable-v2"});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(std::string::npos, r.status().message().find("--enable-v2 is not supported"));
}

TEST(Config, AcceptedFlagIsNoted) {
  auto r = Parse({"--peer-auto-tls", "--experimental-initial-corrupt-check=true"});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(2u, r->config.notes.size());
}

TEST(Config, EnvironmentAndConflicts) {
  auto r = Parse({}, {"ETCD_NAME=envname", "ETCD_SNAPSHOT_COUNT=42", "ETCDCTL_API=3"});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ("envname", r->config.name);
  EXPECT_EQ(42u, r->config.snapshot_count);
  auto c = Parse({"--name=x"}, {"ETCD_NAME=y"});
  ASSERT_FALSE(c.ok());
  EXPECT_NE(std::string::npos, c.status().message().find("conflicting environment variable \"ETCD_NAME\""));
}

TEST(Config, BadValues) {
  EXPECT_FALSE(Parse({"--snapshot-count=abc"}).ok());
  EXPECT_FALSE(Parse({"--initial-cluster-state=old"}).ok());
  EXPECT_FALSE(Parse({"--listen-client-urls=localhost:2379", "--advertise-client-urls=http://a:1"}).ok());
  EXPECT_FALSE(Parse({"--heartbeat-interval=500", "--election-timeout=1000"}).ok());
  auto r = Parse({"--listen-client-urls=https://127.0.0.1:1", "--advertise-client-urls=https://127.0.0.1:1"});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(std::string::npos, r.status().message().find("TLS key/cert"));
}

TEST(Config, HelpAndVersion) {
  EXPECT_EQ(ParseOutcome::kHelp, Parse({"--help"})->outcome);
  EXPECT_EQ(ParseOutcome::kVersion, Parse({"--version"})->outcome);
  EXPECT_NE(std::string::npos, HelpText().find("--max-txn-ops"));
}

TEST(Config, Urls) {
  auto u = ParseUrls("x", "http://127.0.0.1:2379,https://[::1]:2380");
  ASSERT_TRUE(u.ok());
  ASSERT_EQ(2u, u->size());
  EXPECT_EQ("127.0.0.1:2379", (*u)[0].HostPort());
  EXPECT_EQ("[::1]:2380", (*u)[1].HostPort());
  EXPECT_TRUE((*u)[1].Tls());
  EXPECT_FALSE(ParseUrls("x", "ftp://a:1").ok());
  EXPECT_FALSE(ParseUrls("x", "http://a").ok());
}

TEST(Config, MemberAndClusterIdsMatchEtcd) {
  // Values printed by etcd 3.4.23 for --initial-advertise-peer-urls
  // http://127.0.0.1:32380 and the default token.
  uint64_t id = ComputeMemberId({"http://127.0.0.1:32380"}, "etcd-cluster");
  EXPECT_EQ(0x628170c800dbceeull, id);
  EXPECT_EQ(0xbabc9795b64f03e3ull, ComputeClusterId({id}));
}

TEST(Config, YamlFile) {
  std::string path = ::testing::TempDir() + "/engram-config-test.yaml";
  FILE* f = fopen(path.c_str(), "w");
  fputs("name: 'y1'\ndata-dir: /tmp/y1\nsnapshot-count: 10\nlisten-client-urls: http://127.0.0.1:23790\n"
        "advertise-client-urls: http://127.0.0.1:23790\nclient-transport-security:\n  client-cert-auth: false\n",
        f);
  fclose(f);
  auto r = Parse({"--config-file", path});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ("y1", r->config.name);
  EXPECT_EQ(10u, r->config.snapshot_count);
  EXPECT_EQ("127.0.0.1:23790", r->config.listen_client_urls[0].HostPort());
}

}  // namespace
}  // namespace engram::server
