"""Watch against a fresh etcd 3.4 and a fresh Engram, side by side.

`etcdctl watch` never exits on its own: each scenario starts it in the
background on both servers, does the same writes on both, waits until the
expected output has arrived (or a timeout), kills it and compares what it
printed (normalised as harness.Pair does: IDs, addresses). Revisions are
compared as they are.

What etcdctl cannot ask for (filters, client-chosen watch IDs, cancel,
fragment, duplicate IDs, empty ranges) is sent as a raw gRPC stream with curl
(all requests up front, then the client half-closes; both servers keep the
stream open, as etcd does); the responses are decoded and compared per
watch_id, with the IDs in headers tagged.

Run: ENGRAM_BIN=build/engram python3 tests/e2e/test_watch.py -v
"""

import os
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import rawgrpc  # noqa: E402
from harness import CompareCase  # noqa: E402

WAIT = 10.0  # seconds to wait for expected output


class BgCtl(object):
    """An etcdctl running in the background; stdout/stderr collected by threads."""

    def __init__(self, server, args, interactive=False):
        self.argv = [harness.ETCDCTL_BIN, "--endpoints=" + server.endpoint] + [str(a) for a in args]
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE if interactive else subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=harness.clean_env({"ETCDCTL_API": "3"}),
                                     preexec_fn=harness._pdeathsig)
        self.out, self.err = bytearray(), bytearray()
        self._threads = [threading.Thread(target=self._pump, args=(self.proc.stdout, self.out), daemon=True),
                         threading.Thread(target=self._pump, args=(self.proc.stderr, self.err), daemon=True)]
        for t in self._threads:
            t.start()

    @staticmethod
    def _pump(f, buf):
        while True:
            b = f.read1(65536) if hasattr(f, "read1") else f.read(1)
            if not b:
                return
            buf.extend(b)

    def send(self, line):
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()

    def wait_for(self, text, timeout=WAIT):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if text in self.out.decode("utf-8", "replace") or text in self.err.decode("utf-8", "replace"):
                return True
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        return text in self.out.decode("utf-8", "replace")

    def wait_exit(self, timeout=WAIT):
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        return self.stop()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for t in self._threads:
            t.join(5)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f:
                f.close()
        return harness.Result(self.proc.returncode, bytes(self.out), bytes(self.err), self.argv)


# -- raw gRPC Watch stream (curl) -------------------------------------------------

def create_req(key, range_end=b"", start_revision=0, progress_notify=False, filters=(), prev_kv=False,
               watch_id=0, fragment=False):
    body = (rawgrpc.f_bytes(1, key) + (rawgrpc.f_bytes(2, range_end) if range_end else b"")
            + rawgrpc.f_varint(3, start_revision) + rawgrpc.f_varint(4, progress_notify))
    if filters:
        body += rawgrpc.f_bytes(5, b"".join(rawgrpc.varint(f) for f in filters))  # packed
    body += rawgrpc.f_varint(6, prev_kv) + rawgrpc.f_varint(7, watch_id) + rawgrpc.f_varint(8, fragment)
    return rawgrpc.f_msg(1, body)


def cancel_req(watch_id):
    return rawgrpc.f_msg(2, rawgrpc.f_varint(1, watch_id))


def progress_req():
    return rawgrpc.f_msg(3, b"")


NOPUT, NODELETE = 0, 1


def signed(v):
    return v - (1 << 64) if v >= 1 << 63 else v


def decode_watch_response(buf, cluster_id, member_id):
    """A WatchResponse as a comparable tuple tree; IDs in the header tagged."""
    out = []
    for field, v in rawgrpc.decode(buf):
        if field == 1:
            hdr = []
            for hf, hv in rawgrpc.decode(v):
                if hf == 1 and hv == cluster_id:
                    hv = "<CLUSTER_ID>"
                elif hf == 2 and hv == member_id:
                    hv = "<MEMBER_ID>"
                hdr.append((hf, hv))
            v = ("header", hdr)
        elif field == 2:
            v = signed(v)
        elif field == 11:
            ev = []
            for ef, evv in rawgrpc.decode(v):
                if ef in (2, 3):  # kv, prev_kv
                    evv = rawgrpc.decode(evv)
                ev.append((ef, evv))
            v = ("event", ev)
        out.append((field, v))
    return out


def watch_id_of(resp):
    for f, v in resp:
        if f == 2:
            return v
    return 0


