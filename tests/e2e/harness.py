"""End-to-end harness: start/stop Engram or a real etcd and drive them with etcdctl.

Stdlib only.  Used by tests/e2e/test_*.py (see tests/README.md).

Environment:
  ENGRAM_BIN   the server under test (default: <repo>/build/engram).  If its
               basename is "etcd" it is treated as a real etcd (started with
               --logger zap), which lets the suite be validated etcd-vs-etcd.
  ETCD_BIN     the reference etcd for comparisons (default /usr/bin/etcd).
  ETCDCTL_BIN  etcdctl to drive both (default /usr/bin/etcdctl).
  E2E_KEEP     if set to 1, temp dirs are kept (printed) for post-mortems.

A tool the tests need (etcd, etcdctl, curl, chromium, prometheus) that is
missing makes the test FAIL with a MissingTool message naming the Debian
package; it is never a skip (scripts/install-deps.sh installs them all).
"""

import atexit
import ctypes
import difflib
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

ETCD_BIN = os.environ.get("ETCD_BIN", "/usr/bin/etcd")
ETCDCTL_BIN = os.environ.get("ETCDCTL_BIN", "/usr/bin/etcdctl")

READY_TIMEOUT = float(os.environ.get("E2E_READY_TIMEOUT", "20"))
CTL_TIMEOUT = 20.0

# ---------------------------------------------------------------------------
# Tools the tests need. A missing one fails the test (never skips it): a test
# that did not run must not count as passed.

class MissingTool(AssertionError):
    pass


# tool -> the Debian package that has it
TOOL_PACKAGES = {"etcd": "etcd-server", "etcdctl": "etcd-client", "curl": "curl", "chromium": "chromium",
                 "prometheus": "prometheus", "promtool": "prometheus"}


def need(tool, package=None):
    """The path of tool (a name looked up on PATH, or a path), or MissingTool
    (an AssertionError: the test fails) saying what to install."""
    path = tool if os.sep in tool else shutil.which(tool)
    if path and os.path.isfile(path) and os.access(path, os.X_OK):
        return path
    name = os.path.basename(tool)
    raise MissingTool("%s not found%s: install Debian's %s (scripts/install-deps.sh does); "
                      "the e2e tests fail rather than skip without it"
                      % (name, "" if os.sep not in tool else " at " + tool,
                         package or TOOL_PACKAGES.get(name, name)))


def wait_until(pred, timeout, what, interval=0.02):
    """Polls pred() until it returns something true and returns that. After
    timeout seconds (a bound on failure, not a delay: a condition that holds
    returns at once) raises AssertionError naming what was awaited."""
    deadline = time.time() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.time() >= deadline:
            raise AssertionError("timed out after %.0fs waiting for %s" % (timeout, what))
        time.sleep(interval)


_SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def metric_value(text, name, **labels):
    """The value of the sample name{labels} (exactly those labels) in a
    Prometheus text exposition, or None."""
    want = sorted((k, str(v)) for k, v in labels.items())
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        m = _SAMPLE_RE.match(line)
        if m and m.group(1) == name and sorted(_LABEL_RE.findall(m.group(2) or "")) == want:
            return float(m.group(3))
    return None


# Ports we must never use: etcd's defaults and another suite's fixed range.
_FORBIDDEN_PORTS = {2379, 2380} | set(range(20000, 20036))


def engram_bin():
    b = os.environ.get("ENGRAM_BIN")
    if not b:
        b = os.path.join(REPO, "build", "engram")
    if not os.path.isfile(b) or not os.access(b, os.X_OK):
        sys.stderr.write("e2e: server binary %r not found or not executable; set ENGRAM_BIN\n" % b)
        sys.exit(2)
    return os.path.abspath(b)


def is_etcd(binary):
    return os.path.basename(binary) == "etcd"


# ---------------------------------------------------------------------------
# Process bookkeeping: every child is killed when this process goes away.

_LIVE = set()          # Server objects with a running process
_TEMP_DIRS = set()     # temp dirs to remove at exit


