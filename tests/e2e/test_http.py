"""The HTTP endpoints of the real engram binary: /metrics, /health, /livez,
/readyz (+ per-check paths), /version, 404/405, on the metrics URL and on the
client URL, where gRPC (etcdctl) keeps working on the same port.  Where etcd
3.4.23 has the endpoint (/health, /version, /metrics, 404/405 answers) Engram
run with ENGRAM_EMULATE_ETCD_VERSION=3.4.23 is compared with a real etcd
3.4.23 byte for byte (status, body, the headers that matter); /livez and
/readyz, which 3.4.23 lacks, are checked against the reference
(../shared/reference/etcd-observability.md §3).

Run: ENGRAM_BIN=build/engram python3 tests/e2e/test_http.py -v
"""

import gzip
import http.client
import json
import os
import re
import signal
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Server  # noqa: E402

BIN = harness.engram_bin()
EMULATE_34 = {"ENGRAM_EMULATE_ETCD_VERSION": "3.4.23"}
TEXT = "text/plain; charset=utf-8"
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Headers whose values must agree with etcd (Go adds Date, and etcd 3.4's
# client URL adds CORS headers from its v2 handler chain; neither matters to
# probes or scrapers).
COMPARED_HEADERS = ("content-type", "x-content-type-options", "allow", "content-encoding")


class Reply(object):
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def header(self, name):
        return self.headers.get(name.lower())

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def key(self):
        """What must be equal between etcd and Engram."""
        return (self.status, self.body, tuple((h, self.headers.get(h)) for h in COMPARED_HEADERS))

    def __repr__(self):
        return "Reply(%d, %r, %r)" % (self.status, self.headers, self.body[:300])


def request(port, path, method="GET", headers=None, host="127.0.0.1", timeout=10):
    c = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        c.request(method, path, headers=headers or {})
        r = c.getresponse()
        body = r.read()
        return Reply(r.status, {k.lower(): v for k, v in r.getheaders()}, body)
    finally:
        c.close()


def with_metrics(server_args=(), env=None, binary=None, label=None):
    """A Server with its own --listen-metrics-urls port (never 2381)."""
    mport = harness.free_port()
    s = Server(binary or BIN, env=env, label=label,
               extra_args=["--listen-metrics-urls", "http://127.0.0.1:%d" % mport] + list(server_args))
    s.metrics_port = mport
    return s


def fill_until_nospace(server, tries=60):
    value = "x" * 20000
    for i in range(tries):
        server.ctl("put", "fill%d" % i, value)
        r = server.ctl("alarm", "list")
        if "NOSPACE" in r.out:
            return
    raise AssertionError("%s: no NOSPACE alarm after %d puts of 20 kB" % (server.label, tries))


class EngramCase(unittest.TestCase):
    maxDiff = None
    ENV = None
    ARGS = ()

    @classmethod
    def setUpClass(cls):
        cls.s = with_metrics(cls.ARGS, env=cls.ENV)
        cls.s.start()
        cls.client = cls.s.client_port
        cls.metrics = cls.s.metrics_port

    @classmethod
    def tearDownClass(cls):
        cls.s.cleanup()

    def tearDown(self):
        self.assertTrue(self.s.running(), "engram exited:\n" + self.s.log_tail())

    def get(self, path, port=None, **kw):
        return request(port or self.metrics, path, **kw)

    def assertReply(self, r, status, body, ctype=TEXT, nosniff=None):
        self.assertEqual((r.status, r.body), (status, body.encode() if isinstance(body, str) else body), r)
        self.assertEqual(r.header("content-type"), ctype, r)
        if nosniff is not None:
            self.assertEqual(r.header("x-content-type-options"), "nosniff" if nosniff else None, r)


# ---------------------------------------------------------------------------

class MetricsTest(EngramCase):

    def test_metrics_on_both_ports(self):
        for port in (self.metrics, self.client):
            r = self.get("/metrics", port)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.header("content-type"), METRICS_TYPE)
            self.assertIsNone(r.header("content-encoding"))
            text = r.text
            for family in ("etcd_server_has_leader", "etcd_server_health_success",
                           "promhttp_metric_handler_requests_total"):
                self.assertRegex(text, r"(?m)^# TYPE %s " % family, "port %d" % port)
            self.assertRegex(text, r'(?m)^etcd_server_has_leader 1$')

    def test_scrapes_are_counted(self):
        def count():
            m = re.search(r'(?m)^promhttp_metric_handler_requests_total\{code="200"\} (\d+)',
                          self.get("/metrics").text)
            return int(m.group(1))
        a = count()
        self.get("/metrics", self.client)
        b = count()
        self.assertEqual(b, a + 2)

    def test_gzip(self):
        r = self.get("/metrics", headers={"Accept-Encoding": "gzip"})
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header("content-encoding"), "gzip")
        self.assertEqual(r.header("content-type"), METRICS_TYPE)
        plain = gzip.decompress(r.body).decode()
        self.assertIn("# TYPE etcd_server_has_leader gauge\n", plain)
        # same families as the uncompressed answer
        fams = lambda t: sorted(re.findall(r"(?m)^# TYPE (\S+)", t))  # noqa: E731
        self.assertEqual(fams(plain), fams(self.get("/metrics").text))
        self.assertLess(len(r.body), len(plain) / 3)
        r = self.get("/metrics", self.client, headers={"Accept-Encoding": "deflate, gzip;q=0.8"})
        self.assertEqual(r.header("content-encoding"), "gzip")
        r = self.get("/metrics", headers={"Accept-Encoding": "identity"})
        self.assertIsNone(r.header("content-encoding"))

    def test_keep_alive(self):
        c = http.client.HTTPConnection("127.0.0.1", self.client, timeout=10)
        try:
            for path in ("/health", "/metrics", "/livez", "/version", "/readyz"):
                c.request("GET", path)
                r = c.getresponse()
                r.read()
                self.assertEqual(r.status, 200, path)
        finally:
            c.close()


