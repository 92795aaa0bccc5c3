"""Live monitoring test: real Prometheus scraping real Engram members.

- Every dashboard panel query (dashboards/check.py --exprs) returns data from a
  member under load. The only exceptions are the peer-network panels: a single
  member has no peers, so etcd and Engram export no etcd_network_peer_* series
  (listed in NO_DATA_ON_A_SINGLE_MEMBER).
- Drill 1, slow disk: a member started with the failpoint
  wal-fsync=sleep(600) moves the WAL fsync histogram, and Prometheus'
  rule evaluation puts etcdHighFsyncDurations (warning, p99 > 0.5 s) and
  EngramFsyncLatencyNearHeartbeat into "pending" (their `for` is 10m).
- Drill 2, NOSPACE: a member with a tiny --quota-backend-bytes is filled until
  etcd's "database space exceeded"; /health answers 503 with reason
  "ALARM NOSPACE", while /health?exclude=NOSPACE, /livez and /readyz stay 200.
"""
import json
import os
import subprocess
import sys
import threading
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

NO_DATA_ON_A_SINGLE_MEMBER = ("etcd_network_peer_",)


def http_get(url, timeout=5):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class Prometheus(object):
    """A real Prometheus scraping `targets` [(job, host:port)] every second with
    `rules_path` (default: alerts/engram-rules.yaml); its files under tmp."""

    def __init__(self, targets, tmp, rules_path=None, scrape_timeout=None):
        self.port = harness.free_port()
        self.dir = tmp
        jobs = []
        for job, t in targets:
            j = {"job_name": job, "scrape_interval": "1s", "static_configs": [{"targets": [t]}]}
            if scrape_timeout:
                j["scrape_timeout"] = scrape_timeout
            jobs.append(j)
        cfg = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [rules_path or os.path.join(ROOT, "alerts", "engram-rules.yaml")],
            "scrape_configs": jobs,
        }
        self.cfg_path = os.path.join(tmp, "prometheus.yml")
        with open(self.cfg_path, "w") as f:
            json.dump(cfg, f)  # JSON is YAML
        self.log = open(os.path.join(tmp, "prometheus.log"), "wb")
        self.proc = subprocess.Popen(
            [harness.need("prometheus"), "--config.file=" + self.cfg_path,
             "--storage.tsdb.path=" + os.path.join(tmp, "tsdb"),
             "--web.listen-address=127.0.0.1:%d" % self.port, "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=harness._pdeathsig)
        try:
            harness.wait_until(lambda: harness.tcp_open(self.port) and http_get(self.url("/-/ready"))[0] == 200,
                               60, "prometheus to be ready", interval=0.2)
        except AssertionError:
            self.stop()
            with open(os.path.join(tmp, "prometheus.log"), "rb") as f:
                raise AssertionError("prometheus did not start:\n" + f.read().decode(errors="replace")[-3000:])

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def query(self, expr):
        code, body = http_get(self.url("/api/v1/query?" + urllib.parse.urlencode({"query": expr})))
        if code != 200:
            raise AssertionError("query failed (%d): %s\n%s" % (code, expr, body))
        return json.loads(body)["data"]["result"]

    def alerts(self):
        code, body = http_get(self.url("/api/v1/alerts"))
        return json.loads(body)["data"]["alerts"]

    def wait_for(self, pred, timeout, what):
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            last = pred()
            if last:
                return last
            time.sleep(1)
        raise AssertionError("timed out waiting for " + what)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def load(server, seconds, stop):
    """Puts, gets, a txn and a watch for a while, with etcdctl."""
    end = time.time() + seconds
    i = 0
    watch = subprocess.Popen([harness.need(harness.ETCDCTL_BIN), "--endpoints", server.endpoint,
                              "watch", "--prefix", "/registry/"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=harness.clean_env(),
                             preexec_fn=harness._pdeathsig)
    try:
        while time.time() < end and not stop.is_set():
            server.ctl("put", "/registry/pods/ns/p%d" % (i % 50), "v" * 200)
            server.ctl("get", "/registry/pods/", "--prefix", "--keys-only")
            if i % 10 == 0:
                server.ctl("txn", stdin='mod("/registry/pods/ns/p0") > "0"\n\nput /registry/configmaps/x y\n\n')
            i += 1
    finally:
        watch.kill()
        watch.wait()


class LiveMonitoringTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.make_temp_dir("e2e-prom-")
        cls.mport, cls.dport, cls.qport = harness.free_ports(3)
        cls.member = harness.Server(extra_args=["--listen-metrics-urls", "http://127.0.0.1:%d" % cls.mport])
        cls.slow = harness.Server(extra_args=["--listen-metrics-urls", "http://127.0.0.1:%d" % cls.dport],
                                  env={"ENGRAM_FAILPOINTS": "wal-fsync=sleep(600)"})
        cls.member.start()
        cls.slow.start(timeout=60)
        cls.prom = Prometheus([("etcd", "127.0.0.1:%d" % cls.mport),
                               ("etcd-drill", "127.0.0.1:%d" % cls.dport)], cls.tmp)

    @classmethod
    def tearDownClass(cls):
        cls.prom.stop()
        for s in (cls.member, cls.slow):
            s.stop()
            s.cleanup()
        harness.remove_temp_dir(cls.tmp)

    def exprs(self):
        out = subprocess.run([sys.executable, os.path.join(ROOT, "dashboards", "check.py"), "--exprs", "job=etcd",
                              "instance=.+", "rate_interval=15s"], capture_output=True, text=True, check=True)
        return [e for e in out.stdout.splitlines() if e.strip()]

    def test_1_every_dashboard_query_returns_data(self):
        stop = threading.Event()
        t = threading.Thread(target=load, args=(self.member, 20, stop))
        t.start()
        try:
            # Rates need two scrapes with traffic between them.
            self.prom.wait_for(lambda: self.prom.query('sum(rate(grpc_server_handled_total{job="etcd"}[15s])) > 0'),
                               40, "traffic in Prometheus")
            exprs = self.exprs()
            self.assertGreater(len(exprs), 20)
            exprs = [e for e in exprs if not any(p in e for p in NO_DATA_ON_A_SINGLE_MEMBER)]
            # Until every query has data (some need a few more scrapes); the
            # deadline only bounds a failure, and the load runs meanwhile.
            deadline = time.time() + 15
            missing = [e for e in exprs if not self.prom.query(e)]
            while missing and time.time() < deadline:
                time.sleep(1)
                missing = [e for e in missing if not self.prom.query(e)]
            self.assertEqual([], missing, "dashboard queries without data")
        finally:
            stop.set()
            t.join()

    def test_2_slow_fsync_drill(self):
        stop = threading.Event()
        t = threading.Thread(target=load, args=(self.slow, 25, stop))
        t.start()
        try:
            expr = ('histogram_quantile(0.99, sum by (instance, le) '
                    '(rate(etcd_disk_wal_fsync_duration_seconds_bucket{job="etcd-drill"}[5m]))) > 0.5')
            self.prom.wait_for(lambda: self.prom.query(expr), 60, "fsync p99 > 0.5s in Prometheus")

            def pending():
                names = {a["labels"]["alertname"] for a in self.prom.alerts()
                         if a["labels"].get("job") == "etcd-drill" and a["state"] in ("pending", "firing")}
                return {"etcdHighFsyncDurations", "EngramFsyncLatencyNearHeartbeat"} <= names and names
            names = self.prom.wait_for(pending, 60, "fsync alerts pending")
            self.assertIn("etcdHighFsyncDurations", names)
        finally:
            stop.set()
            t.join()


class NoSpaceDrillTest(unittest.TestCase):
    def test_nospace_health_livez_readyz(self):
        mport = harness.free_port()
        s = harness.Server(extra_args=["--quota-backend-bytes", str(256 * 1024),
                                       "--listen-metrics-urls", "http://127.0.0.1:%d" % mport])
        s.start()
        try:
            base = "http://127.0.0.1:%d" % mport
            self.assertEqual(200, http_get(base + "/health")[0])
            big = "x" * 8192
            for i in range(200):
                rc, out, err = s.ctl("put", "k%d" % i, big)
                if rc != 0:
                    self.assertIn("etcdserver: mvcc: database space exceeded", err)
                    break
            else:
                self.fail("quota never exceeded")
            rc, out, err = s.ctl("alarm", "list")
            self.assertIn("alarm:NOSPACE", out)
            code, body = http_get(base + "/health")
            self.assertEqual(503, code)
            self.assertEqual({"health": "false", "reason": "ALARM NOSPACE"}, json.loads(body))
            code, body = http_get(base + "/health?exclude=NOSPACE")
            self.assertEqual(200, code, body)
            self.assertEqual("true", json.loads(body)["health"])
            self.assertEqual((200, "ok\n"), http_get(base + "/livez"))
            self.assertEqual((200, "ok\n"), http_get(base + "/readyz"))
            # reads are still served
            rc, out, err = s.ctl("get", "k0", "--print-value-only")
            self.assertEqual(0, rc, err)
        finally:
            s.stop()
            s.cleanup()


if __name__ == "__main__":
    unittest.main()
