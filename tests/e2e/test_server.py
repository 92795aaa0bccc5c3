"""The engram binary as a process: flags, environment, config file, data-dir
lock, signals, restarts and its log.  Engram only (no comparison with etcd).

Run: ENGRAM_BIN=build/engram python3 tests/e2e/test_server.py -v
"""

import json
import os
import re
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Server  # noqa: E402

BIN = harness.engram_bin()

FLAGS_IN_HELP = ("--name", "--data-dir", "--listen-client-urls", "--advertise-client-urls",
                 "--listen-peer-urls", "--initial-advertise-peer-urls", "--initial-cluster",
                 "--max-txn-ops", "--max-request-bytes", "--snapshot-count", "--config-file")


def put_stdin(*ops):
    return "".join("".join(line + "\n" for line in section) + "\n" for section in ops)


def wait_exit(proc, timeout):
    try:
        return proc.wait(timeout)
    except Exception:
        return None


class ServerCase(unittest.TestCase):
    maxDiff = None

    def server(self, **kw):
        s = Server(BIN, **kw)
        self.addCleanup(s.cleanup)
        return s

    def assertOk(self, r, what=""):
        self.assertEqual(r.rc, 0, "%s failed: %r" % (what or " ".join(r.argv[2:]), r))


class CommandLineTest(ServerCase):

    def test_version(self):
        r = harness.run_binary(BIN, ["--version"])
        self.assertEqual(r.rc, 0, r)
        self.assertRegex(r.out + r.err, r"[Vv]ersion:?\s*v?\d+\.\d+\.\d+")

    def test_help(self):
        for flag in ("--help", "-h"):
            r = harness.run_binary(BIN, [flag])
            self.assertEqual(r.rc, 0, "%s: %r" % (flag, r))
            text = r.out + r.err
            for f in FLAGS_IN_HELP:
                self.assertIn(f, text, "%s output does not list %s" % (flag, f))

    def test_misspelt_flag(self):
        for args in (["--data-dirr", "/tmp/x"], ["--snapshot-cout", "5"], ["--nmae=x"]):
            r = harness.run_binary(BIN, args)
            self.assertNotEqual(r.rc, 0, "%s accepted: %r" % (args, r))
            self.assertIn("flag provided but not defined", r.out + r.err, args)
            self.assertIn(args[0].lstrip("-").split("=")[0], r.out + r.err, args)

    def test_bad_flag_value(self):
        r = harness.run_binary(BIN, ["--max-txn-ops", "lots"])
        self.assertNotEqual(r.rc, 0, r)
        self.assertIn("max-txn-ops", r.out + r.err)

    def test_unsupported_flag(self):
        s = self.server(extra_args=["--enable-v2"])
        s.start(wait=False)
        rc = wait_exit(s.proc, 15)
        log = s.log()
        self.assertIsNotNone(rc, "engram with --enable-v2 still running after 15s:\n" + s.log_tail())
        self.assertNotEqual(rc, 0, log)
        self.assertIn("enable-v2", log)
        self.assertRegex(log, r"(?i)not supported|unsupported", "message should say --enable-v2 is unsupported")

    def test_quota_beyond_the_backend_map_is_refused(self):
        # Issue 12: a quota the LMDB map cannot hold stops the server at start
        # with the flag's name, instead of MDB_MAP_FULL in a crash loop later.
        s = self.server(extra_args=["--quota-backend-bytes", str(2 << 40)])
        s.start(wait=False)
        rc = wait_exit(s.proc, 15)
        self.assertIsNotNone(rc, "engram with a 2 TiB quota still running after 15s:\n" + s.log_tail())
        self.assertNotEqual(rc, 0, s.log())
        self.assertIn("--quota-backend-bytes=%d" % (2 << 40), s.log())

    def test_unsupported_flag_at_default_is_accepted(self):
        s = self.server(extra_args=["--enable-v2=false"])
        s.start()
        self.assertOk(s.ctl("put", "k", "v"))