class PortSharingTest(EngramCase):
    """gRPC (etcdctl) and HTTP on one client port, at the same time."""

    def test_etcdctl_and_http_together(self):
        stop = threading.Event()
        errors = []

        rounds = []

        def http_loop():
            while not stop.is_set():
                try:
                    for p in ("/metrics", "/health", "/readyz"):
                        r = request(self.client, p)
                        if r.status != 200:
                            errors.append((p, r))
                    rounds.append(1)
                except Exception as e:  # noqa: BLE001
                    errors.append(("http", repr(e)))

        watch = harness._Ctl(self.s.endpoint, ["watch", "shared/", "--prefix"], timeout=60)
        self.s.wait_watchers(1, what="watcher (etcdctl watch shared/ --prefix)")   # it sees every put below
        t = threading.Thread(target=http_loop)
        t.start()
        try:
            for i in range(20):
                r = self.s.ctl("put", "shared/%d" % i, "v%d" % i)
                self.assertEqual(r.rc, 0, r)
                r = self.s.ctl("get", "shared/%d" % i, "--print-value-only")
                self.assertEqual((r.rc, r.out), (0, "v%d\n" % i), r)
        finally:
            stop.set()
            t.join()
        self.assertEqual(errors, [])
        self.assertGreater(len(rounds), 0)
        r = self.s.ctl("endpoint", "status")
        self.assertEqual(r.rc, 0, r)
        watch.proc.send_signal(signal.SIGINT)
        out = watch.result().out
        self.assertIn("shared/19\nv19\n", out)

    def test_silent_client_does_not_block(self):
        # Connections that say nothing are closed after a few seconds and
        # never hold up others.
        silent = [socket.create_connection(("127.0.0.1", self.client)) for _ in range(20)]
        try:
            t = time.time()
            self.assertEqual(self.get("/health", self.client).status, 200)
            r = self.s.ctl("get", "x")
            self.assertEqual(r.rc, 0, r)
            self.assertLess(time.time() - t, 3)
            silent[0].settimeout(15)
            t = time.time()
            self.assertEqual(silent[0].recv(10), b"")  # closed by the server
            self.assertLess(time.time() - t, 10)
        finally:
            for s in silent:
                s.close()

    def test_http_10_and_split_request(self):
        s = socket.create_connection(("127.0.0.1", self.client), timeout=10)
        try:
            s.sendall(b"G")      # one byte that cannot start the HTTP/2 preface
            time.sleep(0.2)
            s.sendall(b"ET /livez HTTP/1.0\r\n\r\n")
            data = b""
            while True:
                b = s.recv(4096)
                if not b:
                    break
                data += b
        finally:
            s.close()
        self.assertTrue(data.startswith(b"HTTP/1.0 200 OK\r\n"), data)
        self.assertTrue(data.endswith(b"\r\n\r\nok\n"), data)

    def test_unix_socket_client_url(self):
        # etcd's unix URLs name a socket file relative to the working
        # directory: unix://localhost:<n> is the file "localhost:<n>".
        s = with_metrics()
        name = "localhost:%d" % harness.free_port()
        path = os.path.join(s.tmp, name)
        s.extra_args += ["--listen-client-urls", "%s,unix://%s" % (s.client_url, name)]
        self.addCleanup(s.cleanup)
        s.start()
        cwd = os.getcwd()
        os.chdir(s.tmp)
        try:
            r = harness.run_etcdctl("unix://" + name, ["put", "u", "1"])
        finally:
            os.chdir(cwd)
        self.assertEqual(r.rc, 0, r)
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.settimeout(10)
        c.connect(path)
        c.sendall(b"GET /health HTTP/1.0\r\n\r\n")
        data = b""
        while True:
            b = c.recv(4096)
            if not b:
                break
            data += b
        c.close()
        self.assertIn(b'\r\n\r\n{"health":"true","reason":""}', data)
        self.assertEqual(s.stop(), 0)
        self.assertFalse(os.path.exists(path), "socket file left behind")


