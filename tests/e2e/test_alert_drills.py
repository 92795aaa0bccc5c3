"""Alert drills in real Prometheus (issue 16): the alerts of
alerts/engram-rules.yaml fire on real Engram members when the event they name
is induced, and stay silent on a clean member under load.

Time scale 60x. The real rules wait 1 to 15 minutes (`for: 10m`, rate windows
of 5m and 15m), so a drill with them takes more than 15 minutes. This test
runs Prometheus on a copy of the rules in which every duration is divided by
60: minutes become seconds. The copy is generated at test time from
alerts/engram-rules.yaml (scaled_rules() below) and checked with
`promtool check rules`. The transformation:

  - every `for: <d>`                      -> d / 60   (10m -> 10s, 0m -> 0s)
  - every range selector `[<d>]`          -> d / 60   ([5m] -> [5s], [120s] -> [2s], [4h] -> [4m])
  - every subquery `[<d>:<r>]`            -> both / 60  ([15m:1m] -> [15s:1s])
  - every `offset <d>`                    -> d / 60   (offset 6h -> offset 6m)

Nothing else changes: names, labels, annotations, thresholds and all numbers
stay as they are, including the per-second units of rate() (a threshold of
5 failures/s still means 5 failures per real second) and predict_linear's
horizon argument (a number, 4*60*60). test_0 checks that the copy differs from
the original only in those durations. Prometheus scrapes every member's
/metrics on its client port every 1 s and evaluates the rules every 1 s, so
one scaled minute is one scrape and one evaluation (in production the mixin
assumes 30 s scrapes: two per minute).

One Prometheus and one Engram member per drill, all started in parallel; the
alerts are read from Prometheus' /api/v1/alerts (a poller every 0.5 s) and
identified by the member's job and instance labels (every job name matches
the rules' job=~".*etcd.*"):

  etcd-drill-fsync      ENGRAM_FAILPOINTS wal-fsync=sleep(600), a few puts/s
                        -> etcdHighFsyncDurations (p99 ~1.02 s > 0.5; the
                           critical rule, > 1, fires too, reported not asserted)
  etcd-drill-commit     mvcc-sync=sleep(400) (every periodic data-file sync,
                        the one etcd_disk_backend_commit_duration_seconds
                        observes, takes >= 400 ms), a few puts/s
                        -> etcdHighCommitDurations (p99 ~0.51 s > 0.25)
  etcd-drill-proposals  --heartbeat-interval 10 --election-timeout 100, so the
                        request timeout is 5 s + 2 x 100 ms = 5.2 s; its WAL
                        fdatasync is slowed to 8 s at run time by strace's
                        syscall injection (design doc truthful-signals.md
                        section 5), and 100 Put RPCs are kept in flight (4
                        curl processes, 25 HTTP/2 connections each, see
                        rawgrpc.py): every one of them times out after 5.2 s
                        ("etcdserver: request timed out") and counts in
                        etcd_server_proposals_failed_total, ~19 failures/s
                        -> etcdHighNumberOfFailedProposals (rate > 5/s)
                        Why strace and not the failpoint: failpoints are set
                        only at start, and with wal-fsync=sleep(N) above the
                        request timeout the member never becomes ready (its
                        boot-time publish proposal times out on every retry,
                        because each attempt waits for one N ms fsync).
  etcd-drill-quota      --quota-backend-bytes 262144, filled with 8 KiB puts
                        until "database space exceeded" (the file is then at
                        ~97% of the quota; asserted before waiting)
                        -> etcdDatabaseQuotaLowSpace (> 95%)
  etcd-clean            no failpoint, a steady light load (put, get, a txn
                        every 10th round, an open watch; ~4 rounds/s) for
                        CLEAN_SECONDS = 60 s of real time: a real clean minute,
                        and 60 scaled minutes, far more than one scaled minute
                        plus the longest scaled window (15 s) and `for` (15 s).
                        None of the drilled alerts may be pending or firing
                        for it at any poll, nor in Prometheus' own ALERTS
                        series; the alerts' inputs must have had values during
                        the window (so the silence is not for want of data).

etcdNoLeader cannot be induced on Engram today: a single voter always leads
itself, a multi-member --initial-cluster is refused at start, and MemberAdd
(what makes etcd's single member leaderless) answers Unimplemented. The test
checks both refusals (so it fails, and asks for the real drill, once either
works), and that etcdNoLeader stayed silent and etcd_server_has_leader was 1
on every member throughout.

Timing: the drills assert that the alert goes firing, within a generous
deadline (the event + the scaled window + `for` + DEADLINE_SLACK); the times
observed (firing and pending after the induced event, and firing minus
Prometheus' activeAt, nominally `for` + at most two 1 s scrapes/evaluations)
are printed as notes at the end.

Needs etcdctl, curl, prometheus, promtool and strace (ptrace: as root, no Yama
restriction). Ends with a line `N passed, M failed`.

Run: ENGRAM_BIN=build/engram python3 tests/e2e/test_alert_drills.py -v
"""