def _pdeathsig():
    # Runs in the child between fork and exec: die with SIGKILL if the test
    # runner dies (ctest timeout, ^C), so no server outlives its test.
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def strace_fdatasync(server, path, delay_ms, log_path="/dev/null"):
    """Starts strace -f -e inject=fdatasync:delay_enter=<ms> -P <path> on
    server's process: its fdatasync calls on that one file are slowed at run
    time (docs/design/truthful-signals.md section 5). Returns the strace
    process once it has attached (its stderr, a pipe, is the caller's to
    drain); terminating it detaches, and the server goes on."""
    argv = [need("strace", "strace"), "-f", "-e", "trace=fdatasync",
            "-e", "inject=fdatasync:delay_enter=%d" % (delay_ms * 1000),
            "-P", path, "-o", log_path, "-p", str(server.proc.pid)]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, preexec_fn=_pdeathsig)
    buf = b""
    deadline = time.time() + 15
    while b"attached" not in buf:
        if proc.poll() is not None or time.time() >= deadline:
            proc.kill()
            rest = proc.communicate()[1]
            raise AssertionError("strace could not attach to %s (pid %d): %s"
                                 % (server.label, server.proc.pid, (buf + rest).decode(errors="replace")))
        r, _, _ = select.select([proc.stderr], [], [], 0.2)
        if r:
            buf += os.read(proc.stderr.fileno(), 4096)
    return proc


def _cleanup_all():
    for s in list(_LIVE):
        try:
            s.kill()
        except Exception:
            pass
    if os.environ.get("E2E_KEEP") != "1":
        for d in list(_TEMP_DIRS):
            shutil.rmtree(d, ignore_errors=True)


atexit.register(_cleanup_all)


def _on_term(signum, frame):
    raise SystemExit(128 + signum)


try:
    signal.signal(signal.SIGTERM, _on_term)
except ValueError:
    pass


def make_temp_dir(prefix="engram-e2e-"):
    d = tempfile.mkdtemp(prefix=prefix)
    _TEMP_DIRS.add(d)
    return d


def remove_temp_dir(d):
    if os.environ.get("E2E_KEEP") == "1":
        sys.stderr.write("e2e: keeping %s\n" % d)
        return
    shutil.rmtree(d, ignore_errors=True)
    _TEMP_DIRS.discard(d)


def free_port():
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        if p not in _FORBIDDEN_PORTS:
            return p


def free_ports(n):
    ports = []
    while len(ports) < n:
        p = free_port()
        if p not in ports:
            ports.append(p)
    return ports