class HealthTest(EngramCase):

    def test_health_ok(self):
        for port in (self.metrics, self.client):
            r = self.get("/health", port)
            self.assertReply(r, 200, '{"health":"true","reason":""}', nosniff=False)
        for q in ("?serializable=true", "?serializable=false", "?exclude=NOSPACE", "?exclude=NOSPACE&exclude=CORRUPT",
                  "?exclude="):
            self.assertReply(self.get("/health" + q), 200, '{"health":"true","reason":""}')

    def test_health_counters(self):
        def counts():
            t = self.get("/metrics").text
            return tuple(int(float(re.search(r"(?m)^etcd_server_health_%s (\S+)" % n, t).group(1)))
                         for n in ("success", "failures"))
        a = counts()
        self.get("/health")
        self.get("/health", self.client)
        self.assertEqual(counts(), (a[0] + 2, a[1]))

    def test_livez_readyz(self):
        for port in (self.metrics, self.client):
            self.assertReply(self.get("/livez", port), 200, "ok\n", nosniff=True)
            self.assertReply(self.get("/readyz", port), 200, "ok\n", nosniff=True)
        self.assertReply(self.get("/livez?verbose"), 200, "[+]serializable_read ok\nok\n")
        r = self.get("/readyz?verbose")
        self.assertEqual(r.status, 200)
        self.assertEqual(sorted(r.text.splitlines()),
                         sorted(["[+]data_corruption ok", "[+]serializable_read ok", "[+]linearizable_read ok",
                                 "[+]non_learner ok", "ok"]))
        self.assertTrue(r.text.endswith("ok\n"))
        r = self.get("/readyz?verbose&exclude=linearizable_read&exclude=nosuchcheck")
        self.assertEqual(sorted(r.text.splitlines()),
                         sorted(["[+]data_corruption ok", "[+]serializable_read ok", "[+]non_learner ok", "ok"]))
        self.assertReply(self.get("/livez?exclude=serializable_read&verbose"), 200, "ok\n")
        self.assertIn("some health checks cannot be excluded", self.s.log())

    def test_subpaths(self):
        for check in ("data_corruption", "serializable_read", "linearizable_read", "non_learner"):
            self.assertReply(self.get("/readyz/" + check), 200, "ok\n", nosniff=True)
            self.assertReply(self.get("/readyz/%s?verbose" % check, self.client), 200, "[+]%s ok\nok\n" % check)
        self.assertReply(self.get("/livez/serializable_read?verbose"), 200, "[+]serializable_read ok\nok\n")
        for bad in ("/livez/linearizable_read", "/livez/", "/readyz/", "/readyz/nope", "/readyz/non_learner/x"):
            self.assertReply(self.get(bad), 404, "404 page not found\n", nosniff=True)

    def test_probe_metrics(self):
        self.get("/livez")
        self.get("/readyz/non_learner")
        t = self.get("/metrics").text
        self.assertRegex(t, r'(?m)^etcd_server_healthcheck\{name="serializable_read",type="livez"\} 1$')
        self.assertRegex(t, r'(?m)^etcd_server_healthcheck\{name="non_learner",type="readyz"\} 1$')
        self.assertRegex(t, r'(?m)^etcd_server_healthchecks_total\{name="serializable_read",status="success",'
                            r'type="livez"\} [1-9]')

    def test_405(self):
        for path in ("/health", "/livez", "/readyz", "/livez/serializable_read", "/readyz/linearizable_read"):
            for method in ("POST", "PUT", "DELETE", "HEAD"):
                r = self.get(path, method=method)
                self.assertEqual(r.status, 405, (method, path, r))
                self.assertEqual(r.header("allow"), "GET")
                if method != "HEAD":
                    self.assertReply(r, 405, "Method Not Allowed\n", nosniff=True)
        r = self.get("/version", self.client, method="POST")
        self.assertReply(r, 405, "Method Not Allowed\n", nosniff=True)
        self.assertEqual(r.header("allow"), "GET")

    def test_version_and_404(self):
        r = self.get("/version", self.client)
        self.assertReply(r, 200, '{"etcdserver":"3.6.0","etcdcluster":"3.6.0","storage":"3.6.0"}',
                         ctype="application/json")
        # etcd serves /version on client URLs only
        self.assertReply(self.get("/version"), 404, "404 page not found\n")
        for port in (self.metrics, self.client):
            self.assertReply(self.get("/nope", port), 404, "404 page not found\n", nosniff=True)
            self.assertReply(self.get("/health/", port), 404, "404 page not found\n")

    def test_status_json(self):
        self.s.ctl("put", "sj", "1")
        j = json.loads(self.get("/status.json").text)
        self.assertEqual(j["name"], "s1")
        self.assertEqual(j["leader"], j["member_id"])
        self.assertTrue(j["is_leader"])
        self.assertGreaterEqual(j["revision"], 2)
        self.assertEqual(j["alarms"], [])
        self.assertGreater(j["db_size_quota"], 0)
        self.assertEqual(self.get("/").header("content-type"), "text/html; charset=utf-8")