def grpc_frames(data):
    """The complete length-prefixed gRPC messages at the start of data."""
    out, i = [], 0
    while i + 5 <= len(data):
        n = struct.unpack(">I", data[i + 1:i + 5])[0]
        if i + 5 + n > len(data):
            break
        out.append(data[i + 5:i + 5 + n])
        i += 5 + n
    return out


def is_create(request):
    return rawgrpc.decode(request)[0][0] == 1   # WatchRequest.create_request


def raw_watch(server, requests, duration=2.0, during=None):
    """Sends the requests on one Watch stream, runs during() while the stream is
    open, and returns the decoded responses received within duration seconds.
    during() runs once every create request has its created response (etcd
    sends one per create, also for refused ones, after registering the
    watcher) and no watcher is replaying history: then each write during()
    makes reaches the watchers as a live event of its own."""
    curl = rawgrpc.curl()
    body = b"".join(b"\0" + struct.pack(">I", len(r)) + r for r in requests)
    fd, path = tempfile.mkstemp(prefix="e2e-watch-")
    os.close(fd)
    try:
        # -N: write each response to the file as it arrives (the wait below reads it)
        p = subprocess.Popen([curl, "-sS", "-N", "--http2-prior-knowledge", "--max-time", str(duration),
                              "-o", path, "-X", "POST", "-H", "content-type: application/grpc",
                              "-H", "te: trailers", "--data-binary", "@-",
                              "http://%s/etcdserverpb.Watch/Watch" % server.endpoint],
                             stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        p.stdin.write(body)
        p.stdin.close()
        if during:
            creates = sum(1 for r in requests if is_create(r))

            def created():
                with open(path, "rb") as f:
                    frames = grpc_frames(f.read())
                return sum(1 for m in frames if (3, 1) in rawgrpc.decode(m))   # WatchResponse.created

            # the stream ends after duration seconds: that bounds the wait
            harness.wait_until(lambda: created() >= creates or p.poll() is not None, duration + 10,
                               "%s: created responses on the raw Watch stream" % server.label)
            got = created()
            if got < creates:
                raise AssertionError("%s: the raw Watch stream ended with %d created responses for %d create "
                                     "requests (curl exit %s)" % (server.label, got, creates, p.poll()))
            server.wait_watchers(0, timeout=WAIT, what="(any) watchers of the raw Watch stream")
            during()
        p.wait(duration + 10)
        with open(path, "rb") as f:
            data = f.read()
    finally:
        os.unlink(path)
    return [decode_watch_response(m, server.cluster_id, server.member_id) for m in grpc_frames(data)]


def by_watch_id(resps):
    d = {}
    for r in resps:
        d.setdefault(watch_id_of(r), []).append(r)
    return d


# ---------------------------------------------------------------------------

class WatchCase(CompareCase):

    def both(self, fn):
        """fn(server) on etcd and on Engram (one after the other); returns (ref, got)."""
        return fn(self.pair.ref), fn(self.pair.sut)

    def put_both(self, *kvs):
        for k, v in kvs:
            self.ok("put", k, v)

    def compare_results(self, ref, got, what):
        rn = (ref.rc, self.pair.ref.normalise(ref.out), self.pair.ref.normalise(ref.err))
        gn = (got.rc, self.pair.sut.normalise(got.out), self.pair.sut.normalise(got.err))
        with self.subTest(what=what):
            self.assertEqual(rn, gn, "engram differs from etcd for %s" % what)
        return ref

    def start_watch(self, srv, args, interactive_lines=()):
        """etcdctl watch args in the background, once it has its watcher(s) on
        srv (one, or one per `watch` line of interactive_lines)."""
        # first the earlier etcdctl watches are gone (streams closed, watchers uncounted)
        before = srv.wait_watch_streams_closed()
        w = BgCtl(srv, ["watch"] + list(args), interactive=bool(interactive_lines))
        w.watchers_before = before
        for line in interactive_lines:
            w.send(line)
        n = sum(1 for line in interactive_lines if line.split()[:1] == ["watch"]) if interactive_lines else 1
        self.wait_watchers(srv, w, n)
        return w

    def wait_watchers(self, srv, w, n):
        """Waits until srv counts n watchers more than before w started, all
        synced: from then on w sees every write, each as a live event. A
        failure bound of WAIT seconds."""
        try:
            srv.wait_watchers(w.watchers_before + n, timeout=WAIT, what="watcher(s) (%d of etcdctl's)" % n)
        except AssertionError as e:
            self.fail("%s\n%s %r" % (e, " ".join(w.argv), w.stop()))

    def bg_watch(self, args, writes=(), expect=None, interactive_lines=(), after=None):
        """Starts `etcdctl watch args` on each server, waits until its watchers
        are registered, runs the writes (etcdctl commands) on it, waits for
        expect in the output, then kills it. Compares exit code and output."""
        def run(srv):
            w = self.start_watch(srv, args, interactive_lines)
            for cmd in writes:
                r = srv.ctl(*cmd)
                self.assertEqual(r.rc, 0, "%s on %s: %r" % (cmd, srv.label, r))
            if after:
                after(srv, w)
            if expect is not None:
                w.wait_for(expect)
            # not a synchronisation: a window in which output nobody expected
            # (a duplicate event, say) would still be caught by the comparison
            time.sleep(0.2)
            return w.stop()
        ref, got = self.both(run)
        self.assertIn(expect or "", ref.out + ref.err, "test bug: etcd output %r" % (ref,))
        return self.compare_results(ref, got, "etcdctl watch " + " ".join(args))

    def raw(self, requests, duration=2.0, during=None, setup=None):
        def run(srv):
            if setup:
                setup(srv)
            return raw_watch(srv, requests, duration, (lambda: during(srv)) if during else None)
        ref, got = self.both(run)
        self.assertTrue(ref, "test bug: etcd sent nothing")
        with self.subTest(raw=repr(requests)[:120]):
            self.assertEqual(by_watch_id(ref), by_watch_id(got), "engram differs from etcd (responses by watch_id)")
        return ref


class EtcdctlWatchTest(WatchCase):

    def test_live_single_key(self):
        self.bg_watch(["foo"], writes=[("put", "foo", "bar"), ("put", "other", "x"), ("put", "foo", "baz"),
                                       ("del", "foo"), ("put", "foo", "last")],
                      expect="last")

    def test_live_json_headers(self):
        self.bg_watch(["foo", "-w", "json"], writes=[("put", "foo", "bar"), ("del", "foo"), ("put", "foo", "z")],
                      expect='"value":"eg=="')

    def test_history_from_rev(self):
        self.put_both(("foo", "v1"), ("bar", "b1"), ("foo", "v2"), ("foo", "v3"))
        self.ok("del", "foo")
        self.bg_watch(["foo", "--rev", "3"], writes=[("put", "foo", "v4")], expect="v4")
        self.bg_watch(["foo", "--rev", "1", "-w", "json"], expect='"value":"djQ="')

    def test_prefix_and_range(self):
        self.put_both(("key1", "a"), ("key2", "b"), ("kez", "c"), ("key3", "d"))
        self.bg_watch(["key", "--prefix", "--rev", "2"], writes=[("put", "key9", "z"), ("del", "key", "--prefix")],
                      expect="key9\nz\nDELETE\nkey1\n\nDELETE\nkey2\n\nDELETE\nkey3\n\nDELETE\nkey9")
        self.bg_watch(["key1", "key3", "--rev", "1"], writes=[("put", "key2", "again")], expect="again")
        self.bg_watch(["--prefix", "", "--rev", "1", "-w", "json"], expect="a2V5OQ==")

    def test_prev_kv(self):
        self.put_both(("foo", "v1"), ("foo", "v2"))
        self.bg_watch(["foo", "--prev-kv", "--rev", "2"],
                      writes=[("put", "foo", "v3"), ("del", "foo"), ("put", "foo", "v4")], expect="v4")
        self.bg_watch(["foo", "--prev-kv", "-w", "json"], writes=[("put", "foo", "v5")], expect="djU=")

    def test_txn_revision_is_one_response(self):
        def txn(srv, w):
            r = srv.ctl("txn", stdin="\nput t1 a\nput t2 b\ndel nothing\n\n\n")
            self.assertEqual(r.rc, 0, "txn on %s: %r" % (srv.label, r))
        self.bg_watch(["t", "--prefix", "-w", "json"], after=txn, expect='"dDI="')

    def test_compacted_revision(self):
        self.put_both(("foo", "v1"), ("foo", "v2"), ("foo", "v3"), ("foo", "v4"))
        self.ok("compact", "4")

        def run(srv):
            w = BgCtl(srv, ["watch", "foo", "--rev", "2"])
            return w.wait_exit(WAIT)
        ref, got = self.both(run)
        self.assertIn("compacted", ref.err, "test bug: %r" % (ref,))
        self.compare_results(ref, got, "watch --rev 2 after compact 4")
        # from the compact revision on is fine
        self.bg_watch(["foo", "--rev", "4"], expect="v4")

    def test_exec_command(self):
        self.bg_watch(["foo", "--", "sh", "-c", "echo got $ETCD_WATCH_EVENT_TYPE $ETCD_WATCH_KEY $ETCD_WATCH_REVISION"],
                      writes=[("put", "foo", "1"), ("del", "foo")], expect='got "DELETE"')

    def test_interactive(self):
        self.put_both(("foo", "v1"))
        self.bg_watch(["-i"], interactive_lines=["watch foo"],
                      writes=[("put", "foo", "v2"), ("put", "bar", "x"), ("put", "foo", "v3")],
                      expect="v3")

    def test_interactive_progress(self):
        self.put_both(("foo", "v1"), ("foo", "v2"))

        def after(srv, w):
            w.wait_for("v3")
            w.send("progress")
            w.wait_for("progress notify")
        self.bg_watch(["-i"], interactive_lines=["watch foo --rev 2"], writes=[("put", "foo", "v3")],
                      after=after, expect="progress notify: 4")

    def test_interactive_two_watches(self):
        def after(srv, w):
            w.send("watch b --prev-kv")
            self.wait_watchers(srv, w, 2)
            srv.ctl("put", "b", "2")
        self.bg_watch(["-i"], interactive_lines=["watch a"], writes=[("put", "a", "1"), ("put", "b", "1")],
                      after=after, expect="b\n1\nb\n2")

    def test_empty_range_is_refused(self):
        def run(srv):
            w = BgCtl(srv, ["watch", "b", "a"])
            return w.wait_exit(4)
        ref, got = self.both(run)
        self.compare_results(ref, got, "watch b a")


class RawWatchTest(WatchCase):
    """Requests etcdctl cannot make, as raw gRPC streams (curl)."""
    NEEDS = ("curl",)

    def history(self):
        self.put_both(("a", "1"), ("b", "1"), ("a", "2"), ("c", "1"), ("b", "2"))
        self.ok("del", "a")                    # rev 7
        self.ok("put", "a", "3")               # rev 8

    def test_created_and_history(self):
        self.history()
        self.raw([create_req(b"a", start_revision=1), create_req(b"b", start_revision=4, prev_kv=True),
                  create_req(b"", range_end=b"\0", start_revision=3)])

    def test_live_and_header_revisions(self):
        self.history()
        self.raw([create_req(b"a"), create_req(b"a", range_end=b"c", prev_kv=True)],
                 during=lambda srv: [srv.ctl("put", "a", "4"), srv.ctl("put", "b", "3"), srv.ctl("del", "a", "c")])

    def test_filters(self):
        self.history()
        self.raw([create_req(b"a", start_revision=1, filters=[NOPUT]),
                  create_req(b"a", start_revision=1, filters=[NODELETE]),
                  create_req(b"a", start_revision=1, filters=[NOPUT, NODELETE])],
                 during=lambda srv: [srv.ctl("del", "a"), srv.ctl("put", "a", "5")])

    def test_client_watch_ids_duplicates_and_cancel(self):
        self.history()
        self.raw([create_req(b"a", watch_id=5), create_req(b"b", watch_id=5), create_req(b"b"),
                  create_req(b"c", watch_id=1), create_req(b"d"), cancel_req(5), cancel_req(99),
                  create_req(b"b", range_end=b"a")],
                 during=lambda srv: [srv.ctl("put", "a", "x"), srv.ctl("put", "b", "x"), srv.ctl("put", "d", "x")])

    def test_progress_request(self):
        self.history()
        self.raw([progress_req(), create_req(b"a"), progress_req()])

    def test_compacted_start(self):
        self.history()
        self.ok("compact", "5")
        # (a cancel of a compacted watcher is in watch_test.cc: here it would race
        # with the compaction check, which Engram runs at once and etcd within 100ms)
        self.raw([create_req(b"a", start_revision=2), create_req(b"b", start_revision=5),
                  create_req(b"c", start_revision=4, watch_id=9)])

    def test_fragment(self):
        big = "x" * (1024 * 1024)
        for k in ("f1", "f2", "f3"):
            self.ok("put", k, stdin=big)  # too long for an argument
        self.raw([create_req(b"f", range_end=b"g", start_revision=1, fragment=True)], duration=4.0)
        self.raw([create_req(b"f", range_end=b"g", start_revision=1)], duration=4.0)
        # one revision, three events with big prev_kvs: fragments on the live path too
        self.raw([create_req(b"f", range_end=b"g", fragment=True, prev_kv=True)], duration=4.0,
                 during=lambda srv: srv.ctl("del", "f", "g"))


if __name__ == "__main__":
    unittest.main()