import datetime
import glob
import json
import os
import re
import struct
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import rawgrpc  # noqa: E402
import test_prometheus_live as live  # noqa: E402  (Prometheus process wrapper, http_get)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RULES = os.path.join(ROOT, "alerts", "engram-rules.yaml")

SCALE = 60                      # real seconds per scaled second
CLEAN_SECONDS = 60              # observation of the clean member, real seconds
DEADLINE_SLACK = 45.0           # CI slack on top of window + for, per drill
STALL_MS = 8000                 # the proposals member's WAL fdatasync under strace
WRITERS, WRITER_PROCS = 100, 4  # Put RPCs in flight on the proposals member, curl processes
QUOTA = 262144

FSYNC, COMMIT, PROPOSALS, QUOTA_ALERT, NO_LEADER = (
    "etcdHighFsyncDurations", "etcdHighCommitDurations", "etcdHighNumberOfFailedProposals",
    "etcdDatabaseQuotaLowSpace", "etcdNoLeader")
DRILLED = (FSYNC, COMMIT, PROPOSALS, QUOTA_ALERT, NO_LEADER)

J_FSYNC, J_COMMIT, J_PROPOSALS, J_QUOTA, J_CLEAN = (
    "etcd-drill-fsync", "etcd-drill-commit", "etcd-drill-proposals", "etcd-drill-quota", "etcd-clean")

NOTES = []


def note(msg):
    NOTES.append(msg)


# ---------------------------------------------------------------------------
# The 60x time-scaled rules

_UNIT_MS = {"ms": 1, "s": 1000, "m": 60000, "h": 3600000, "d": 86400000, "w": 604800000, "y": 31536000000}
_DUR = r"(?:\d+(?:ms|[smhdwy]))+"
_FOR_RE = re.compile(r"^(\s*for:\s*)(%s)(\s*)$" % _DUR, re.M)
_RANGE_RE = re.compile(r"\[(%s)(?::(%s)?)?\]" % (_DUR, _DUR))
_OFFSET_RE = re.compile(r"\boffset(\s+)(-?)(%s)\b" % _DUR)


def duration_ms(d):
    return sum(int(n) * _UNIT_MS[u] for n, u in re.findall(r"(\d+)(ms|[smhdwy])", d))