class NospaceTest(EngramCase):
    """A real NOSPACE alarm: /health fails (unless excluded), /livez and /readyz don't."""
    ARGS = ("--quota-backend-bytes", "65536")

    def test_nospace(self):
        fill_until_nospace(self.s)
        for port in (self.metrics, self.client):
            self.assertReply(self.get("/health", port), 503, '{"health":"false","reason":"ALARM NOSPACE"}\n',
                             nosniff=True)
        self.assertReply(self.get("/health?serializable=true"), 503, '{"health":"false","reason":"ALARM NOSPACE"}\n')
        self.assertReply(self.get("/health?exclude=NOSPACE"), 200, '{"health":"true","reason":""}')
        self.assertReply(self.get("/health?exclude=CORRUPT"), 503, '{"health":"false","reason":"ALARM NOSPACE"}\n')
        self.assertReply(self.get("/livez"), 200, "ok\n")
        self.assertReply(self.get("/readyz"), 200, "ok\n")
        self.assertReply(self.get("/readyz/data_corruption"), 200, "ok\n")
        t = self.get("/metrics").text
        self.assertRegex(t, r"(?m)^etcd_server_health_failures [1-9]")
        self.assertIn('"alarms":["NOSPACE"]', self.get("/status.json").text)


class Emulate34Test(EngramCase):
    ENV = EMULATE_34

    def test_health_34_body(self):
        self.assertReply(self.get("/health"), 200, '{"health":"true"}', nosniff=False)
        self.assertReply(self.get("/version", self.client), 200, '{"etcdserver":"3.4.23","etcdcluster":"3.4.0"}',
                         ctype="application/json")
        # /livez and /readyz stay (3.4.29+ have them; probes need them)
        self.assertReply(self.get("/livez"), 200, "ok\n")