def tcp_open(port, host="127.0.0.1", timeout=0.2):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def clean_env(extra=None):
    """The inherited environment without ETCD_*/ETCDCTL_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCD_", "ETCDCTL_"))}
    if extra:
        env.update(extra)
    return env


class Result(object):
    """Outcome of one command: rc, out, err (text) and raw stdout bytes."""

    def __init__(self, rc, out_bytes, err_bytes, argv):
        self.rc = rc
        self.raw_out = out_bytes
        self.out = out_bytes.decode("utf-8", "backslashreplace")
        self.err = err_bytes.decode("utf-8", "backslashreplace")
        self.argv = argv

    def __iter__(self):  # allows: rc, out, err = server.ctl(...)
        return iter((self.rc, self.out, self.err))

    def json(self):
        return json.loads(self.out)

    def __repr__(self):
        return "Result(rc=%r, out=%r, err=%r)" % (self.rc, self.out, self.err)


class _Ctl(object):
    """One etcdctl process, started at once; result() waits for it."""

    def __init__(self, endpoint, args, stdin=None, timeout=CTL_TIMEOUT):
        need(ETCDCTL_BIN)
        self.argv = [ETCDCTL_BIN, "--endpoints=" + endpoint] + [str(a) for a in args]
        self.stdin = (stdin.encode() if isinstance(stdin, str) else stdin) or b""
        self.timeout = timeout
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=clean_env({"ETCDCTL_API": "3"}),
                                     preexec_fn=_pdeathsig)

    def result(self):
        try:
            out, err = self.proc.communicate(self.stdin, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            err += b"\n[e2e harness: etcdctl killed after %.0fs]" % self.timeout
        return Result(self.proc.returncode, out, err, self.argv)


def run_etcdctl(endpoint, args, stdin=None, timeout=CTL_TIMEOUT):
    return _Ctl(endpoint, args, stdin, timeout).result()


def run_binary(binary, args, env=None, timeout=20):
    """Run the server binary to completion (for --version/--help/bad flags)."""
    p = subprocess.run([binary] + list(args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, env=clean_env(env), timeout=timeout,
                       preexec_fn=_pdeathsig)
    return Result(p.returncode, p.stdout, p.stderr, [binary] + list(args))


# ---------------------------------------------------------------------------

class ServerError(AssertionError):
    pass


class Server(object):
    """One single-member server (Engram or etcd) in its own temp dir.

    s = Server(binary); s.start(); s.ctl("put", "a", "1"); s.stop(); s.cleanup()
    Restarts (after stop() or kill()) reuse the same data dir and ports.
    """

    def __init__(self, binary=None, name="s1", extra_args=(), env=None, data_dir=None,
                 use_flags=True, label=None):
        self.binary = binary or engram_bin()
        self.etcd = is_etcd(self.binary)
        self.label = label or ("etcd" if self.etcd else "engram")
        self.name = name
        self.extra_args = [str(a) for a in extra_args]
        self.env = dict(env or {})
        self.use_flags = use_flags
        self.tmp = make_temp_dir("e2e-%s-" % self.label)
        self.data_dir = data_dir or os.path.join(self.tmp, "data")
        self.client_port, self.peer_port = free_ports(2)
        self.proc = None
        self.log_path = None
        self.starts = 0
        self.cluster_id = None
        self.member_id = None

    # -- addresses ---------------------------------------------------------
    @property
    def client_url(self):
        return "http://127.0.0.1:%d" % self.client_port

    @property
    def peer_url(self):
        return "http://127.0.0.1:%d" % self.peer_port

    @property
    def endpoint(self):
        return "127.0.0.1:%d" % self.client_port

    def flags(self):
        f = [
            "--name", self.name,
            "--data-dir", self.data_dir,
            "--listen-client-urls", self.client_url,
            "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", "%s=%s" % (self.name, self.peer_url),
        ]
        return f if self.use_flags else []

    # A real etcd waits a full election timeout (1s) before its first campaign;
    # shorter raft timers make it ready in ~0.1s.  They change no output (term and
    # indexes are the same), so every etcd the harness starts gets them.
    ETCD_FAST_ARGS = ["--heartbeat-interval", "10", "--election-timeout", "50"]

    def argv(self):
        a = [self.binary] + self.flags()
        if self.etcd:
            a += ["--logger", "zap"]
            if os.environ.get("E2E_ETCD_FAST", "1") == "1" and not any(
                    x.lstrip("-").split("=")[0] in ("heartbeat-interval", "election-timeout")
                    for x in self.extra_args):
                a += self.ETCD_FAST_ARGS
        return a + self.extra_args

    # -- lifecycle ---------------------------------------------------------
    def start(self, wait=True, timeout=READY_TIMEOUT):
        if self.proc is not None and self.proc.poll() is None:
            raise ServerError("%s already running" % self.label)
        need(self.binary)
        self.log_path = os.path.join(self.tmp, "server.%d.log" % self.starts)
        self.starts += 1
        log = open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=clean_env(self.env),
                                         cwd=self.tmp, preexec_fn=_pdeathsig)
        finally:
            log.close()
        _LIVE.add(self)
        if wait:
            self.wait_ready(timeout)
        return self

    READY_MARKERS = ("ready to serve client requests",   # Engram, etcd capnslog
                     "serving client traffic")            # etcd 3.4 with --logger zap

    def wait_ready(self, timeout=READY_TIMEOUT):
        deadline = time.time() + timeout
        while time.time() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                _LIVE.discard(self)
                raise ServerError("%s exited with %s before becoming ready; argv: %s\n--- log tail ---\n%s"
                                  % (self.label, rc, " ".join(self.argv()), self.log_tail()))
            text = self.log()
            if any(m in text for m in self.READY_MARKERS) and tcp_open(self.client_port):
                return
            time.sleep(0.02)
        raise ServerError("%s not ready after %.0fs; argv: %s\n--- log tail ---\n%s"
                          % (self.label, timeout, " ".join(self.argv()), self.log_tail()))

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def dead_note(self):
        return "[e2e harness: %s is not running (exit code %s)]" % (
            self.label, self.proc.returncode if self.proc else None)

    def stop(self, sig=signal.SIGTERM, timeout=15):
        """Send sig (SIGTERM) and wait; returns the exit code (negative = killed by a signal).
        Raises (after SIGKILL) if the process does not exit within timeout."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                _LIVE.discard(self)
                raise ServerError("%s did not exit within %ss of signal %d; killed\n--- log tail ---\n%s"
                                  % (self.label, timeout, sig, self.log_tail()))
        _LIVE.discard(self)
        return self.proc.returncode

    def kill(self):
        """kill -9 and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        _LIVE.discard(self)
        return self.proc.returncode if self.proc else None

    def restart(self, wait=True):
        if self.running():
            self.stop()
        return self.start(wait=wait)

    def cleanup(self):
        self.kill()
        remove_temp_dir(self.tmp)

    # -- logs --------------------------------------------------------------
    def log(self, all_starts=False):
        paths = [os.path.join(self.tmp, "server.%d.log" % i) for i in range(self.starts)] \
            if all_starts else [self.log_path]
        out = []
        for p in paths:
            try:
                with open(p, "rb") as f:
                    out.append(f.read().decode("utf-8", "backslashreplace"))
            except (OSError, TypeError):
                pass
        return "".join(out)

    def log_tail(self, n=40):
        return "\n".join(self.log().splitlines()[-n:])

    # -- etcdctl -----------------------------------------------------------
    def ctl(self, *args, stdin=None, timeout=CTL_TIMEOUT):
        return run_etcdctl(self.endpoint, args, stdin=stdin, timeout=timeout)

    # -- /metrics (served on the client URL by etcd 3.4 and Engram) ---------
    def metrics_text(self, port=None):
        url = "http://127.0.0.1:%d/metrics" % (port or self.client_port)
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return r.read().decode("utf-8", "replace")
        except (OSError, urllib.error.URLError) as e:
            raise ServerError("%s: GET %s failed: %s" % (self.label, url, e))

    def watch_counts(self, port=None):
        """(watch streams, watchers, unsynced watchers) on the server: etcd's
        etcd_debugging_mvcc_{watch_stream,watcher,slow_watcher}_total gauges."""
        t = self.metrics_text(port)
        return tuple(metric_value(t, "etcd_debugging_mvcc_%s_total" % g) or 0
                     for g in ("watch_stream", "watcher", "slow_watcher"))

    def wait_watch_streams_closed(self, timeout=10, port=None):
        """Waits until no watch stream is open (a killed etcdctl's stream is
        closed, and its watchers cancelled, asynchronously); returns the
        watcher count then (etcd 3.4 never uncounts a compacted watcher)."""
        def closed():
            c = self.watch_counts(port)
            return c if c[0] == 0 else None   # a tuple: true even when (0, 0)
        return wait_until(closed, timeout, "%s: the watch streams of earlier clients to close" % self.label)[1]

    def wait_watchers(self, n, timeout=10, port=None, what="watchers"):
        """Waits until at least n watchers are registered on the server and
        none is unsynced (every history replay is sent): from then on each
        later write reaches the watchers as a live event of its own."""
        def ready():
            _, watchers, slow = self.watch_counts(port)
            return watchers >= n and slow == 0
        wait_until(ready, timeout, "%s: %d %s registered and synced (etcd_debugging_mvcc_watcher_total, "
                   "_slow_watcher_total)" % (self.label, n, what))

    def discover_ids(self):
        """Learn cluster_id/member_id (for normalisation) without changing any state."""
        for args in (("get", "e2e-id-probe", "-w", "json"), ("member", "list", "-w", "json"),
                     ("endpoint", "status", "-w", "json")):
            r = self.ctl(*args)
            if r.rc != 0:
                continue
            try:
                j = json.loads(r.out)
                if isinstance(j, list):
                    j = j[0]["Status"]
                h = j["header"]
                self.cluster_id, self.member_id = int(h["cluster_id"]), int(h["member_id"])
                return
            except (ValueError, KeyError, IndexError, TypeError):
                continue
        raise ServerError("%s: could not learn cluster_id/member_id via get/member list/endpoint status"
                          % self.label)

    # -- normalisation -----------------------------------------------------
    def normalise(self, text):
        """Replace what legitimately differs between two servers in etcdctl output."""
        text = text.replace("127.0.0.1:%d" % self.client_port, "<CLIENT>")
        text = text.replace("127.0.0.1:%d" % self.peer_port, "<PEER>")
        for value, tag in ((self.cluster_id, "<CLUSTER_ID>"), (self.member_id, "<MEMBER_ID>")):
            if value:
                text = re.sub(r"(?<![0-9A-Za-z])(%d|%x)(?![0-9A-Za-z])" % (value, value), tag, text)
        return normalise_common(text)


_TS_RE = re.compile(r'"ts":"[^"]*"')
_TS_NUM_RE = re.compile(r'"ts":[0-9.e+]+')
_TARGET_RE = re.compile(r'"target":"[^"]*"')
_TOOK_RE = re.compile(r"took = \S+")
_TOOK_JSON_RE = re.compile(r'"took":"[^"]*"')


_TABLE_RULE_RE = re.compile(r"^\+[-+]*\+$")
_TABLE_CELL_RE = re.compile(r" *\| *")


def normalise_table(text):
    """etcdctl -w table pads cells to the widest value; IDs and ports differ in width,
    so compare tables cell by cell instead."""
    out = []
    for line in text.split("\n"):
        if _TABLE_RULE_RE.match(line):
            line = "+-+"
        elif line.startswith("|") and line.endswith("|"):
            line = _TABLE_CELL_RE.sub("|", line)
        out.append(line)
    return "\n".join(out)


def normalise_common(text):
    text = normalise_table(text)
    text = _TS_RE.sub('"ts":"<TS>"', text)
    text = _TS_NUM_RE.sub('"ts":"<TS>"', text)
    text = _TARGET_RE.sub('"target":"<TARGET>"', text)
    text = _TOOK_RE.sub("took = <DUR>", text)
    text = _TOOK_JSON_RE.sub('"took":"<DUR>"', text)
    return text


# ---------------------------------------------------------------------------
# Minimal protobuf wire decoding, for comparing `-w protobuf` output.

def _varint(buf, i):
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def pb_decode(buf):
    """Decode a protobuf message into [(field, wiretype, value)], value = int or bytes."""
    out, i = [], 0
    while i < len(buf):
        key, i = _varint(buf, i)
        field, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(buf, i)
        elif wt == 1:
            v, i = buf[i:i + 8], i + 8
        elif wt == 2:
            n, i = _varint(buf, i)
            v, i = bytes(buf[i:i + n]), i + n
        elif wt == 5:
            v, i = buf[i:i + 4], i + 4
        else:
            raise ValueError("bad wire type %d" % wt)
        out.append((field, wt, v))
    return out


def pb_response_normalised(buf, cluster_id, member_id):
    """Decode an etcd response whose field 1 is a ResponseHeader; IDs replaced by tags."""
    out = []
    for field, wt, v in pb_decode(buf):
        if field == 1 and wt == 2:
            hdr = []
            for hf, hwt, hv in pb_decode(v):
                if hf == 1 and hv == cluster_id:
                    hv = "<CLUSTER_ID>"
                elif hf == 2 and hv == member_id:
                    hv = "<MEMBER_ID>"
                hdr.append((hf, hwt, hv))
            v = ("header", hdr)
        out.append((field, wt, v))
    return out


# ---------------------------------------------------------------------------
# Side-by-side comparison: the same etcdctl commands against a fresh etcd and a
# fresh Engram.

class Mismatch(object):
    def __init__(self, args, stdin, ref, got, ref_norm, got_norm, what):
        self.args, self.stdin, self.ref, self.got = args, stdin, ref, got
        self.ref_norm, self.got_norm, self.what = ref_norm, got_norm, what

    def __str__(self):
        lines = ["command: etcdctl %s" % " ".join(_shell_quote(a) for a in self.args)]
        if self.stdin is not None:
            lines.append("stdin: %r" % self.stdin)
        if "rc" in self.what:
            lines.append("exit code: etcd=%s engram=%s" % (self.ref.rc, self.got.rc))
        for stream in ("out", "err"):
            if stream in self.what:
                a, b = self.ref_norm[stream], self.got_norm[stream]
                lines.append("std%s differs (normalised; - etcd, + engram):" % stream)
                diff = list(difflib.unified_diff(a.splitlines(), b.splitlines(), "etcd", "engram",
                                                 lineterm="", n=2))
                lines.extend("    " + d for d in diff[2:] or ["    (whitespace-only difference) %r vs %r" % (a, b)])
        return "\n".join(lines)


def _shell_quote(a):
    return a if re.match(r"^[A-Za-z0-9_./=:,+-]+$", a) else "'" + a.replace("'", "'\\''") + "'"


class GrpcMismatch(object):
    def __init__(self, method, request, ref, got, rn, gn):
        self.method, self.request, self.ref, self.got, self.rn, self.gn = method, request, ref, got, rn, gn

    def __str__(self):
        import rawgrpc
        try:
            req = rawgrpc.pretty(self.request)
        except (ValueError, IndexError):
            req = self.request
        return ("grpc call: %s %r\n  etcd:   status=%s message=%r body=%r\n  engram: status=%s message=%r body=%r"
                % (self.method, req, self.rn[0], self.rn[1], self.rn[2], self.gn[0], self.gn[1], self.gn[2]))


class Pair(object):
    """A fresh real etcd (reference) and a fresh server under test, same flags.

    pair.run(args...) runs etcdctl against both and returns (ref, got, mismatch)
    where mismatch is None when exit codes and normalised stdout/stderr agree.
    """

    def __init__(self, extra_args=(), engram=None, etcd=None):
        self.ref = Server(etcd or ETCD_BIN, extra_args=extra_args, label="etcd")
        self.sut = Server(engram or engram_bin(), extra_args=extra_args,
                          label="engram" if not is_etcd(engram or engram_bin()) else "etcd(sut)")
        try:
            self.ref.start(wait=False)
            self.sut.start(wait=False)
            self.ref.wait_ready()
            self.sut.wait_ready()
            self.ref.discover_ids()
            self.sut.discover_ids()
        except BaseException:
            self.close()
            raise

    def close(self):
        for s in (self.ref, self.sut):
            s.cleanup()

    def restart(self, kill=False):
        """Stop both (SIGTERM, or SIGKILL with kill=True) and start them again on
        their data dirs.  Returns the two exit codes (ref, sut)."""
        codes = tuple(s.kill() if kill else s.stop() for s in (self.ref, self.sut))
        for s in (self.ref, self.sut):
            s.start(wait=False)
        for s in (self.ref, self.sut):
            s.wait_ready()
            s.discover_ids()
        return codes

    def run(self, *args, stdin=None, out_normaliser=None, protobuf=False):
        args = [str(a) for a in args]
        # both at once: the servers are independent, and it halves the wall time
        a = _Ctl(self.ref.endpoint, args, stdin)
        if self.sut.running():
            got = _Ctl(self.sut.endpoint, args, stdin).result()
        else:   # don't wait for etcdctl's timeouts against a dead server
            got = Result(None, b"", self.sut.dead_note().encode(), args)
        ref = a.result()
        # out_normaliser (raw stdout -> text) runs first, on each side's raw output;
        # then each server's own IDs/addresses are replaced by tags.
        pre = out_normaliser or (lambda t: t)
        rn = {"out": self.ref.normalise(pre(ref.out)), "err": self.ref.normalise(ref.err)}
        gn = {"out": self.sut.normalise(pre(got.out)), "err": self.sut.normalise(got.err)}
        if protobuf:
            for n, srv, res in ((rn, self.ref, ref), (gn, self.sut, got)):
                try:
                    n["out"] = repr(pb_response_normalised(res.raw_out, srv.cluster_id, srv.member_id))
                except (ValueError, IndexError) as e:
                    n["out"] = "undecodable protobuf (%s): %r" % (e, res.raw_out)
        what = []
        if ref.rc != got.rc:
            what.append("rc")
        if rn["out"] != gn["out"]:
            what.append("out")
        if rn["err"] != gn["err"]:
            what.append("err")
        mm = Mismatch(args, stdin, ref, got, rn, gn, what) if what else None
        return ref, got, mm

    def grpc(self, method, request):
        """Raw unary gRPC call on both; returns (ref, got, mismatch-or-None)."""
        import rawgrpc
        ref = rawgrpc.call(self.ref.endpoint, method, request)
        if self.sut.running():
            got = rawgrpc.call(self.sut.endpoint, method, request)
        else:
            got = rawgrpc.Reply(None, self.sut.dead_note(), None, "", None, "")

        def norm(reply, srv):
            body = reply.body
            if body is not None:
                try:
                    body = rawgrpc.normalised(body, srv.cluster_id, srv.member_id)
                except (ValueError, IndexError) as e:
                    body = "undecodable (%s): %r" % (e, body)
            return (reply.status, reply.message or "", body)
        rn, gn = norm(ref, self.ref), norm(got, self.sut)
        return ref, got, (GrpcMismatch(method, request, ref, got, rn, gn) if rn != gn else None)


# ---------------------------------------------------------------------------
# unittest glue

import unittest  # noqa: E402


class CompareCase(unittest.TestCase):
    """Each test gets a fresh etcd + Engram pair started with SERVER_ARGS.

    self.cmp(args...)  runs etcdctl on both; a difference is recorded as a
                       failing subtest (the test goes on, so one run lists
                       every difference) and the reference result is returned.
    self.ok / self.err additionally check the *reference* outcome, which keeps
                       the test itself honest (it really exercises that path).
    At the end of every test the whole keyspace (and so the revision) is compared.
    """

    SERVER_ARGS = ()
    NEEDS = ()      # tools beyond etcd and etcdctl, e.g. ("curl",): missing -> the test fails
    maxDiff = None

    def setUp(self):
        for tool in (ETCD_BIN, ETCDCTL_BIN) + tuple(self.NEEDS):
            need(tool)
        self.pair = Pair(self.SERVER_ARGS)
        self.addCleanup(self.pair.close)

    def tearDown(self):
        sut = self.pair.sut
        if not sut.running():
            self.fail("%s exited during the test (exit code %s)\n--- log tail ---\n%s"
                      % (sut.label, sut.proc.returncode, sut.log_tail()))
        if self.pair.ref.running():
            self.cmp("get", "", "--prefix", "-w", "json")

    @property
    def sut_is_etcd(self):
        return self.pair.sut.etcd

    def cmp(self, *args, **kw):
        ref, got, mm = self.pair.run(*args, **kw)
        self.last_got = got
        if mm is not None:
            with self.subTest(cmd="etcdctl " + " ".join(str(a) for a in args)):
                self.fail("engram differs from etcd\n" + str(mm))
        return ref

    def grpc(self, method, request, expect_status=0, expect_message=None):
        """Raw gRPC call on both (see rawgrpc.py); compared like cmp(), and the
        reference reply is checked against expect_status / expect_message."""
        ref, got, mm = self.pair.grpc(method, request)
        self.last_got = got
        if mm is not None:
            with self.subTest(grpc=method):
                self.fail("engram differs from etcd\n" + str(mm))
        self.assertEqual(ref.status, expect_status, "test bug: etcd replied %r" % (ref,))
        if expect_message is not None:
            self.assertEqual(ref.message, expect_message, "test bug: etcd replied %r" % (ref,))
        return ref

    def ok(self, *args, **kw):
        ref = self.cmp(*args, **kw)
        self.assertEqual(ref.rc, 0, "test bug: etcd failed on %s: %r" % (args, ref))
        return ref

    def err(self, text, *args, **kw):
        ref = self.cmp(*args, **kw)
        self.assertNotEqual(ref.rc, 0, "test bug: etcd accepted %s: %r" % (args, ref))
        self.assertIn(text, ref.err, "test bug: etcd error for %s" % (args,))
        return ref


# ---------------------------------------------------------------------------
# A runner that counts tests (not subtests) and ends with "N passed, M failed"

class CountingResult(unittest.TextTestResult):
    """Counts tests (not subtests) that failed or erred."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.failed_ids = set()

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self.failed_ids.add(test.id())

    def addError(self, test, err):
        super().addError(test, err)
        self.failed_ids.add(getattr(test, "id", lambda: repr(test))())

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            self.failed_ids.add(test.id())


def run_counting(notes, watchdog_env, watchdog_default=400.0):
    """unittest.main with CountingResult: prints the notes, the time and
    "N passed, M failed" (skips count as failures) and exits 0 only if all
    passed. A hang dumps every thread's stack after $watchdog_env seconds
    (ctest would kill it silently at 600 s)."""
    import faulthandler
    faulthandler.dump_traceback_later(float(os.environ.get(watchdog_env, watchdog_default)), exit=True)
    runner = unittest.TextTestRunner(resultclass=CountingResult, verbosity=2 if "-v" in sys.argv else 1)
    t0 = time.time()
    prog = unittest.main(module="__main__", testRunner=runner, exit=False)
    res = prog.result
    failed = len(res.failed_ids)
    passed = res.testsRun - failed - len(res.skipped)
    sys.stderr.flush()
    for n in notes:
        print("note: " + n)
    print("ran in %.1fs" % (time.time() - t0))
    print("%d passed, %d failed" % (max(0, passed), failed + len(res.skipped)))
    sys.exit(0 if failed == 0 and not res.skipped else 1)