class ConfigTest(ServerCase):

    def urls(self, s):
        return {"client": s.client_url, "peer": s.peer_url}

    def test_etcd_env_vars(self):
        s = self.server(use_flags=False)
        s.env = {
            "ETCD_NAME": "envnode",
            "ETCD_DATA_DIR": s.data_dir,
            "ETCD_LISTEN_CLIENT_URLS": s.client_url,
            "ETCD_ADVERTISE_CLIENT_URLS": s.client_url,
            "ETCD_LISTEN_PEER_URLS": s.peer_url,
            "ETCD_INITIAL_ADVERTISE_PEER_URLS": s.peer_url,
            "ETCD_INITIAL_CLUSTER": "envnode=" + s.peer_url,
            "ETCD_MAX_TXN_OPS": "2",
        }
        s.start()
        r = s.ctl("member", "list", "-w", "json")
        self.assertOk(r)
        m = r.json()["members"][0]
        self.assertEqual(m["name"], "envnode")
        self.assertEqual(m["clientURLs"], [s.client_url])
        self.assertEqual(m["peerURLs"], [s.peer_url])
        self.assertTrue(os.path.isdir(os.path.join(s.data_dir, "member")),
                        "no member/ dir in ETCD_DATA_DIR: %s" % os.listdir(s.data_dir))
        self.assertOk(s.ctl("txn", stdin=put_stdin([], ["put a 1", "put b 1"], [])))
        r = s.ctl("txn", stdin=put_stdin([], ["put a 1", "put b 1", "put c 1"], []))
        self.assertNotEqual(r.rc, 0, "ETCD_MAX_TXN_OPS=2 not honoured: %r" % r)
        self.assertIn("etcdserver: too many operations in txn request", r.err)

    def test_config_file(self):
        s = self.server(use_flags=False)
        path = os.path.join(s.tmp, "engram.yaml")
        with open(path, "w") as f:
            f.write("# Engram e2e config\n"
                    "name: 'cfgnode'\n"
                    "data-dir: %s\n"
                    "listen-client-urls: %s\n"
                    "advertise-client-urls: %s\n"
                    "listen-peer-urls: %s\n"
                    "initial-advertise-peer-urls: %s\n"
                    "initial-cluster: cfgnode=%s\n"
                    "initial-cluster-state: 'new'\n"
                    "max-txn-ops: 2\n"
                    "snapshot-count: 10000\n"
                    % (s.data_dir, s.client_url, s.client_url, s.peer_url, s.peer_url, s.peer_url))
        # with --config-file, etcd ignores the other flags (and ETCD_* variables)
        s.extra_args = ["--config-file", path, "--name", "ignored", "--max-txn-ops", "100"]
        s.env = {"ETCD_NAME": "ignored-too"}
        s.start()
        r = s.ctl("member", "list", "-w", "json")
        self.assertOk(r)
        self.assertEqual(r.json()["members"][0]["name"], "cfgnode")
        r = s.ctl("txn", stdin=put_stdin([], ["put a 1", "put b 1", "put c 1"], []))
        self.assertNotEqual(r.rc, 0, "max-txn-ops: 2 from the config file not honoured: %r" % r)
        self.assertIn("etcdserver: too many operations in txn request", r.err)

    def test_config_file_missing(self):
        r = harness.run_binary(BIN, ["--config-file", "/nonexistent/engram-e2e.yaml"])
        self.assertNotEqual(r.rc, 0, r)
        self.assertIn("/nonexistent/engram-e2e.yaml", r.out + r.err)