# ---------------------------------------------------------------------------
# Side by side with a real etcd 3.4.23 (Engram emulating 3.4.23).

class CompareWithEtcdTest(unittest.TestCase):
    maxDiff = None
    ARGS = ()

    @classmethod
    def setUpClass(cls):
        harness.need(harness.ETCD_BIN)   # no reference etcd: fail, never skip
        cls.ref = with_metrics(cls.ARGS, binary=harness.ETCD_BIN, label="etcd")
        cls.sut = with_metrics(cls.ARGS, env=EMULATE_34)
        try:
            cls.ref.start(wait=False)
            cls.sut.start(wait=False)
            cls.ref.wait_ready()
            cls.sut.wait_ready()
            # etcd serves HTTP a moment after its ready line
            deadline = time.time() + 10
            while time.time() < deadline:
                try:
                    if request(cls.ref.metrics_port, "/health").status == 200:
                        break
                except OSError:
                    pass
                time.sleep(0.05)
        except BaseException:
            cls.ref.cleanup()
            cls.sut.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.ref.cleanup()
        cls.sut.cleanup()

    def both(self, path, method="GET", metrics=True, headers=None):
        a = request(self.ref.metrics_port if metrics else self.ref.client_port, path, method, headers)
        b = request(self.sut.metrics_port if metrics else self.sut.client_port, path, method, headers)
        return a, b

    def same(self, path, method="GET", metrics=True, expect_status=None):
        ref, got = self.both(path, method, metrics)
        with self.subTest(path=path, method=method, port="metrics" if metrics else "client"):
            if expect_status is not None:
                self.assertEqual(ref.status, expect_status, "test bug: etcd answered %r" % ref)
            self.assertEqual(got.key(), ref.key(), "\netcd:   %r\nengram: %r" % (ref, got))
        return ref

    def test_health(self):
        for metrics in (True, False):
            self.same("/health", metrics=metrics, expect_status=200)
            self.same("/health?exclude=NOSPACE", metrics=metrics, expect_status=200)
            self.same("/health?exclude=NOSPACE&exclude=CORRUPT&exclude=", metrics=metrics, expect_status=200)

    def test_405_and_404(self):
        for metrics in (True, False):
            for method in ("POST", "PUT", "DELETE"):
                self.same("/health", method, metrics, expect_status=405)
            self.same("/nope", metrics=metrics, expect_status=404)
            self.same("/health/", metrics=metrics, expect_status=404)
            self.same("/metrics/", metrics=metrics, expect_status=404)
        for method in ("POST", "PUT"):
            self.same("/version", method, metrics=False, expect_status=405)

    def test_version(self):
        self.same("/version", metrics=False, expect_status=200)
        # etcd's metrics URL has no /version
        self.same("/version", metrics=True, expect_status=404)

    def test_livez_absent_in_34(self):
        # 3.4.23 predates /livez and /readyz (3.4.29+): nothing to compare;
        # Engram's answers are checked against the reference in HealthTest.
        ref, got = self.both("/livez")
        self.assertEqual(ref.status, 404, ref)
        self.assertEqual(got.status, 200, got)

    def test_metrics_headers(self):
        for metrics in (True, False):
            for enc in (None, "gzip"):
                h = {"Accept-Encoding": enc} if enc else {}
                ref, got = self.both("/metrics", metrics=metrics, headers=h)
                self.assertEqual(ref.status, 200)
                for name in ("content-type", "content-encoding"):
                    self.assertEqual(got.header(name), ref.header(name), (name, enc, metrics))
        # the families both have, same TYPE (the collector's tests go deeper)
        rt, gt = self.both("/metrics")
        types = lambda t: dict(re.findall(r"(?m)^# TYPE (\S+) (\S+)", t.text))  # noqa: E731
        r, g = types(rt), types(gt)
        for fam in ("etcd_server_health_success", "etcd_server_health_failures", "etcd_server_has_leader",
                    "promhttp_metric_handler_requests_total"):
            self.assertEqual(g.get(fam), r.get(fam), fam)