def fmt_ms(ms):
    if ms % 60000 == 0 and ms:
        return "%dm" % (ms // 60000)
    if ms % 1000 == 0:
        return "%ds" % (ms // 1000)
    return "%dms" % ms


def scale(d):
    ms = duration_ms(d)
    assert ms % SCALE == 0, "duration %s is not a whole number of ms once divided by %d" % (d, SCALE)
    return fmt_ms(ms // SCALE)


def _sub_range(m):
    rng, res = m.group(1), m.group(2)
    if ":" not in m.group(0):
        return "[%s]" % scale(rng)
    return "[%s:%s]" % (scale(rng), scale(res) if res else "")


def scaled_rules(text):
    """alerts/engram-rules.yaml with every `for`, range selector, subquery
    range/resolution and offset divided by SCALE (see the module docstring)."""
    text = _FOR_RE.sub(lambda m: m.group(1) + scale(m.group(2)) + m.group(3), text)
    text = _RANGE_RE.sub(_sub_range, text)
    return _OFFSET_RE.sub(lambda m: "offset" + m.group(1) + m.group(2) + scale(m.group(3)), text)


def without_durations(text):
    """The text with every duration the transformation touches replaced by a
    placeholder: equal for the original and the scaled copy."""
    text = _FOR_RE.sub(lambda m: m.group(1) + "<D>" + m.group(3), text)
    text = _RANGE_RE.sub(lambda m: "[<D>%s]" % (":<D>" if ":" in m.group(0) else ""), text)
    return _OFFSET_RE.sub(lambda m: "offset" + m.group(1) + "<D>", text)


# ---------------------------------------------------------------------------
# Prometheus

class ScaledPrometheus(live.Prometheus):
    """test_prometheus_live's Prometheus (query, alerts, stop), on the scaled rules."""

    def __init__(self, targets, tmp, rules_path):
        super().__init__(targets, tmp, rules_path=rules_path, scrape_timeout="1s")

    def rules(self):
        """{alertname: [(query, for seconds, labels)]} as Prometheus loaded them."""
        code, body = live.http_get(self.url("/api/v1/rules"))
        assert code == 200, body
        out = {}
        for g in json.loads(body)["data"]["groups"]:
            for r in g["rules"]:
                if r.get("type") == "alerting":
                    out.setdefault(r["name"], []).append((r["query"], float(r["duration"]), r.get("labels", {})))
        return out


_TS_RE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")


def parse_ts(s):
    m = _TS_RE.match(s)
    if not m:
        return None
    base = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")
    tz = m.group(3)
    off = 0 if tz == "Z" else (1 if tz[0] == "+" else -1) * (int(tz[1:3]) * 3600 + int(tz[4:6]) * 60)
    frac = float("0." + m.group(2)) if m.group(2) else 0.0
    return base.replace(tzinfo=datetime.timezone.utc).timestamp() - off + frac


class AlertLog(object):
    """Polls /api/v1/alerts every 0.5 s and keeps, per (job, alertname,
    severity, state), the first wall time it was seen and Prometheus' activeAt."""

    def __init__(self, prom):
        self.prom = prom
        self.lock = threading.Lock()
        self.first = {}        # (job, alertname, severity, state) -> (wall time, activeAt, labels)
        self.polls = 0
        self.errors = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="alert-log", daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            try:
                alerts = self.prom.alerts()
                now = time.time()
                with self.lock:
                    self.polls += 1
                    for a in alerts:
                        lab = a["labels"]
                        key = (lab.get("job"), lab.get("alertname"), lab.get("severity"), a["state"])
                        if key not in self.first:
                            self.first[key] = (now, parse_ts(a.get("activeAt", "")), dict(lab))
            except Exception as e:  # Prometheus busy: try again
                with self.lock:
                    self.errors.append(repr(e))
            self.stop.wait(0.5)

    def seen(self, job=None, alertname=None, state=None, severity=None):
        """[(key, (wall, activeAt, labels))] matching, earliest first."""
        with self.lock:
            out = [(k, v) for k, v in self.first.items()
                   if (job is None or k[0] == job) and (alertname is None or k[1] == alertname)
                   and (state is None or k[3] == state) and (severity is None or k[2] == severity)]
        return sorted(out, key=lambda kv: kv[1][0])

    def close(self):
        self.stop.set()
        self.thread.join(5)


# ---------------------------------------------------------------------------
# Load

class Loop(threading.Thread):
    """Calls step() every `period` seconds (at most) until stopped."""

    def __init__(self, name, step, period, stop):
        super().__init__(name=name, daemon=True)
        self.step, self.period, self.stop_ev = step, period, stop
        self.ok = self.failed = 0
        self.last_error = None

    def run(self):
        while not self.stop_ev.is_set():
            t = time.time()
            try:
                r = self.step()
                if r is None or r.rc == 0:
                    self.ok += 1
                else:
                    self.failed += 1
                    self.last_error = r.err.strip()[-300:]
            except Exception as e:
                self.failed += 1
                self.last_error = repr(e)
            self.stop_ev.wait(max(0.0, self.period - (time.time() - t)))


class Strace(object):
    """strace -f -e inject=fdatasync:delay_enter=<ms> -P <path> -p <pid>:
    slows that server's fdatasync calls on one file at run time (design doc
    truthful-signals.md section 5)."""

    def __init__(self, server, path, delay_ms, log_path):
        self.server, self.path, self.delay_ms, self.log_path = server, path, delay_ms, log_path
        self.proc = None

    def start(self):
        self.proc = harness.strace_fdatasync(self.server, self.path, self.delay_ms, self.log_path)
        # drain its stderr (one line per attached thread) so it never blocks
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()   # detaches; the tracee goes on
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class PutFlood(threading.Thread):
    """Keeps `n` unary Put RPCs in flight on one member: a curl process with n
    HTTP/2 connections (--parallel-immediate: curl 7.88 fails transfers it
    multiplexes on one prior-knowledge connection), started again as soon as
    they have all answered."""

    def __init__(self, server, n, stop, delay, tmp):
        super().__init__(name="put-flood", daemon=True)
        self.server, self.n, self.stop_ev, self.delay = server, n, stop, delay
        req = rawgrpc.put_req(b"/drill/proposal", b"v" * 64)
        self.body = os.path.join(tmp, "put-%d.bin" % id(self))
        with open(self.body, "wb") as f:
            f.write(b"\0" + struct.pack(">I", len(req)) + req)
        self.proc = None
        self.rounds = self.answered = self.slow = 0     # slow: answered after >= 5 s

    def run(self):
        if self.stop_ev.wait(self.delay):
            return
        url = "http://%s/etcdserverpb.KV/Put" % self.server.endpoint
        argv = [rawgrpc.curl(), "-sS", "--parallel", "--parallel-immediate", "--parallel-max", str(self.n),
                "--http2-prior-knowledge", "--max-time", "30", "-X", "POST",
                "-H", "content-type: application/grpc", "-H", "te: trailers", "--data-binary", "@" + self.body,
                "-o", "/dev/null", "-w", "%{stderr}RESULT %{http_code} %{time_total}\\n"] + [url] * self.n
        while not self.stop_ev.is_set():
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE, preexec_fn=harness._pdeathsig)
            try:
                _, err = self.proc.communicate(timeout=45)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                _, err = self.proc.communicate()
            self.rounds += 1
            for m in re.finditer(rb"RESULT (\d+) ([0-9.]+)", err):
                if m.group(1) == b"200":
                    self.answered += 1
                    self.slow += float(m.group(2)) >= 5.0
            if self.proc.returncode not in (0, None) and not self.stop_ev.is_set():
                time.sleep(0.5)    # refused (e.g. the member died): do not spin

    def kill(self):
        p = self.proc
        if p is not None and p.poll() is None:
            p.kill()


def etcdctl(server, *args, **kw):
    return harness.run_etcdctl(server.endpoint, ["--command-timeout=30s"] + list(args), **kw)


# ---------------------------------------------------------------------------

class AlertDrillsTest(unittest.TestCase):
    maxDiff = None

    @classmethod
    def setUpClass(cls):
        for tool in (harness.ETCDCTL_BIN, "curl", "prometheus", "promtool"):
            harness.need(tool)
        harness.need("strace", "strace")
        cls.t_setup = time.time()
        cls.tmp = harness.make_temp_dir("e2e-drills-")
        cls.servers = {}
        cls.stop = threading.Event()
        cls.loads, cls.floods = [], []
        cls.strace = None
        cls.prom = cls.alerts = None
        try:
            cls._setup()
        except BaseException:
            cls._teardown()
            raise

    @classmethod
    def _setup(cls):
        # 1. The scaled rules, checked by promtool.
        with open(RULES) as f:
            cls.rules_text = f.read()
        cls.scaled_text = scaled_rules(cls.rules_text)
        cls.scaled_path = os.path.join(cls.tmp, "engram-rules.scaled.yaml")
        with open(cls.scaled_path, "w") as f:
            f.write("# GENERATED by tests/e2e/test_alert_drills.py from alerts/engram-rules.yaml:\n"
                    "# every `for`, range selector, subquery and offset divided by %d\n" % SCALE)
            f.write(cls.scaled_text)
        p = subprocess.run([harness.need("promtool"), "check", "rules", cls.scaled_path],
                           capture_output=True, text=True, timeout=60)
        cls.promtool = p
        if p.returncode != 0:
            raise AssertionError("promtool check rules on the scaled copy failed:\n%s%s" % (p.stdout, p.stderr))

        # 2. Members, started in parallel.
        off = ["--listen-metrics-urls", ""]
        cls.servers = {
            J_FSYNC: harness.Server(extra_args=off, env={"ENGRAM_FAILPOINTS": "wal-fsync=sleep(600)"}, label="fsync"),
            J_COMMIT: harness.Server(extra_args=off, env={"ENGRAM_FAILPOINTS": "mvcc-sync=sleep(400)"}, label="commit"),
            J_PROPOSALS: harness.Server(extra_args=off + ["--heartbeat-interval", "10", "--election-timeout", "100"],
                                        label="proposals"),
            J_QUOTA: harness.Server(extra_args=off + ["--quota-backend-bytes", str(QUOTA)], label="quota"),
            J_CLEAN: harness.Server(extra_args=off, label="clean"),
        }
        for s in cls.servers.values():
            s.start(wait=False)
        for s in cls.servers.values():
            s.wait_ready(timeout=60)

        # 3. Prometheus, until it has scraped every member.
        cls.prom = ScaledPrometheus([(job, s.endpoint) for job, s in cls.servers.items()], cls.tmp,
                                    cls.scaled_path)
        cls.prom.wait_for(lambda: len(cls.prom.query('up{job=~"etcd-.*"} == 1')) == len(cls.servers),
                          30, "prometheus to scrape every member")
        cls.alerts = AlertLog(cls.prom)

        # 4. The induced events and the loads, all at once.
        cls.events = {}
        cls.t_load = time.time()
        stop = cls.stop

        fs, cm, cl = cls.servers[J_FSYNC], cls.servers[J_COMMIT], cls.servers[J_CLEAN]
        cls.fsync_load = Loop("fsync-puts", lambda: etcdctl(fs, "put", "/drill/fsync", "v" * 100), 0.25, stop)
        cls.commit_load = Loop("commit-puts", lambda: etcdctl(cm, "put", "/drill/commit", "v" * 100), 0.25, stop)
        cls.events[J_FSYNC] = cls.events[J_COMMIT] = cls.t_load

        # the clean member: put, get, a txn every 10th round, an open watch
        cls.watch = subprocess.Popen([harness.ETCDCTL_BIN, "--endpoints", cl.endpoint, "watch", "--prefix",
                                      "/registry/"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env=harness.clean_env({"ETCDCTL_API": "3"}), preexec_fn=harness._pdeathsig)
        rounds = [0]

        def clean_step():
            i = rounds[0]
            rounds[0] += 1
            r = etcdctl(cl, "put", "/registry/pods/ns/p%d" % (i % 50), "v" * 200)
            if r.rc != 0:
                return r
            r = etcdctl(cl, "get", "/registry/pods/", "--prefix", "--keys-only")
            if r.rc == 0 and i % 10 == 0:
                # compares, success ops, failure ops: each section ends with an empty line
                r = etcdctl(cl, "txn", stdin='mod("/registry/pods/ns/p0") > "0"\n\nput /registry/configmaps/x y\n\n\n')
            return r
        cls.clean_load = Loop("clean-load", clean_step, 0.25, stop)
        cls.loads = [cls.fsync_load, cls.commit_load, cls.clean_load]
        for t in cls.loads:
            t.start()

        # the quota member: fill it until NOSPACE (once; the size stays)
        q = cls.servers[J_QUOTA]
        cls.quota_result = {}

        def fill():
            big = "x" * 8192
            for i in range(400):
                r = etcdctl(q, "put", "k%d" % i, big)
                if r.rc != 0:
                    cls.quota_result["error"] = r.err.strip()
                    cls.events[J_QUOTA] = time.time()
                    break
            text = q.metrics_text()
            cls.quota_result["size"] = harness.metric_value(text, "etcd_mvcc_db_total_size_in_bytes")
            cls.quota_result["quota"] = harness.metric_value(text, "etcd_server_quota_backend_bytes")
        cls.quota_fill = threading.Thread(target=fill, name="quota-fill", daemon=True)
        cls.quota_fill.start()

        # the proposals member: WAL fdatasync slowed past the request timeout, then 100 writers
        pr = cls.servers[J_PROPOSALS]
        try:
            segs = glob.glob(os.path.join(pr.data_dir, "member", "wal", "*.wal"))
            if len(segs) != 1:
                raise AssertionError("expected one WAL segment on the proposals member, found %r" % segs)
            cls.strace = Strace(pr, segs[0], STALL_MS, os.path.join(cls.tmp, "strace.out"))
            cls.strace.start()
            cls.failed_before = harness.metric_value(pr.metrics_text(), "etcd_server_proposals_failed_total")
            per = WRITERS // WRITER_PROCS
            # staggered, so the failures arrive spread over the 5.2 s timeout
            cls.floods = [PutFlood(pr, per, stop, i * 5.2 / WRITER_PROCS, cls.tmp) for i in range(WRITER_PROCS)]
            for f in cls.floods:
                f.start()
            cls.events[J_PROPOSALS] = time.time()
            cls.proposals_error = None
        except AssertionError as e:
            cls.proposals_error = str(e)

    @classmethod
    def _teardown(cls):
        cls.stop.set()
        for f in cls.floods:
            f.kill()
        if getattr(cls, "watch", None) is not None:
            cls.watch.kill()
            cls.watch.wait()
        if cls.strace is not None:
            cls.strace.stop()
        for t in cls.loads + cls.floods:
            t.join(30)
        if cls.alerts is not None:
            cls.alerts.close()
        if cls.prom is not None:
            cls.prom.stop()
        for s in cls.servers.values():
            s.cleanup()
        harness.remove_temp_dir(cls.tmp)

    @classmethod
    def tearDownClass(cls):
        cls._teardown()

    # -- helpers ------------------------------------------------------------
    def rule(self, name):
        rules = self.prom.rules()
        self.assertIn(name, rules, "alert %s not loaded by Prometheus" % name)
        return rules[name]

    def value_expr(self, name, job):
        """The alert's expression without its final comparison, for one job:
        the value the threshold is compared with."""
        q = self.rule(name)[0][0]
        q = re.sub(r"\s*(>|<|==|!=|>=|<=)\s*(bool\s+)?[-+0-9.e]+\s*$", "", q.strip())
        self.assertIn('job=~".*etcd.*"', q)
        return q.replace('job=~".*etcd.*"', 'job="%s"' % job)

    def q(self, expr):
        try:
            return self.prom.query(expr)
        except AssertionError as e:
            return "query failed: %s" % e

    def diagnostics(self, name, job):
        s = self.servers[job]
        states = [(k[2], k[3], round(v[0] - self.events.get(job, self.t_load), 1))
                  for k, v in self.alerts.seen(job=job, alertname=name)]
        return ("\n  alert states seen for %s (severity, state, s after the event): %r"
                "\n  value now (%s): %r"
                "\n  up: %r"
                "\n  %s log tail:\n%s"
                % (job, states, self.value_expr(name, job), self.q(self.value_expr(name, job)),
                   self.q('up{job="%s"}' % job), s.label, s.log_tail() if hasattr(s, "log_tail") else ""))

    def drill_state(self, job):
        """What the induced event did so far, for a failure message."""
        if job == J_PROPOSALS:
            try:
                failed = harness.metric_value(self.servers[job].metrics_text(), "etcd_server_proposals_failed_total")
            except AssertionError as e:
                failed = str(e)
            return ("\n  etcd_server_proposals_failed_total %r (%r before the stall); Put RPCs answered %d, after >= 5 s %d"
                    % (failed, getattr(self, "failed_before", None), sum(f.answered for f in self.floods),
                       sum(f.slow for f in self.floods)))
        load = {J_FSYNC: self.fsync_load, J_COMMIT: self.commit_load}.get(job)
        if load is not None:
            return "\n  puts: %d ok, %d failed (last error %r)" % (load.ok, load.failed, load.last_error)
        if job == J_QUOTA:
            return "\n  fill: %r" % (self.quota_result,)
        return ""

    def wait_firing(self, name, job, window_s, severity=None):
        """Waits until `name` is firing for `job`'s member; returns the first
        firing (wall, activeAt, labels). Notes the times."""
        self.assertIn(job, self.events, "the induced event of %s never happened" % job)
        ev = self.events[job]
        for_s = max(d for _, d, _ in self.rule(name))
        deadline = ev + window_s + for_s + DEADLINE_SLACK
        while True:
            hit = [kv for kv in self.alerts.seen(job=job, alertname=name, state="firing", severity=severity)]
            if hit or time.time() >= deadline:
                break
            time.sleep(0.5)
        if not hit:
            self.fail("%s did not fire for %s within %.0f s of the induced event (window %.0f s + for %.0f s + "
                      "%.0f s slack)%s" % (name, job, deadline - ev, window_s, for_s, DEADLINE_SLACK,
                                           self.drill_state(job) + self.diagnostics(name, job)))
        s = self.servers[job]
        for (_, _, sev, _), (wall, active_at, labels) in hit:
            self.assertEqual(job, labels.get("job"))
            self.assertEqual(s.endpoint, labels.get("instance"), "the alert names another member: %r" % labels)
            pend = self.alerts.seen(job=job, alertname=name, state="pending", severity=sev)
            note("%s (%s) on %s: firing %.1f s after the induced event; pending since %s; "
                 "firing - activeAt = %s (for %.0f s + up to two 1 s scrapes/evaluations)"
                 % (name, sev, job, wall - ev,
                    ("%+.1f s (activeAt)" % (active_at - ev)) if active_at else
                    ("%+.1f s (poll)" % (pend[0][1][0] - ev) if pend else "?"),
                    ("%.1f s" % (wall - active_at)) if active_at else "?", for_s))
        return hit[0][1]

    # -- tests ----------------------------------------------------------------
    def test_0_scaled_rules(self):
        """The scaled copy differs from alerts/engram-rules.yaml only in the
        scaled durations; Prometheus loaded it with the scaled `for`s."""
        self.assertEqual(without_durations(self.rules_text), without_durations(self.scaled_text))
        self.assertIn("SUCCESS", self.promtool.stdout + self.promtool.stderr)
        self.assertNotEqual(self.rules_text, self.scaled_text)
        expect = {FSYNC: (10, "[5s]"), COMMIT: (10, "[5s]"), PROPOSALS: (15, "[15s]"),
                  QUOTA_ALERT: (10, "[5s]"), NO_LEADER: (1, None)}
        rules = self.prom.rules()
        for name, (for_s, window) in expect.items():
            with self.subTest(alert=name):
                self.assertIn(name, rules)
                for query, dur, _ in rules[name]:
                    self.assertEqual(for_s, dur, query)
                    if window:
                        self.assertIn(window, query)
                    self.assertNotRegex(query, r"\[\d+m\]")
        note("scaled rules: %d alerting rules loaded; for: %s" % (
            sum(len(v) for v in rules.values()),
            ", ".join("%s %gs" % (n, rules[n][0][1]) for n in DRILLED)))

    def test_1_high_fsync_durations(self):
        """wal-fsync=sleep(600) under a few puts/s: etcdHighFsyncDurations fires."""
        self.wait_firing(FSYNC, J_FSYNC, 5, severity="warning")
        # the critical rule (p99 > 1 s; sleep(600) gives ~1.02 s): reported, not asserted
        deadline = time.time() + 10
        while time.time() < deadline and not self.alerts.seen(job=J_FSYNC, alertname=FSYNC, state="firing",
                                                              severity="critical"):
            time.sleep(0.5)
        if self.alerts.seen(job=J_FSYNC, alertname=FSYNC, state="firing", severity="critical"):
            self.wait_firing(FSYNC, J_FSYNC, 5, severity="critical")
        else:
            note("%s (critical, p99 > 1 s) had not fired on %s when the warning did (p99 %r)"
                 % (FSYNC, J_FSYNC, self.q(self.value_expr(FSYNC, J_FSYNC))))
        self.assertGreater(self.fsync_load.ok, 0, self.fsync_load.last_error)

    def test_2_high_commit_durations(self):
        """mvcc-sync=sleep(400) under a few puts/s: etcdHighCommitDurations fires."""
        self.wait_firing(COMMIT, J_COMMIT, 5)
        self.assertGreater(self.commit_load.ok, 0, self.commit_load.last_error)

    def test_3_high_number_of_failed_proposals(self):
        """WAL fdatasync stalled 8 s (> the 5.2 s request timeout) by strace, 100
        Put RPCs in flight: > 5 proposal failures/s, etcdHighNumberOfFailedProposals fires."""
        if self.proposals_error:
            self.fail("the proposals drill could not be set up: " + self.proposals_error)
        # window 15 s, plus the request timeout before the first failure
        self.wait_firing(PROPOSALS, J_PROPOSALS, 15 + 5.2)
        pr = self.servers[J_PROPOSALS]
        failed = harness.metric_value(pr.metrics_text(), "etcd_server_proposals_failed_total")
        elapsed = time.time() - self.events[J_PROPOSALS]
        answered = sum(f.answered for f in self.floods)
        slow = sum(f.slow for f in self.floods)
        peak = self.q('max_over_time(%s[60s:1s])' % self.value_expr(PROPOSALS, J_PROPOSALS))
        note("%s: %d proposals failed in %.0f s since the stall began (%.1f/s); %d Put RPCs answered so far, "
             "%d of them after >= 5 s; peak of the alert's rate in Prometheus %s/s" % (
                 J_PROPOSALS, failed - self.failed_before, elapsed, (failed - self.failed_before) / elapsed,
                 answered, slow, peak[0]["value"][1] if isinstance(peak, list) and peak else peak))
        # What a client sees meanwhile (etcd's text, after the request timeout).
        r = etcdctl(pr, "put", "/drill/one", "v")
        self.assertNotEqual(0, r.rc, r)
        self.assertIn("etcdserver: request timed out", r.err)

    def test_4_database_quota_low_space(self):
        """--quota-backend-bytes 256 KiB filled until NOSPACE: etcdDatabaseQuotaLowSpace fires."""
        self.quota_fill.join(60)
        res = self.quota_result
        self.assertIn("database space exceeded", res.get("error", ""), "the quota member never reached NOSPACE: %r"
                      % res)
        ratio = res["size"] / res["quota"]
        self.assertGreater(ratio, 0.95, "induced event too weak: the file is only %.1f%% of the quota at NOSPACE"
                           % (100 * ratio))
        note("%s: NOSPACE reached %.1f s after the loads began, file at %.1f%% of the quota"
             % (J_QUOTA, self.events[J_QUOTA] - self.t_load, 100 * ratio))
        self.wait_firing(QUOTA_ALERT, J_QUOTA, 0)

    def test_5_clean_member_stays_silent(self):
        """A clean member under steady light load for CLEAN_SECONDS (a real
        minute, 60 scaled minutes): none of the drilled alerts is ever pending
        or firing for it, and their inputs had values meanwhile."""
        end = self.t_load + CLEAN_SECONDS
        while time.time() < end:
            time.sleep(0.5)
        window = int(time.time() - self.t_load) + 2
        seen = self.alerts.seen(job=J_CLEAN)
        drilled = [(k, round(v[0] - self.t_load, 1)) for k, v in seen if k[1] in DRILLED]
        others = sorted({(k[1], k[3]) for k, v in seen if k[1] not in DRILLED})
        self.assertEqual([], drilled, "drilled alerts pending/firing on the clean member (key, s after load start)")
        # Prometheus' own record of every evaluation (no gaps between polls)
        rec = self.q('count_over_time(ALERTS{job="%s", alertname=~"%s"}[%ds])' % (J_CLEAN, "|".join(DRILLED), window))
        self.assertEqual([], rec, "ALERTS series of the clean member")
        self.assertGreater(self.alerts.polls, window, "alert poller errors: %r" % self.alerts.errors[-3:])
        # Not silent for want of data: each alert's input had a value on most evaluations.
        lines = []
        for name in DRILLED:
            v = self.value_expr(name, J_CLEAN)
            n = self.q('count_over_time(((%s) >= 0)[%ds:1s])' % (v, window))
            agg = "min" if name == NO_LEADER else "max"
            m = self.q('%s_over_time((%s)[%ds:1s])' % (agg, v, window))
            with self.subTest(alert=name):
                self.assertTrue(isinstance(n, list) and n and float(n[0]["value"][1]) >= window / 2,
                                "the input of %s had values on too few of the %d evaluations: %r" % (name, window, n))
            lines.append("%s %s %s" % (name, agg, m[0]["value"][1] if isinstance(m, list) and m else m))
        self.assertEqual(0, self.clean_load.failed, self.clean_load.last_error)
        self.assertGreater(self.clean_load.ok, CLEAN_SECONDS, "the clean load hardly ran")
        note("%s: silent for %d s under load (%d rounds of put+get, 0 failed); inputs over the window: %s; "
             "other alerts seen on it: %s" % (J_CLEAN, window, self.clean_load.ok, "; ".join(lines), others or "none"))

    def test_6_no_leader_cannot_be_induced_and_stays_silent(self):
        """etcdNoLeader: not inducible on a single Engram member (checked), and
        silent on every member throughout the run."""
        # Why it cannot be induced: a multi-member cluster is refused at start...
        d = harness.make_temp_dir("e2e-drills-2m-")
        p1, p2, c = harness.free_ports(3)
        r = harness.run_binary(harness.engram_bin(), [
            "--name", "a", "--data-dir", os.path.join(d, "data"),
            "--listen-client-urls", "http://127.0.0.1:%d" % c, "--advertise-client-urls", "http://127.0.0.1:%d" % c,
            "--listen-peer-urls", "http://127.0.0.1:%d" % p1, "--initial-advertise-peer-urls",
            "http://127.0.0.1:%d" % p1, "--initial-cluster",
            "a=http://127.0.0.1:%d,b=http://127.0.0.1:%d" % (p1, p2), "--listen-metrics-urls", ""], timeout=20)
        harness.remove_temp_dir(d)
        self.assertNotEqual(0, r.rc, "a 2-member --initial-cluster started: write the real etcdNoLeader drill "
                                     "(one member of two, the other never started)")
        self.assertIn("does not run multi-member clusters", r.out + r.err)
        # ... and MemberAdd (etcd's way to make its single member leaderless) is not served.
        r = etcdctl(self.servers[J_QUOTA], "member", "add", "b", "--peer-urls=http://127.0.0.1:%d" % p2)
        self.assertNotEqual(0, r.rc, "member add worked: induce etcdNoLeader with it (as on etcd) instead")
        self.assertIn("Unimplemented", r.err)
        # Silent everywhere, and every member always had a leader.
        window = int(time.time() - self.t_load) + 2
        self.assertEqual([], [(k, v[0] - self.t_load) for k, v in self.alerts.seen(alertname=NO_LEADER)])
        self.assertEqual([], self.q('count_over_time(ALERTS{alertname="%s"}[%ds])' % (NO_LEADER, window)))
        mins = self.q('min by (job) (min_over_time(etcd_server_has_leader{job=~"etcd-.*"}[%ds]))' % window)
        self.assertIsInstance(mins, list)
        self.assertEqual({j: "1" for j in self.servers}, {m["metric"]["job"]: m["value"][1] for m in mins})
        note("%s: not inducible on one member (2-member --initial-cluster refused at start, MemberAdd Unimplemented);"
             " silent, etcd_server_has_leader 1 on all %d members for %d s" % (NO_LEADER, len(self.servers), window))


def main():
    harness.run_counting(NOTES, "E2E_DRILLS_WATCHDOG")


if __name__ == "__main__":
    main()