class LifecycleTest(ServerCase):

    def test_second_instance_on_same_data_dir_is_refused(self):
        a = self.server()
        a.start()
        self.assertOk(a.ctl("put", "k", "v"))
        b = self.server(data_dir=a.data_dir)
        b.start(wait=False)
        rc = wait_exit(b.proc, 15)
        self.assertIsNotNone(rc, "second engram on %s still running after 15s:\n%s" % (a.data_dir, b.log_tail()))
        self.assertNotEqual(rc, 0, b.log())
        self.assertIn(a.data_dir, b.log(), "the refusal should name the data dir")
        r = a.ctl("get", "k", "--print-value-only")
        self.assertEqual((r.rc, r.out), (0, "v\n"), "first server hurt by the second: %r" % r)

    def test_sigterm_stops_cleanly_and_data_survives(self):
        s = self.server()
        s.start()
        for i in range(5):
            self.assertOk(s.ctl("put", "k%d" % i, "v%d" % i))
        self.assertOk(s.ctl("del", "k0"))
        before = s.ctl("get", "", "--prefix", "-w", "json")
        self.assertOk(before)
        t = time.time()
        rc = s.stop(signal.SIGTERM, timeout=15)
        self.assertEqual(rc, 0, "exit code after SIGTERM:\n" + s.log_tail())
        self.assertLess(time.time() - t, 10)
        self.assertIn("stopped server", s.log())
        s.start()
        after = s.ctl("get", "", "--prefix", "-w", "json")
        self.assertOk(after)
        self.assertEqual(after.json()["kvs"], before.json()["kvs"])
        self.assertEqual(after.json()["header"]["revision"], 7)
        r = s.ctl("put", "k9", "x", "-w", "json")
        self.assertOk(r)
        self.assertEqual(r.json()["header"]["revision"], 8)
        st = s.ctl("endpoint", "status", "-w", "json")
        self.assertOk(st)
        status = st.json()[0]["Status"]
        self.assertGreaterEqual(status["raftTerm"], 3, "a restarted member campaigns in a new term")
        self.assertEqual(status["raftIndex"], status["raftAppliedIndex"])

    def test_sigterm_while_starting_on_a_stuck_disk_exits(self):
        # Every WAL fsync takes 9 s, longer than the request timeout: the
        # boot's publish never completes, the member never becomes ready. A
        # SIGTERM must still end it at once (etcd's interrupt handler does),
        # not be held until a start that never finishes.
        s = self.server(env={"ENGRAM_FAILPOINTS": "wal-fsync=sleep(9000)"})
        s.start(wait=False)
        time.sleep(2)
        t = time.time()
        rc = s.stop(signal.SIGTERM, timeout=5)
        self.assertLess(time.time() - t, 5)
        self.assertEqual(rc, -signal.SIGTERM, "dies by the signal, as etcd:\n" + s.log_tail())
        self.assertIn("received signal while starting; exiting", s.log())

    def test_kill9_keeps_acknowledged_writes(self):
        s = self.server()
        s.start()
        for i in range(20):
            self.assertOk(s.ctl("put", "k%02d" % i, "v%d" % i))
        self.assertOk(s.ctl("compaction", "5"))
        s.kill()
        self.assertEqual(s.proc.returncode, -signal.SIGKILL)
        s.start()
        r = s.ctl("get", "", "--prefix", "-w", "json")
        self.assertOk(r)
        j = r.json()
        self.assertEqual(j["header"]["revision"], 21)
        self.assertEqual(len(j["kvs"]), 20)
        r = s.ctl("get", "k00", "--rev=4")
        self.assertNotEqual(r.rc, 0, "compaction lost in the crash: %r" % r)
        self.assertIn("required revision has been compacted", r.err)
        self.assertOk(s.ctl("put", "after", "crash"))
        s.kill()
        s.start()
        r = s.ctl("get", "after", "--print-value-only")
        self.assertEqual((r.rc, r.out), (0, "crash\n"))

    def test_log_is_json_lines(self):
        s = self.server()
        s.start()
        self.assertOk(s.ctl("put", "k", "v"))
        self.assertEqual(s.stop(), 0, s.log_tail())
        lines = [l for l in s.log().splitlines() if l.strip()]
        self.assertTrue(lines)
        msgs = []
        for l in lines:
            try:
                j = json.loads(l)
            except ValueError:
                self.fail("log line is not JSON: %r" % l)
            self.assertIsInstance(j, dict, l)
            for k in ("level", "ts", "msg"):
                self.assertIn(k, j, "log line lacks %r: %s" % (k, l))
            msgs.append(j["msg"])
        for want in ("ready to serve client requests", "published local member to cluster",
                     "enabled capabilities for version", "stopped server"):
            self.assertTrue(any(want in m for m in msgs), "no log line with %r in:\n%s" % (want, "\n".join(msgs)))
        self.assertLess(msgs.index(next(m for m in msgs if "published local member" in m)),
                        msgs.index("ready to serve client requests"))


if __name__ == "__main__":
    unittest.main()