class CompareNospaceWithEtcdTest(CompareWithEtcdTest):
    ARGS = ("--quota-backend-bytes", "65536")

    def test_nospace(self):
        fill_until_nospace(self.ref)
        fill_until_nospace(self.sut)
        for metrics in (True, False):
            self.same("/health", metrics=metrics, expect_status=503)
            self.same("/health?exclude=NOSPACE", metrics=metrics, expect_status=200)
            self.same("/health?exclude=CORRUPT", metrics=metrics, expect_status=503)
            self.same("/health?exclude=", metrics=metrics, expect_status=503)

    # the healthy-server cases do not hold once full
    test_health = None
    test_metrics_headers = None


class SignalTest(unittest.TestCase):

    def test_sigterm_with_open_connections(self):
        s = with_metrics()
        self.addCleanup(s.cleanup)
        s.start()
        keep = [http.client.HTTPConnection("127.0.0.1", p, timeout=10) for p in (s.metrics_port, s.client_port)]
        for c in keep:
            c.request("GET", "/health")
            c.getresponse().read()     # idle keep-alive connections stay open
        silent = socket.create_connection(("127.0.0.1", s.client_port))
        watch = harness._Ctl(s.endpoint, ["watch", "w"], timeout=30)
        s.wait_watchers(1, what="watcher (etcdctl watch w)")   # a Watch stream is open at SIGTERM
        t = time.time()
        self.assertEqual(s.stop(timeout=15), 0, s.log_tail())
        self.assertLess(time.time() - t, 8)
        self.assertIn("stopped server", s.log())
        for c in keep:
            c.close()
        silent.close()
        watch.proc.kill()
        watch.result()

    def test_default_metrics_url_in_use_is_not_fatal(self):
        # Engram's default --listen-metrics-urls (127.0.0.1:2381; etcd has
        # none) cannot make a server fail to start; an explicit one can.
        blocker = socket.socket()
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            blocker.bind(("127.0.0.1", 2381))
            blocker.listen(1)
        except OSError:
            blocker.close()
            blocker = None     # someone has it already: the same situation
        try:
            s = Server(BIN)
            self.addCleanup(s.cleanup)
            s.start()
            self.assertEqual(s.ctl("put", "a", "1").rc, 0)
            if blocker is not None:
                self.assertIn("cannot serve metrics on the default metrics URL", s.log())
            s.stop()
            port = blocker.getsockname()[1] if blocker else 2381
            t = Server(BIN, extra_args=["--listen-metrics-urls", "http://127.0.0.1:%d" % port])
            self.addCleanup(t.cleanup)
            with self.assertRaises(harness.ServerError):
                t.start(timeout=10)
            self.assertIn("failed to listen on metrics URLs", t.log())
        finally:
            if blocker is not None:
                blocker.close()


if __name__ == "__main__":
    unittest.main()
