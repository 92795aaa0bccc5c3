"""etcd's gRPC-JSON gateway (grpc-gateway v1, HTTP/1.1 JSON on the client
URL): the same requests sent to a real etcd 3.4.23 and to the server under
test, the answers compared after normalising only what legitimately differs
(cluster/member IDs, client/peer addresses, server-generated lease IDs, auth
tokens, a lease's remaining TTL, and a few fields that are checked for
presence only: status sizes/version, hash values, snapshot bytes).

Covers /v3/kv/{range,put,deleterange,txn,compaction}, /v3/watch (chunked
stream), /v3/lease/* and the /v3/kv/lease/* aliases (keepalive stream), the
/v3beta prefix (rewritten to /v3 by etcd 3.4) and /v3alpha (not served by
3.4: "404 page not found"; Engram serves it like /v3, see SCOPE below),
/v3/maintenance/*, /v3/cluster/member/*, /v3/auth/*, /v3/lock/*,
/v3/election/* (observe stream), error bodies
({"error","message","code"}) and HTTP statuses, JSON decoding (lenient and
error cases), routing (404/405/301/OPTIONS), transport details (headers,
trailers, chunk framing, keep-alive, Expect: 100-continue), the requests
etcd's own e2e tests send (v3_curl_test.go, v3_curl_lease_test.go,
v3_curl_maxstream_test.go) and the python3-etcd3gw client.
Facts: docs/design/gateway.md.

SCOPE (decided for the gateway issue; each place says which one applies):
  1. Auth (/v3/auth/*), member add/remove/update/promote and
     Maintenance.Snapshot belong to later issues.  Engram must answer them
     through the gateway as any gRPC error with code 12 (UNIMPLEMENTED): HTTP
     501, chunked, Trailer: Grpc-Trailer-Content-Type (assert_unimplemented).
     Member list is still compared with etcd.
  2. /v3alpha: etcd 3.4.23 answers 404 there, but python3-etcd3gw 2.0.0
     defaults to it, so Engram serves /v3alpha like /v3 (a deliberate
     difference): Engram's /v3alpha answer is compared with etcd's /v3 answer.
  3. JSON decode errors: Engram decodes request JSON by Go's encoding/json +
     jsonpb rules and reproduces their error texts (server/gateway/gojson.h),
     so these answers are compared exactly like everything else.
With ENGRAM_BIN=/usr/bin/etcd (etcd vs etcd) the Engram-specific assertions of
1 and 2 are skipped (sut_is_etcd): 1 then compares etcd with etcd as before,
and 2 sends /v3 to both.

Run: ENGRAM_BIN=build/engram python3 tests/e2e/test_gateway.py -v
     ENGRAM_BIN=/usr/bin/etcd python3 tests/e2e/test_gateway.py   (etcd vs etcd)
The python3-etcd3gw part runs under /usr/bin/python3 (Debian's
python3-etcd3gw; ETCD3GW_PYTHON overrides), in a subprocess.
"""

import base64
import difflib
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import CompareCase, need, wait_until  # noqa: E402

ETCD3GW_PYTHON = os.environ.get("ETCD3GW_PYTHON", "/usr/bin/python3")


def b64(s):
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def dumps(obj):
    return json.dumps(obj, separators=(",", ":"))


# ---------------------------------------------------------------------------
# A small raw HTTP/1.1 client: it keeps what http.client hides (chunk
# boundaries, trailers, interim 100 responses) and never blocks past a deadline.

class Reply(object):
    def __init__(self):
        self.status = None
        self.reason = ""
        self.version = ""
        self.headers = {}       # lower-case name -> value (repeated headers joined by ", ")
        self.chunked = False
        self.chunks = []        # body pieces: one per HTTP chunk when chunked
        self.trailers = {}
        self.complete = False   # the body ended (last chunk / Content-Length / EOF)
        self.interim = []       # interim (1xx) status lines
        self.error = None       # transport error text (timeout, reset, refused)

    @property
    def body(self):
        return b"".join(self.chunks)

    @property
    def text(self):
        return self.body.decode("utf-8", "backslashreplace")

    def header(self, name):
        return self.headers.get(name.lower())

    def __repr__(self):
        return "Reply(%s %r, %r, %r, error=%r)" % (self.status, self.reason, self.headers,
                                                  self.body[:300], self.error)


class RawHttp(object):
    def __init__(self, port, timeout=10.0):
        self.port = port
        self.buf = b""
        self.eof = False
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.reply = None
        self._left = None       # bytes left of a Content-Length body

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, method, path, body=None, headers=None, close=False, send_body=True):
        if isinstance(body, str):
            body = body.encode()
        hdrs = [("Host", "127.0.0.1:%d" % self.port)]
        extra = dict(headers or {})
        if body is not None:
            if not any(k.lower() == "content-type" for k in extra):
                hdrs.append(("Content-Type", "application/json"))
            hdrs.append(("Content-Length", str(len(body))))
        if close:
            hdrs.append(("Connection", "close"))
        hdrs += list(extra.items())
        head = "%s %s HTTP/1.1\r\n" % (method, path) + "".join("%s: %s\r\n" % kv for kv in hdrs) + "\r\n"
        self.sock.sendall(head.encode() + (body if (body and send_body) else b""))
        self.reply = None
        return body

    def _fill(self, deadline):
        t = deadline - time.monotonic()
        if t <= 0:
            raise TimeoutError("timed out")
        self.sock.settimeout(t)
        try:
            d = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("timed out")
        except OSError as e:
            d = b""
            self.reset = str(e)
        if not d:
            self.eof = True
            raise EOFError("connection closed")
        self.buf += d

    def _line(self, deadline):
        while b"\r\n" not in self.buf:
            self._fill(deadline)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode("latin-1")

    def _take(self, n, deadline):
        while len(self.buf) < n:
            self._fill(deadline)
        d, self.buf = self.buf[:n], self.buf[n:]
        return d

    def read_head(self, timeout=10.0, skip_interim=True):
        deadline = time.monotonic() + timeout
        r = self.reply = Reply()
        try:
            while True:
                line = self._line(deadline)
                parts = line.split(" ", 2)
                r.version, r.status, r.reason = parts[0], int(parts[1]), (parts[2] if len(parts) > 2 else "")
                hdrs = {}
                while True:
                    h = self._line(deadline)
                    if not h:
                        break
                    k, _, v = h.partition(":")
                    k = k.strip().lower()
                    hdrs[k] = (hdrs[k] + ", " + v.strip()) if k in hdrs else v.strip()
                r.headers = hdrs
                if 100 <= r.status < 200 and skip_interim:
                    r.interim.append(line)
                    continue
                break
        except (TimeoutError, EOFError) as e:
            r.error = "no response head: %s" % e
            r.complete = True
            return r
        r.chunked = "chunked" in r.headers.get("transfer-encoding", "").lower()
        if not r.chunked:
            cl = r.headers.get("content-length")
            self._left = int(cl) if cl is not None else None
            if self._left == 0:
                r.complete = True
        return r

    def next_piece(self, timeout=10.0):
        """The next piece of the body (one HTTP chunk; or, without chunking,
        what has arrived), appended to reply.chunks; None once the body ended."""
        r = self.reply
        if r is None or r.complete:
            return None
        deadline = time.monotonic() + timeout
        try:
            if r.chunked:
                size = int(self._line(deadline).split(";")[0].strip(), 16)
                if size == 0:
                    while True:
                        t = self._line(deadline)
                        if not t:
                            break
                        k, _, v = t.partition(":")
                        r.trailers[k.strip().lower()] = v.strip()
                    r.complete = True
                    return None
                data = self._take(size, deadline)
                if self._take(2, deadline) != b"\r\n":
                    raise EOFError("bad chunk framing")
                r.chunks.append(data)
                return data
            if self._left is not None:
                if not self.buf:
                    self._fill(deadline)
                data, self.buf = self.buf[:self._left], self.buf[self._left:]
                self._left -= len(data)
                if self._left == 0:
                    r.complete = True
                r.chunks.append(data)
                return data
            # no length: until the connection closes
            if not self.buf:
                try:
                    self._fill(deadline)
                except EOFError:
                    r.complete = True
                    return None
            data, self.buf = self.buf, b""
            r.chunks.append(data)
            return data
        except TimeoutError:
            raise
        except EOFError as e:
            r.error = "body cut short: %s" % e
            r.complete = True
            return None

    def read_all(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        r = self.reply if self.reply is not None else self.read_head(timeout)
        while not r.complete:
            try:
                self.next_piece(max(0.001, deadline - time.monotonic()))
            except TimeoutError:
                r.error = "timed out reading the body"
                break
        return r


def http_call(port, method, path, body=None, headers=None, timeout=10.0):
    """One request on a fresh connection (Connection: close); the whole reply."""
    try:
        c = RawHttp(port, timeout)
    except OSError as e:
        r = Reply()
        r.error = "connect failed: %s" % e
        return r
    try:
        c.send(method, path, body, headers, close=True)
        c.read_head(timeout)
        return c.read_all(timeout)
    except OSError as e:
        r = c.reply or Reply()
        r.error = "transport error: %s" % e
        return r
    finally:
        c.close()


class GwStream(object):
    """A streaming gateway call (watch, keepalive, observe, snapshot)."""

    def __init__(self, server, path, body, timeout=5.0, headers=None):
        self.server = server
        self.conn = None
        self.reply = Reply()
        try:
            self.conn = RawHttp(server.client_port, timeout)
            self.conn.send("POST", path, body, headers)
            self.reply = self.conn.read_head(timeout)
        except OSError as e:
            self.reply.error = "transport error: %s" % e
            self.reply.complete = True

    def pieces(self, n, timeout=5.0):
        """Reads until the body holds n pieces (chunks), the body ends, or timeout."""
        deadline = time.monotonic() + timeout
        while self.conn is not None and len(self.reply.chunks) < n and not self.reply.complete:
            try:
                self.conn.next_piece(max(0.001, deadline - time.monotonic()))
            except TimeoutError:
                break
            except OSError as e:
                self.reply.error = "transport error: %s" % e
                break
        return self.reply.chunks

    def finish(self, timeout=5.0):
        """Reads to the end of the body (for streams the server ends)."""
        if self.conn is not None:
            self.conn.sock.settimeout(timeout)
            self.conn.read_all(timeout)
        return self.reply.chunks

    def close(self):
        if self.conn is not None:
            self.conn.close()


# ---------------------------------------------------------------------------
# Normalisation

_GEN_ID_RE = re.compile(r'"(ID|lease)":"(\d{10,})"')
_TOKEN_RE = re.compile(r'"token":"[^"]*"')


class Norm(object):
    """Per-server normaliser: harness IDs/addresses, plus server-generated lease
    IDs (10+ digits; the tests choose small ones themselves) tagged in order of
    first appearance, so equal histories give equal tags."""

    def __init__(self, server):
        self.server = server
        self.gen = {}

    def lease_tag(self, value):
        value = str(value)
        if value not in self.gen:
            self.gen[value] = "<GEN_LEASE%d>" % (len(self.gen) + 1)
        return self.gen[value]

    def __call__(self, text):
        text = self.server.normalise(text)
        text = _GEN_ID_RE.sub(lambda m: '"%s":"%s"' % (m.group(1), self.lease_tag(m.group(2))), text)
        return _TOKEN_RE.sub('"token":"<TOKEN>"', text)


def sorted_keys(text):
    """timetolive's "keys" come from a Go map: their order is unspecified."""
    def sub(m):
        return '"keys":%s' % dumps(sorted(json.loads(m.group(1))))
    return re.sub(r'"keys":(\[[^\]]*\])', sub, text)


def ttl_within(granted, slack=2):
    """A normaliser for timetolive/keepalive replies: a remaining "TTL" in
    [granted-slack, granted] becomes <TTL~granted> (the two servers are not
    asked at the same instant)."""
    def f(text):
        def sub(m):
            v = int(m.group(1))
            return '"TTL":"<TTL~%d>"' % granted if granted - slack <= v <= granted else m.group(0)
        return sorted_keys(re.sub(r'"TTL":"(-?\d+)"', sub, text))
    return f


# Headers compared on every reply.  Framing headers (Transfer-Encoding,
# Content-Length, Trailer) and the CORS headers etcd adds to everything on
# its client URL are checked in TransportTest only.
COMPARED_HEADERS = ("content-type", "x-content-type-options", "location")


class GatewayCase(CompareCase):
    """A fresh etcd + server-under-test pair per test (harness.CompareCase);
    gw()/stream helpers send each request to both and compare."""

    def setUp(self):
        need("curl")
        super().setUp()
        self.ref, self.sut = self.pair.ref, self.pair.sut
        self.norms = {id(self.ref): Norm(self.ref), id(self.sut): Norm(self.sut)}

    def norm(self, srv, text):
        return self.norms[id(srv)](text)

    def view(self, srv, r, extra_norm=None, headers=COMPARED_HEADERS):
        if r.status is None:
            return ("no reply", r.error)
        body = self.norm(srv, r.text)
        if extra_norm:
            body = extra_norm(body)
        return (r.status, tuple((h, r.header(h)) for h in headers), body,
                ("body error: " + r.error) if r.error else None)

    def differ(self, what, a, b):
        with self.subTest(gateway=what):
            if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
                al = [repr(x) for x in a]
                bl = [repr(x) for x in b]
            else:
                al, bl = repr(a).split("\\n"), repr(b).split("\\n")
            diff = "\n".join(difflib.unified_diff(al, bl, "etcd", self.sut.label, lineterm="", n=3))
            self.fail("%s differs from etcd on %s\n%s" % (self.sut.label, what, diff))

    def gw(self, path, body=None, status=200, method="POST", headers=None, contains=None,
           norm=None, what=None):
        """Sends one request to both servers; compares status, COMPARED_HEADERS
        and the normalised body; checks etcd's status (and `contains`) to keep
        the test honest.  body: dict (JSON-encoded), str/bytes (as is), None (no
        body), or a function of the server returning one of those; path: a
        string, or a function of the server returning one.
        Returns (etcd reply, sut reply)."""
        replies = []
        for srv in (self.ref, self.sut):
            b = body(srv) if callable(body) else body
            if isinstance(b, (dict, list)):
                b = dumps(b)
            replies.append(http_call(srv.client_port, method, path(srv) if callable(path) else path, b, headers))
        ref, got = replies
        rv, gv = self.view(self.ref, ref, norm), self.view(self.sut, got, norm)
        label = what or "%s %s %s" % (method, path, (body if not callable(body) else "<per server>"))
        if rv != gv:
            self.differ(label, rv, gv)
        self.assertEqual(ref.status, status, "test bug: etcd replied %r to %s" % (ref, label))
        if contains is not None:
            self.assertIn(contains, ref.text, "test bug: etcd replied %r to %s" % (ref, label))
        return ref, got

    def json_of(self, r):
        try:
            return json.loads(r.text)
        except ValueError:
            return None

    # -- scope decisions (module docstring, SCOPE) ----------------------------
    def assert_unimplemented(self, path, body):
        """SCOPE 1: Engram answers a request this issue leaves to a later one
        as any gRPC error with code 12: 501, application/json, chunked, the
        Grpc-Trailer-Content-Type trailer, no Grpc-Metadata header, and the body
        {"error":M,"message":M,"code":12}.  Skipped when the server under test
        is etcd (it implements them; the callers then compare etcd with etcd)."""
        if self.sut_is_etcd:
            return
        if isinstance(body, (dict, list)):
            body = dumps(body)
        r = http_call(self.sut.client_port, "POST", path, body)
        try:
            j = json.loads(r.text, object_pairs_hook=lambda kv: kv)
        except ValueError:
            j = None
        got = {
            "status": r.status,
            "content-type": r.header("content-type"),
            "grpc-metadata-content-type": r.header("grpc-metadata-content-type"),
            "trailer": r.header("trailer"),
            "chunked": r.chunked,
            "trailers": r.trailers,
            "body keys": [k for k, _ in j] if isinstance(j, list) else r.text[:300],
            "code": dict(j).get("code") if isinstance(j, list) else None,
            "error == message": (isinstance(j, list) and isinstance(dict(j).get("error"), str)
                                 and dict(j).get("error") == dict(j).get("message")),
            "transport error": r.error,
        }
        want = {
            "status": 501,
            "content-type": "application/json",
            "grpc-metadata-content-type": None,
            "trailer": "Grpc-Trailer-Content-Type",
            "chunked": True,
            "trailers": {"grpc-trailer-content-type": "application/grpc"},
            "body keys": ["error", "message", "code"],
            "code": 12,
            "error == message": True,
            "transport error": None,
        }
        if got != want:
            with self.subTest(gateway="%s answers UNIMPLEMENTED (later issue)" % path):
                self.fail("%s: expected %r\ngot %r\n%r" % (self.sut.label, want, got, r))

    def alpha(self, path):
        """SCOPE 2: the path sent to the server under test where etcd gets
        path (/v3/...): Engram serves /v3alpha like /v3 (etcd 3.4.23 answers
        404 there: a deliberate difference, for python3-etcd3gw's default).
        etcd as the server under test gets /v3 too (the check is skipped)."""
        return path if self.sut_is_etcd else "/v3alpha" + path[len("/v3"):]

    def gw_decode_error(self, path, body, status):
        """A body etcd's gateway cannot decode: Engram's decoder follows Go's
        encoding/json + jsonpb rules and texts (server/gateway/gojson.h), so
        the answer is compared exactly, error text included."""
        return self.gw(path, body, status=status, contains='"error"')

    # -- streams -------------------------------------------------------------
    def open_streams(self, path, body, headers=None):
        s = [GwStream(srv, path, dumps(body) if isinstance(body, (dict, list)) else body, headers=headers)
             for srv in (self.ref, self.sut)]
        for x in s:
            self.addCleanup(x.close)
        return s

    def stream_view(self, st, extra_norm=None):
        r = st.reply
        if r.status is None:
            return ["no reply: %s" % r.error]
        out = ["%s %s" % (r.status, tuple((h, r.header(h)) for h in COMPARED_HEADERS))]
        for c in r.chunks:
            t = self.norm(st.server, c.decode("utf-8", "backslashreplace"))
            out.append(extra_norm(t) if extra_norm else t)
        return out

    def compare_streams(self, what, streams, extra_norm=None):
        rv, gv = (self.stream_view(s, extra_norm) for s in streams)
        if rv != gv:
            self.differ(what, rv, gv)
        return rv

    def compare_watch(self, what, streams):
        """Like compare_streams, but the event messages are grouped per watch
        ID: etcd orders the messages of different watchers of one revision
        arbitrarily (and history vs live), each watcher's own in order."""
        views = []
        for st in streams:
            v = self.stream_view(st)
            control, events = v[:1], {}
            for text in v[1:]:
                try:
                    res = json.loads(text).get("result", {})
                except (ValueError, AttributeError):
                    res = None
                if isinstance(res, dict) and "events" in res:
                    events.setdefault(res.get("watch_id", "0"), []).append(text)
                else:
                    control.append(text)
            views.append(control + ["events of watch %s: %s" % (k, events[k]) for k in sorted(events)])
        if views[0] != views[1]:
            self.differ(what, views[0], views[1])
        return views[0]

    def msgs(self, st):
        """The JSON messages of a stream (etcd: one message + "\\n" per chunk)."""
        out = []
        for line in st.reply.body.decode("utf-8", "replace").split("\n"):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except ValueError:
                    out.append(line)
        return out

    # -- small helpers ----------------------------------------------------------
    def put(self, key, value, **kw):
        body = {"key": b64(key), "value": b64(value)}
        body.update(kw)
        return self.gw("/v3/kv/put", body)

    def grant(self, lease_id, ttl):
        return self.gw("/v3/lease/grant", {"ID": lease_id, "TTL": ttl}, contains='"ID":"%d"' % lease_id)


# ---------------------------------------------------------------------------

class KVTest(GatewayCase):

    def test_put_range_delete(self):
        for prefix in ("/v3", "/v3beta"):
            k = "%s-" % prefix.strip("/")
            self.gw(prefix + "/kv/put", {"key": b64(k + "foo"), "value": b64("bar")}, contains='"revision":"')
            self.gw(prefix + "/kv/put", {"key": b64(k + "foo"), "value": b64("baz"), "prev_kv": True},
                    contains='"prev_kv":{')
            self.gw(prefix + "/kv/put", {"key": b64(k + "foo2"), "value": b64("\x00\xff<&>")})
            self.gw(prefix + "/kv/put", {"key": b64(k + "foo"), "ignore_value": True, "prev_kv": True})
            self.gw(prefix + "/kv/put", {"key": b64(k + "foo"), "value": b64("")})
            self.gw(prefix + "/kv/range", {"key": b64(k + "foo")}, contains='"count":"1"')
            self.gw(prefix + "/kv/range", {"key": b64(k + "nope")})
            self.gw(prefix + "/kv/range", {"key": b64(k), "range_end": b64(k[:-1] + chr(ord(k[-1]) + 1))})
            self.gw(prefix + "/kv/range", {"key": b64(k), "range_end": b64(k[:-1] + chr(ord(k[-1]) + 1)),
                                           "keys_only": True, "sort_order": "DESCEND", "sort_target": "KEY"})
            self.gw(prefix + "/kv/range", {"key": b64(k), "range_end": b64("\0"), "limit": 1, "count_only": False})
            self.gw(prefix + "/kv/range", {"key": b64(k), "range_end": b64("\0"), "count_only": True})
            self.gw(prefix + "/kv/range", {"key": b64(k + "foo"), "revision": 2})
            self.gw(prefix + "/kv/range", {"key": b64(k + "foo"), "serializable": True})
            self.gw(prefix + "/kv/range", {"key": b64("\0"), "range_end": b64("\0")}, contains='"kvs":[')
            self.gw(prefix + "/kv/deleterange", {"key": b64(k + "foo2"), "prev_kv": True}, contains='"deleted":"1"')
            self.gw(prefix + "/kv/deleterange", {"key": b64(k + "foo2")})        # deleted 0: omitted
            self.gw(prefix + "/kv/deleterange", {"key": b64(k), "range_end": b64(k[:-1] + chr(ord(k[-1]) + 1))})
        # the e2e testV3CurlPutGet bodies (encoding/json of the Go structs)
        self.gw("/v3/kv/put", '{"key":"Zm9v","value":"YmFy"}', contains='"revision":"')
        self.gw("/v3/kv/range", '{"key":"Zm9v"}', contains='"value":"')

    def test_txn(self):
        # e2e testV3CurlTxn: runtime.JSONPb{} (camelCase names, enum names)
        self.gw("/v3/kv/txn", '{"compare":[{"key":"Zm9v","target":"CREATE","createRevision":"0"}],'
                              '"success":[{"requestPut":{"key":"Zm9v","value":"YmFy"}}]}',
                contains='"succeeded":true,"responses":[{"response_put":{"header":{"revision":"2"}}}]')
        # e2e: "was crashing etcd server": unknown fields, a RequestOp with no request
        self.gw("/v3/kv/txn", '{"compare":[{"result":0,"target":1,"key":"Zm9v","TargetUnion":null}],'
                              '"success":[{"Request":{"RequestPut":{"key":"Zm9v","value":"YmFy"}}}]}',
                status=400, contains='"error"')
        t = {"compare": [{"key": b64("foo"), "target": "VALUE", "value": b64("bar")}],
             "success": [{"request_range": {"key": b64("foo")}},
                         {"request_put": {"key": b64("t1"), "value": b64("1"), "prev_kv": True}},
                         {"request_delete_range": {"key": b64("foo"), "prev_kv": True}}],
             "failure": [{"request_put": {"key": b64("t2"), "value": b64("2")}}]}
        self.gw("/v3/kv/txn", t, contains='"succeeded":true')
        self.gw("/v3/kv/txn", t)                               # now the compare fails
        self.gw("/v3/kv/txn", {"compare": [{"key": b64("t1"), "result": "GREATER", "target": "MOD",
                                            "mod_revision": 1}],
                               "success": [{"request_txn": {"success": [{"request_range": {"key": b64("t1")}}]}}]})
        self.gw("/v3/kv/txn", {"compare": [{"key": b64("t1"), "target": "VERSION", "version": "1",
                                            "result": "NOT_EQUAL"}]})
        self.gw("/v3/kv/txn", {})
        self.gw("/v3/kv/txn", {"success": [{"request_put": {"key": b64("a"), "value": b64("1")}},
                                           {"request_put": {"key": b64("a"), "value": b64("2")}}]},
                status=400, contains="etcdserver: duplicate key given in txn request")
        self.gw("/v3/kv/txn", {"success": [{"request_put": {"key": b64("a"), "value": b64("1"), "lease": 99}}]},
                status=404, contains="etcdserver: requested lease not found")

    def test_compaction(self):
        for i in range(4):
            self.put("c", str(i))
        self.gw("/v3/kv/compaction", {"revision": 3}, contains='"revision":"5"')
        self.gw("/v3/kv/range", {"key": b64("c"), "revision": 2}, status=400,
                contains='{"error":"etcdserver: mvcc: required revision has been compacted",'
                         '"message":"etcdserver: mvcc: required revision has been compacted","code":11}')
        self.gw("/v3/kv/range", {"key": b64("c"), "revision": 3})
        self.gw("/v3/kv/range", {"key": b64("c"), "revision": 100}, status=400,
                contains="etcdserver: mvcc: required revision is a future revision")
        self.gw("/v3/kv/compaction", {"revision": 2}, status=400, contains='"code":11')
        self.gw("/v3/kv/compaction", {"revision": 100}, status=400, contains='"code":11')
        self.gw("/v3/kv/compaction", {"revision": 4, "physical": True})
        self.gw("/v3beta/kv/compaction", {"revision": 5})


class JsonDecodingTest(GatewayCase):
    """What the gateway's decoder (golang/protobuf jsonpb via grpc-gateway 1.x)
    accepts, and the exact error bodies of what it rejects."""

    def test_lenient(self):
        self.put("foo", "bar")
        ok = [
            '{"key":"Zm9v","bogus":1,"nested":{"x":[1,2]}}',   # unknown fields ignored
            '{"key":"Zm9v","keysOnly":true}',                   # lowerCamel json_name
            '{"key":"Zm9v","keys_only":true}',                  # original proto name
            '{"key":"Zm9v","limit":1}',                         # int64 as a number
            '{"key":"Zm9v","limit":"1"}',                       # int64 as a string
            '{"key":"Zm9v","limit":-1}',
            '{"key":"Zm9v","sort_order":"DESCEND"}',            # enum by name
            '{"key":"Zm9v","sort_order":2}',                    # enum by number
            '{"key":"Zm9v","sort_order":7}',                    # unknown enum number
            '{"key":"Zm9v","keys_only":null}',                  # null = default
            '{"key":"Zm9v"} trailing garbage',                  # only the first value is read
            '{"key":"Zm9v"}{"key":"YQ=="}',
            '  {"key":"Zm9v"}  ',
            '{"key":"Zm9v","key":"YQ=="}',                      # duplicate: the last wins
            # SCOPE 3 does not apply here: etcd accepts this (Go's base64 skips
            # \r and \n), so it is no error text; compared exactly
            '{"key":"Zm9v\\n"}',                                # newline inside base64 ignored
            '{"KEY":"Zm9v"}',                                   # names are case-sensitive: ignored
        ]
        for b in ok:
            self.gw("/v3/kv/range", b, status=400 if "KEY" in b else 200)
        # Content-Type is not looked at (curl -d sends x-www-form-urlencoded)
        for ct in ("application/x-www-form-urlencoded", "application/grpc", "text/plain", "application/json"):
            self.gw("/v3/kv/range", '{"key":"Zm9v"}', headers={"Content-Type": ct})
        self.gw("/v3/kv/range?key=YQ==&x=1", '{"key":"Zm9v"}', contains='"count":"1"')  # query ignored

    def test_errors(self):
        bad = [
            ("", 400),                                          # empty body: empty request -> key not provided
            ("null", 400),
            ('{"key":', 400),                                   # unexpected EOF
            ('{"key":"Zm9v",}', 400),
            ("xyz", 400),
            ('"str"', 400),
            ("5", 400),
            ("[]", 400),
            ('{"key":123}', 400),                               # wrong type for bytes
            ('{"key":true}', 400),
            ('{"key":"@@@"}', 400),                             # bad base64
            ('{"key":"Zm9vYg"}', 400),                          # unpadded base64
            ('{"key":"-_8="}', 400),                            # URL-safe alphabet
            ('{"key":"Zm9v","limit":"abc"}', 400),
            ('{"key":"Zm9v","limit":"1x"}', 400),
            ('{"key":"Zm9v","limit":1.5}', 400),
            ('{"key":"Zm9v","limit":1e2}', 400),
            ('{"key":"Zm9v","limit":"9223372036854775808"}', 400),
            ('{"key":"Zm9v","revision":{}}', 400),
            ('{"key":"Zm9v","serializable":"true"}', 400),
            ('{"key":"Zm9v","keys_only":1}', 400),
            ('{"key":"Zm9v","sort_order":"BOGUS"}', 400),
            ('{"key":"Zm9v","sort_order":"descend"}', 400),
            ('{"key":"Zm9v","sort_order":1.5}', 400),
            ('{"key":"Zm9v" "a":1}', 400),
        ]
        # Go's decode error texts, compared exactly (gw_decode_error)
        for b, st in bad:
            self.gw_decode_error("/v3/kv/range", b, st)
        self.gw("/v3/kv/range", None, status=400, contains="etcdserver: key is not provided")  # no body at all
        self.gw_decode_error("/v3/kv/put", '{"key":"Zm9v","value":5}', 400)
        self.gw_decode_error("/v3/lease/grant", '{"TTL":"x"}', 400)
        self.gw_decode_error("/v3/kv/txn", '{"compare":[{"key":"Zm9v","target":"NOPE"}]}', 400)
        self.gw_decode_error("/v3/kv/txn", '{"success":{"request_put":{}}}', 400)


class RoutingTest(GatewayCase):

    def test_routes(self):
        self.put("foo", "bar")
        body = '{"key":"Zm9v"}'
        self.gw("/v3beta/kv/range", body, contains='"count":"1"')
        # SCOPE 2: etcd 3.4 does not serve /v3alpha ("404 page not found");
        # Engram serves it like /v3 on purpose (python3-etcd3gw's default), so
        # its /v3alpha answers are compared with etcd's /v3 answers
        for path, b, st, method in (("/v3/kv/range", body, 200, "POST"),
                                    ("/v3/kv/put", '{"key":"YWxwaGE=","value":"MQ=="}', 200, "POST"),
                                    ("/v3/kv/range", '{"key":"YWxwaGE="}', 200, "POST"),
                                    ("/v3/kv/bogus", body, 404, "POST"),
                                    ("/v3/kv/range", None, 405, "GET")):
            self.gw(lambda srv, p=path: p if srv is self.ref else self.alpha(p), b, status=st, method=method,
                    what="%s %s (etcd) vs %s (%s) %s" % (method, path, self.alpha(path), self.sut.label, b))
        self.gw("/v3/kv/bogus", body, status=404)                 # gateway mux: "Not Found\n"
        self.gw("/v3/kv/range/extra", body, status=404)
        self.gw("/v3/kv/range:verb", body, status=404)
        self.gw("/v3/", body, status=404)
        self.gw("/v3beta/kv/bogus", body, status=404)
        self.gw("/bogus", body, status=404, contains="404 page not found")   # outside /v3/
        self.gw("/v3/kv/range", method="GET", status=405)        # "Method Not Allowed\n"
        self.gw("/v3/kv/range", body, method="PUT", status=405)
        self.gw("/v3/kv/range", body, method="DELETE", status=405)
        self.gw("/v3/watch", method="GET", status=405)
        self.gw("/v3/kv/bogus", method="GET", status=404)
        self.gw("/v3", body, status=301)                         # Location: /v3/
        self.gw("//v3/kv/range", body, status=301)               # Location: /v3/kv/range
        self.gw("/v3/kv/range", method="OPTIONS", status=200)    # CORS preflight: empty 200
        self.gw("/v3/bogus", method="OPTIONS", status=200)
        # /v3/maintenance/hash is registered for Hash and HashKV; Hash (first) wins
        ref, got = self.gw("/v3/maintenance/hash", {}, norm=lambda t: re.sub(r'"hash":\d+', '"hash":<N>', t))
        self.assertNotIn("hash_revision", ref.text)


class LeaseTest(GatewayCase):

    def test_grant_revoke_ttl_leases(self):
        self.grant(1000, 30)
        self.grant(2000, 60)
        self.gw("/v3/lease/grant", {"ID": 1000, "TTL": 30}, status=412, contains="etcdserver: lease already exists")
        self.gw("/v3/lease/grant", {"ID": 3000, "TTL": 1000000000000}, status=400,
                contains="etcdserver: too large lease TTL")
        self.gw("/v3/lease/grant", '{"ID":"4000","TTL":"20"}', contains='"TTL":"20"')
        self.put("lk1", "v", lease=1000)
        self.put("lk2", "v", lease="1000")
        self.gw("/v3/kv/put", {"key": b64("x"), "value": b64("v"), "lease": 12345}, status=404,
                contains='{"error":"etcdserver: requested lease not found",'
                         '"message":"etcdserver: requested lease not found","code":5}')
        for p in ("/v3/lease/timetolive", "/v3/kv/lease/timetolive"):
            self.gw(p, {"ID": 1000, "keys": True}, contains='"grantedTTL":"30"', norm=ttl_within(30))
            self.gw(p, {"ID": 2000}, norm=ttl_within(60))
            self.gw(p, {"ID": 77}, contains='"TTL":"-1"')
        for p in ("/v3/lease/leases", "/v3/kv/lease/leases"):
            self.gw(p, "{}", contains='"ID":"1000"')
            self.gw(p, "")
        self.gw("/v3/lease/revoke", {"ID": 1000}, contains='"revision":"')
        self.gw("/v3/kv/range", {"key": b64("lk1"), "range_end": b64("lk3")})
        self.gw("/v3/kv/lease/revoke", {"ID": 1000}, status=404, contains="etcdserver: requested lease not found")
        self.gw("/v3/lease/revoke", {"ID": 1000}, status=404)
        self.gw("/v3/kv/lease/revoke", {"ID": 2000})
        self.gw("/v3beta/lease/revoke", {"ID": 4000})
        self.gw("/v3/lease/leases", {})

    def test_generated_ids(self):
        # ID 0: the server picks one (normalised to <GEN_LEASE1>)
        self.gw("/v3/lease/grant", {"TTL": 30}, contains='"TTL":"30"')
        self.gw("/v3/lease/leases", {})

    def test_keepalive_stream(self):
        self.grant(1000, 30)
        self.grant(2000, 40)
        cases = [
            ({"ID": 1000}, 1),
            ('{"ID":1000}{"ID":2000}{"ID":3}', 3),              # one reply per request, in order
            ('{"ID":1000} junk', 1),                            # decode error after the first: stream ends
            ("", 0),                                            # no request: 200, empty chunked body
        ]
        for body, n in cases:
            st = self.open_streams("/v3/lease/keepalive", body)
            for s in st:
                s.finish(5)
            rv = self.compare_streams("keepalive %r" % (body,), st)
            self.assertEqual(st[0].reply.status, 200, rv)
            self.assertEqual(len(self.msgs(st[0])), n, rv)
            self.assertTrue(st[0].reply.complete, "etcd: keepalive stream did not end")
        st = self.open_streams("/v3/lease/keepalive", "junk")
        for s in st:
            s.finish(5)
        self.compare_streams("keepalive junk", st)
        self.assertEqual(st[0].reply.status, 500)
        self.assertIn('"code":2}', st[0].reply.text)


class WatchTest(GatewayCase):

    def test_watch_put_delete(self):
        for prefix in ("/v3", "/v3beta"):
            st = self.open_streams(prefix + "/watch", {"create_request": {"key": b64("foo")}})
            for s in st:
                s.pieces(1)
            self.assertIn('"created":true', st[0].reply.text)
            for srv in (self.ref, self.sut):
                http_call(srv.client_port, "POST", "/v3/kv/put", dumps({"key": b64("foo"), "value": b64("1")}))
                http_call(srv.client_port, "POST", "/v3/kv/deleterange", dumps({"key": b64("foo")}))
            for s in st:
                s.pieces(3)
            rv = self.compare_streams(prefix + "/watch create, put, delete", st)
            self.assertEqual(len(rv), 4, rv)
            self.assertIn('"type":"DELETE"', rv[3])
            self.assertTrue(all(c.endswith("}\n") for c in rv[1:]), rv)   # one message + "\n" per chunk
            for s in st:
                s.close()
            # the client going away cancels the gRPC stream and its watchers
            for srv in (self.ref, self.sut):
                try:
                    srv.wait_watch_streams_closed(timeout=5)
                except AssertionError as e:
                    with self.subTest(gateway="watch stream closed with the HTTP connection", server=srv.label):
                        self.fail(str(e))

    def test_watch_many_requests_one_body(self):
        for k in ("a", "b", "c"):
            self.put(k, "0")
        body = (dumps({"create_request": {"key": b64("a")}}) +
                dumps({"create_request": {"key": b64("b"), "watch_id": 5, "prev_kv": True}}) + " " +
                dumps({"progress_request": {}}) + "\n" +
                dumps({"cancel_request": {"watch_id": 0}}) +
                dumps({"create_request": {"key": b64("c"), "start_revision": 2, "filters": ["NODELETE"]}}) +
                dumps({"create_request": {"key": b64("b"), "range_end": b64("a")}}) +
                dumps({"create_request": {"key": b64("\0"), "range_end": b64("\0"), "start_revision": 3}}) +
                "{}" + dumps({"create_request": {"key": b64("z")}}) + " garbage {")
        st = self.open_streams("/v3/watch", body)
        for s in st:
            s.pieces(10)
        for srv in (self.ref, self.sut):
            for k in ("a", "b", "c"):
                http_call(srv.client_port, "POST", "/v3/kv/put", dumps({"key": b64(k), "value": b64("1")}))
        for s in st:
            # 8 control replies + 2 history messages + a (watch 2), b (5 and 2), c (1 and 2)
            s.pieces(15, timeout=3)
        rv = self.compare_watch("watch: several requests in one body", st)
        self.assertIn('"watch_id":"-1"', rv[3])            # progress response
        self.assertIn('"canceled":true', rv[4])
        self.assertEqual(len(st[0].reply.chunks), 15, rv)

    def test_watch_compacted_and_errors(self):
        for i in range(4):
            self.put("k", str(i))
        self.gw("/v3/kv/compaction", {"revision": 4})
        st = self.open_streams("/v3/watch", {"create_request": {"key": b64("k"), "start_revision": 2}})
        for s in st:
            s.pieces(2)
        rv = self.compare_streams("watch from a compacted revision", st)
        self.assertIn('"compact_revision":"4"', "".join(rv))
        # a first request that does not decode: an ordinary error reply (code 2, HTTP 500)
        for body in ('{"create_request":{"key":"YQ=="', '{"create_request":5}', "junk"):
            st = self.open_streams("/v3/watch", body)
            for s in st:
                s.finish(5)
            rv = self.compare_streams("watch with body %r" % body, st)
            self.assertEqual(st[0].reply.status, 500, rv)


class MaintenanceClusterTest(GatewayCase):

    STATUS_34 = ("header", "version", "dbSize", "leader", "raftIndex", "raftTerm", "raftAppliedIndex",
                 "dbSizeInUse")

    def test_status(self):
        ref, got = (http_call(s.client_port, "POST", "/v3/maintenance/status", "{}") for s in (self.ref, self.sut))
        self.assertEqual(ref.status, 200, ref)
        rj, gj = self.json_of(ref), self.json_of(got)
        self.assertEqual(list(rj), list(self.STATUS_34), "test bug: etcd's status fields changed: %r" % ref)
        if not isinstance(gj, dict) or got.status != 200:
            return self.differ("/v3/maintenance/status", self.view(self.ref, ref), self.view(self.sut, got))
        missing = [k for k in self.STATUS_34 if k not in gj]
        if missing:
            self.differ("/v3/maintenance/status fields", list(rj), list(gj))
        if gj.get("leader") != gj.get("header", {}).get("member_id"):
            self.differ("/v3/maintenance/status leader == member_id", rj, gj)
        for k in ("dbSize", "raftIndex", "raftTerm", "raftAppliedIndex", "dbSizeInUse"):
            if not re.match(r"^\d+$", str(gj.get(k))) or not isinstance(gj.get(k), str):
                self.differ("/v3/maintenance/status %s is an int64 string" % k, rj.get(k), gj.get(k))
        if self.norm(self.ref, dumps(rj["header"])) != self.norm(self.sut, dumps(gj.get("header"))):
            self.differ("/v3/maintenance/status header", rj["header"], gj.get("header"))
        self.assertEqual(ref.header("content-type"), got.header("content-type"))

    def test_maintenance(self):
        self.put("a", "1")
        self.gw("/v3/maintenance/alarm", {}, contains="{}")                 # no header at all
        self.gw("/v3/maintenance/alarm", {"action": "GET"})
        self.gw("/v3/maintenance/defragment", {}, contains="{}")
        self.gw("/v3/maintenance/hash", {}, norm=lambda t: re.sub(r'"hash":\d+', '"hash":<N>', t),
                contains='"hash":')
        self.gw("/v3/maintenance/transfer-leadership", lambda srv: {"targetID": str(srv.member_id)},
                contains="{}")
        self.gw("/v3/maintenance/transfer-leadership", {"targetID": "1"}, status=412,
                contains="etcdserver: bad leader transferee")
        self.gw("/v3/maintenance/alarm", lambda srv: {"action": "ACTIVATE", "memberID": str(srv.member_id),
                                                      "alarm": "NOSPACE"}, contains='"alarm":"NOSPACE"')
        self.gw("/v3/maintenance/alarm", {"action": "GET"})
        self.gw("/v3/kv/put", {"key": b64("b"), "value": b64("1")}, status=429,
                contains="etcdserver: mvcc: database space exceeded")
        self.gw("/v3/maintenance/alarm", lambda srv: {"action": "DEACTIVATE", "memberID": str(srv.member_id),
                                                      "alarm": "NOSPACE"})
        self.gw("/v3/maintenance/alarm", {"action": "GET"})

    def test_snapshot(self):
        self.put("a", "1")
        # SCOPE 1: Maintenance.Snapshot belongs to a later issue: Engram answers
        # UNIMPLEMENTED; the stream checks below run when etcd is under test
        if not self.sut_is_etcd:
            self.assert_unimplemented("/v3/maintenance/snapshot", {})
            self.assert_unimplemented("/v3beta/maintenance/snapshot", {})
            return
        st = self.open_streams("/v3/maintenance/snapshot", {})
        for s in st:
            s.finish(10)
        for s in st:
            with self.subTest(gateway="snapshot stream", server=s.server.label):
                r = s.reply
                self.assertEqual((r.status, r.header("content-type"), r.chunked), (200, "application/json", True),
                                 r)
                ms = self.msgs(s)
                self.assertGreaterEqual(len(ms), 2, r)
                blobs = [base64.b64decode(m["result"]["blob"]) for m in ms]
                self.assertTrue(all(set(m) == {"result"} for m in ms), ms[:1])
                self.assertEqual(hashlib.sha256(b"".join(blobs[:-1])).digest(), blobs[-1],
                                 "the last message is the sha256 of the data before it")

    def test_members(self):
        self.gw("/v3/cluster/member/list", {}, contains='"members":[{"ID":"')
        self.gw("/v3/cluster/member/list", "")
        self.gw("/v3beta/cluster/member/list", {})
        # SCOPE 1: membership changes belong to a later issue: Engram answers
        # UNIMPLEMENTED; the comparisons below run when etcd is under test.
        # (member add is never sent to etcd: a second, absent voter would cost
        # the single-member cluster its quorum.)
        if not self.sut_is_etcd:
            self.assert_unimplemented("/v3/cluster/member/add", {"peerURLs": ["http://127.0.0.1:1"]})
            self.assert_unimplemented("/v3/cluster/member/add", {"peerURLs": ["http://127.0.0.1:1"], "isLearner": True})
            self.assert_unimplemented("/v3/cluster/member/remove", {"ID": "1234"})
            self.assert_unimplemented("/v3/cluster/member/promote", {"ID": str(self.sut.member_id)})
            self.assert_unimplemented("/v3/cluster/member/update",
                                      {"ID": str(self.sut.member_id), "peerURLs": [self.sut.peer_url]})
            self.assert_unimplemented("/v3beta/cluster/member/remove", {"ID": "1234"})
            self.gw("/v3/cluster/member/list", {})                   # nothing changed
            return
        self.gw("/v3/cluster/member/remove", {"ID": "1234"}, status=404, contains="etcdserver: member not found")
        self.gw("/v3/cluster/member/promote", lambda srv: {"ID": str(srv.member_id)}, status=412,
                contains="etcdserver: can only promote a learner member")
        self.gw("/v3/cluster/member/update", lambda srv: {"ID": str(srv.member_id), "peerURLs": [srv.peer_url]},
                contains='"members":[')


class AuthTest(GatewayCase):
    """e2e testV3CurlAuth, plus the token in other headers and bad tokens."""

    AUTH_REQUESTS = [
        ("/v3/auth/user/add", '{"name":"root","password":"toor","options":{}}'),
        ("/v3/auth/user/get", '{"name":"root"}'),
        ("/v3/auth/user/list", "{}"),
        ("/v3/auth/user/changepw", '{"name":"root","password":"x"}'),
        ("/v3/auth/user/grant", '{"user":"root","role":"root"}'),
        ("/v3/auth/user/revoke", '{"name":"root","role":"root"}'),
        ("/v3/auth/user/delete", '{"name":"root"}'),
        ("/v3/auth/role/add", '{"name":"root"}'),
        ("/v3/auth/role/get", '{"role":"root"}'),
        ("/v3/auth/role/list", "{}"),
        ("/v3/auth/role/grant", '{"name":"root","perm":{"permType":"READ","key":"YQ=="}}'),
        ("/v3/auth/role/revoke", '{"role":"root","key":"YQ=="}'),
        ("/v3/auth/role/delete", '{"role":"root"}'),
        ("/v3/auth/enable", "{}"),
        ("/v3/auth/authenticate", '{"name":"root","password":"toor"}'),
        ("/v3/auth/disable", "{}"),
        ("/v3beta/auth/enable", "{}"),
        ("/v3/auth/user/list", ""),
    ]

    def test_auth(self):
        # SCOPE 1: auth belongs to a later issue: Engram answers every
        # /v3/auth/* route UNIMPLEMENTED; the comparison with etcd below runs
        # when etcd is under test
        if not self.sut_is_etcd:
            for path, body in self.AUTH_REQUESTS:
                self.assert_unimplemented(path, body)
            self.gw("/v3/kv/put", '{"key":"Zm9v","value":"YmFy"}', contains='"revision":"')   # auth stayed off
            return
        users = [("root", "toor", '{"name":"root","password":"toor","options":{}}'),
                 ("nonroot", "pass", '{"name":"nonroot","password":"pass","options":{}}'),
                 ("nooption", "pass", '{"name":"nooption","password":"pass"}')]
        for _, _, body in users:
            self.gw("/v3/auth/user/add", body, contains="revision")
        self.gw("/v3/auth/user/add", '{"name":"root","password":"x"}', status=412)
        self.gw("/v3/auth/role/add", '{"name":"root"}', contains="revision")
        for u, _, _ in users:
            self.gw("/v3/auth/user/grant", {"user": u, "role": "root"}, contains="revision")
        self.gw("/v3/auth/user/list", {})
        self.gw("/v3/auth/user/get", {"name": "root"}, contains='"roles":["root"]')
        self.gw("/v3/auth/user/get", {"name": "nobody<>"}, status=412)
        self.gw("/v3/auth/role/list", {})
        self.gw("/v3/auth/role/get", {"role": "root"})
        self.gw("/v3/auth/enable", "{}", contains="revision")
        tokens = {}
        for i, (u, pw, _) in enumerate(users):
            put = dumps({"key": b64("foo%d" % i), "value": b64("bar%d" % i)})
            self.gw("/v3/kv/put", put, status=400, contains='"error"')
            self.gw("/v3/auth/authenticate", {"name": u, "password": pw}, contains='"token":"')
            for srv in (self.ref, self.sut):
                r = http_call(srv.client_port, "POST", "/v3/auth/authenticate", dumps({"name": u, "password": pw}))
                tokens[(id(srv), u)] = (self.json_of(r) or {}).get("token", "")
            replies = [http_call(srv.client_port, "POST", "/v3/kv/put", put,
                                 {"Authorization": tokens[(id(srv), u)]}) for srv in (self.ref, self.sut)]
            rv, gv = self.view(self.ref, replies[0]), self.view(self.sut, replies[1])
            if rv != gv:
                self.differ("put with Authorization: <token of %s>" % u, rv, gv)
            self.assertIn("revision", replies[0].text)
        self.gw("/v3/auth/authenticate", {"name": "root", "password": "bad"}, status=400,
                contains="etcdserver: authentication failed, invalid user ID or password")
        self.gw("/v3/kv/range", {"key": b64("foo0")}, headers={"Authorization": "bogus.1"}, status=401,
                contains='"code":16')
        # gRPC metadata "token" through a Grpc-Metadata-Token header
        replies = [http_call(srv.client_port, "POST", "/v3/kv/range", dumps({"key": b64("foo0")}),
                             {"Grpc-Metadata-Token": tokens[(id(srv), "root")]}) for srv in (self.ref, self.sut)]
        rv, gv = self.view(self.ref, replies[0]), self.view(self.sut, replies[1])
        if rv != gv:
            self.differ("range with Grpc-Metadata-Token", rv, gv)
        self.assertIn('"count":"1"', replies[0].text)
        replies = [http_call(srv.client_port, "POST", "/v3/auth/disable", "{}",
                             {"Authorization": tokens[(id(srv), "root")]}) for srv in (self.ref, self.sut)]
        rv, gv = self.view(self.ref, replies[0]), self.view(self.sut, replies[1])
        if rv != gv:
            self.differ("auth disable", rv, gv)
        self.assertEqual(replies[0].status, 200, replies[0])


class LockTest(GatewayCase):

    def test_lock_unlock(self):
        self.grant(0x1000, 60)
        self.grant(0x2000, 60)
        ref, _ = self.gw("/v3/lock/lock", {"name": b64("lk"), "lease": 0x1000}, contains='"key":"%s"' % b64("lk/1000"))
        self.gw("/v3/kv/range", {"key": b64("lk/"), "range_end": b64("lk0")})
        # a second locker waits until the first unlocks
        results = {}

        def lock2(srv):
            results[id(srv)] = http_call(srv.client_port, "POST", "/v3/lock/lock",
                                         dumps({"name": b64("lk"), "lease": 0x2000}), timeout=15)
        ts = [threading.Thread(target=lock2, args=(srv,)) for srv in (self.ref, self.sut)]
        for t in ts:
            t.start()
        for srv in (self.ref, self.sut):
            def two_waiters(srv=srv):
                r = http_call(srv.client_port, "POST", "/v3/kv/range",
                              dumps({"key": b64("lk/"), "range_end": b64("lk0"), "count_only": True}))
                return '"count":"2"' in r.text
            try:
                wait_until(two_waiters, 5, "%s: the second locker's key" % srv.label)
            except AssertionError as e:
                with self.subTest(gateway="second /v3/lock/lock waits", server=srv.label):
                    self.fail(str(e))
        self.assertFalse(id(self.ref) in results, "test bug: etcd's second lock did not wait")
        self.gw("/v3/lock/unlock", {"key": b64("lk/1000")}, contains='"revision":"')
        for t in ts:
            t.join(15)
        rv = self.view(self.ref, results.get(id(self.ref), Reply()))
        gv = self.view(self.sut, results.get(id(self.sut), Reply()))
        if rv != gv:
            self.differ("the second /v3/lock/lock, after the unlock", rv, gv)
        self.assertIn('"key":"%s"' % b64("lk/2000"), results[id(self.ref)].text)
        self.gw("/v3/lock/unlock", {"key": b64("lk/2000")})
        self.gw("/v3/lock/unlock", {"key": b64("lk/2000")})            # nothing to delete: still 200
        self.gw("/v3/lock/unlock", {}, status=500,
                contains='{"error":"etcdserver: key is not provided","message":"etcdserver: key is not provided",'
                         '"code":2}')
        self.gw("/v3/lock/lock", {"name": b64("lk"), "lease": 999}, status=500,
                contains='"error":"etcdserver: requested lease not found"')
        self.gw("/v3beta/lock/lock", {"name": b64("lk2"), "lease": 0x1000})
        self.gw("/v3/lock/unlock", {"key": b64("lk2/1000")})

    def test_lock_without_lease(self):
        # the server grants a 60 s lease for the lock (etcd: concurrency.NewSession)
        for srv in (self.ref, self.sut):
            with self.subTest(gateway="/v3/lock/lock without a lease", server=srv.label):
                r = http_call(srv.client_port, "POST", "/v3/lock/lock", dumps({"name": b64("nl")}))
                j = self.json_of(r) or {}
                self.assertEqual(r.status, 200, r)
                key = base64.b64decode(j.get("key", "")).decode()
                m = re.match(r"^nl/([0-9a-f]+)$", key)
                self.assertTrue(m, key)
                t = http_call(srv.client_port, "POST", "/v3/lease/timetolive", dumps({"ID": int(m.group(1), 16)}))
                self.assertIn('"grantedTTL":"60"', t.text)
                http_call(srv.client_port, "POST", "/v3/lease/revoke", dumps({"ID": int(m.group(1), 16)}))


class ElectionTest(GatewayCase):

    MISSING = '{"error":"\\"leader\\" field must be provided","message":"\\"leader\\" field must be provided","code":2}'

    def test_missing_leader(self):
        for p in ("/v3", "/v3beta"):
            # e2e TestV3CurlProclaimMissiongLeaderKeyNoTLS / TestV3CurlResignMissiongLeaderKeyNoTLS
            self.gw(p + "/election/proclaim", '{"value":"djI="}', status=500, contains=self.MISSING)
            self.gw(p + "/election/resign", "{}", status=500, contains=self.MISSING)
        self.gw("/v3/election/leader", {"name": b64("none")}, status=500,
                contains='{"error":"election: no leader","message":"election: no leader","code":2}')

    def test_campaign_proclaim_observe_resign(self):
        self.grant(0x3e8, 60)
        self.grant(0x7d0, 60)
        leader1 = {"name": b64("el"), "key": b64("el/3e8"), "rev": "2", "lease": "1000"}
        self.gw("/v3/election/campaign", {"name": b64("el"), "lease": 1000, "value": b64("v1")},
                contains='"leader":{"name":"ZWw=","key":"ZWwvM2U4","rev":"2","lease":"1000"}')
        self.gw("/v3/election/leader", {"name": b64("el")}, contains='"value":"djE="')
        st = self.open_streams("/v3/election/observe", {"name": b64("el")})
        for s in st:
            s.pieces(1)
        self.gw("/v3/election/proclaim", {"leader": leader1, "value": b64("v2")}, contains='"revision":"3"')
        for s in st:
            s.pieces(2)
        rv = self.compare_streams("observe: current leader, then a proclaim", st)
        self.assertEqual(len(rv), 3, rv)
        self.assertIn('"value":"djI="', rv[2])
        self.gw("/v3/election/proclaim", {"leader": dict(leader1, key=b64("el/bogus")), "value": b64("x")},
                status=500, contains='"error":"election: not leader"')
        # a second candidate waits for the leader to resign
        results = {}

        def campaign2(srv):
            results[id(srv)] = http_call(srv.client_port, "POST", "/v3/election/campaign",
                                         dumps({"name": b64("el"), "lease": 2000, "value": b64("w")}), timeout=15)
        ts = [threading.Thread(target=campaign2, args=(srv,)) for srv in (self.ref, self.sut)]
        for t in ts:
            t.start()
        for srv in (self.ref, self.sut):
            def two(srv=srv):
                r = http_call(srv.client_port, "POST", "/v3/kv/range",
                              dumps({"key": b64("el/"), "range_end": b64("el0"), "count_only": True}))
                return '"count":"2"' in r.text
            try:
                wait_until(two, 5, "%s: the second candidate's key" % srv.label)
            except AssertionError as e:
                with self.subTest(gateway="second campaign waits", server=srv.label):
                    self.fail(str(e))
        self.assertFalse(id(self.ref) in results, "test bug: etcd's second campaign did not wait")
        self.gw("/v3/election/resign", {"leader": leader1}, contains='"revision":"')
        for t in ts:
            t.join(15)
        rv = self.view(self.ref, results.get(id(self.ref), Reply()))
        gv = self.view(self.sut, results.get(id(self.sut), Reply()))
        if rv != gv:
            self.differ("the second campaign, after the resign", rv, gv)
        for s in st:
            s.pieces(3, timeout=3)
        self.compare_streams("observe: the new leader", st)
        self.gw("/v3/election/resign", {"leader": leader1})                # not the leader any more: 200
        self.gw("/v3/election/leader", {"name": b64("el")}, contains='"value":"dw=="')
        self.gw("/v3beta/election/leader", {"name": b64("el")})

    def test_e2e_campaign(self):
        # e2e testV3CurlCampaign: no lease (the server grants one), then proclaim with the returned leader key
        for srv in (self.ref, self.sut):
            with self.subTest(gateway="e2e campaign + proclaim", server=srv.label):
                r = http_call(srv.client_port, "POST", "/v3/election/campaign",
                              '{"name":"L2VsZWN0aW9uLXByZWZpeA==","value":"djE="}')
                self.assertEqual(r.status, 200, r)
                lines = r.text.split("\n")
                self.assertEqual(len(lines), 1, lines)
                self.assertIn('"leader":{"name":"', lines[0])
                ld = json.loads(lines[0])["leader"]
                self.assertEqual(base64.b64decode(ld["key"]).decode(), "/election-prefix/%x" % int(ld["lease"]))
                p = dumps({"leader": {"name": ld["name"], "key": ld["key"],
                                      "rev": int(ld["rev"]), "lease": int(ld["lease"])}, "value": b64("v2")})
                r2 = http_call(srv.client_port, "POST", "/v3/election/proclaim", p)
                self.assertIn('"revision":', r2.text)
                # the generated lease (and so the key) differs: revoke it, so the keyspaces match
                r3 = http_call(srv.client_port, "POST", "/v3/lease/revoke", dumps({"ID": ld["lease"]}))
                self.assertEqual(r3.status, 200, r3)


class MaxStreamsTest(GatewayCase):
    """e2e testV3CurlMaxStream: every gateway call rides one HTTP/2 connection
    from the gateway to the server, so --max-concurrent-streams also caps the
    gateway: with N watch streams open, the next call waits (curl -m 5 gets
    "Operation timed out"); it goes through once a stream closes."""

    SERVER_ARGS = ("--max-concurrent-streams", "3")

    def test_limit(self):
        self.put("foo", "bar")
        ws = []
        for i in range(2):
            st = self.open_streams("/v3/watch", {"create_request": {"key": b64("foo"), "start_revision": 1}})
            for s in st:
                s.pieces(2)
            ws.append(st)
        self.gw("/v3/kv/range", {"key": b64("foo")}, contains='"revision":"')        # below the limit
        st = self.open_streams("/v3/watch", {"create_request": {"key": b64("foo"), "start_revision": 1}})
        for s in st:
            s.pieces(2)
        ws.append(st)
        outcome = {}

        def rng(srv):
            outcome[id(srv)] = http_call(srv.client_port, "POST", "/v3/kv/range", dumps({"key": b64("foo")}),
                                         timeout=2)
        ts = [threading.Thread(target=rng, args=(srv,)) for srv in (self.ref, self.sut)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(5)
        rv = self.view(self.ref, outcome[id(self.ref)])
        gv = self.view(self.sut, outcome[id(self.sut)])
        self.assertIn("no response head", str(rv), "test bug: etcd answered at the limit: %r" % (rv,))
        if rv != gv:
            self.differ("range with 3 gateway watches open (--max-concurrent-streams 3)", rv, gv)
        for s in ws[0]:
            s.close()
        # a slot frees up once the first watch's HTTP connection is gone
        def answered(srv):
            return lambda: http_call(srv.client_port, "POST", "/v3/kv/range", dumps({"key": b64("foo")}),
                                     timeout=1).status == 200
        for srv in (self.ref, self.sut):
            try:
                wait_until(answered(srv), 6, "%s: a gateway range after a watch closed" % srv.label)
            except AssertionError as e:
                with self.subTest(gateway="range after a watch closed", server=srv.label):
                    self.fail(str(e))


class TransportTest(GatewayCase):
    """HTTP details: metadata headers, trailers, chunked streams, framing of
    error replies, keep-alive, Expect: 100-continue."""

    def details(self, r):
        return {
            "status": r.status,
            "content-type": r.header("content-type"),
            "grpc-metadata-content-type": r.header("grpc-metadata-content-type"),
            "trailer": r.header("trailer"),
            "trailers": r.trailers,
            "chunked": r.chunked,
            "error": r.error,
        }

    def same_details(self, what, path, body, headers=None, drop=()):
        replies = [http_call(srv.client_port, "POST", path, body, headers) for srv in (self.ref, self.sut)]
        a, b = (self.details(r) for r in replies)
        for k in drop:
            a.pop(k, None)
            b.pop(k, None)
        if a != b:
            self.differ(what, sorted(a.items()), sorted(b.items()))
        return replies

    def test_headers_and_trailers(self):
        # success: Grpc-Metadata-Content-Type: application/grpc (the gRPC response header)
        r, _ = self.same_details("success headers", "/v3/kv/put", dumps({"key": b64("a"), "value": b64("1")}),
                                 drop=("chunked",))
        self.assertEqual(r.header("grpc-metadata-content-type"), "application/grpc")
        # gRPC error: Trailer: Grpc-Trailer-Content-Type, chunked, trailer after the body
        r, _ = self.same_details("gRPC error framing", "/v3/kv/range", "{}")
        self.assertEqual(r.trailers, {"grpc-trailer-content-type": "application/grpc"}, r)
        # decode error (never reached gRPC): plain JSON error, no metadata, no trailer
        r, _ = self.same_details("decode error framing", "/v3/kv/range", "xyz", drop=("chunked",))
        self.assertIsNone(r.header("trailer"))
        # streams are chunked with the metadata header
        for path, body in (("/v3/watch", dumps({"create_request": {"key": b64("a")}})),
                           ("/v3/lease/keepalive", dumps({"ID": 1}))):
            st = self.open_streams(path, body)
            for s in st:
                s.pieces(1)
            a, b = (self.details(s.reply) for s in st)
            a.pop("trailers"), b.pop("trailers")
            if a != b:
                self.differ(path + " stream headers", sorted(a.items()), sorted(b.items()))
            self.assertTrue(a["chunked"])
            self.assertEqual(a["grpc-metadata-content-type"], "application/grpc")

    def test_keep_alive_and_continue(self):
        for srv in (self.ref, self.sut):
            with self.subTest(gateway="keep-alive: several requests on one connection", server=srv.label):
                c = RawHttp(srv.client_port, 5)
                try:
                    got = []
                    for i in range(3):
                        c.send("POST", "/v3/kv/put", dumps({"key": b64("ka"), "value": b64(str(i))}))
                        c.read_head(5)
                        r = c.read_all(5)
                        got.append((r.status, '"revision":"%d"' % (i + 2) in r.text))
                    c.send("POST", "/v3/kv/bogus", "{}")
                    c.read_head(5)
                    got.append((c.read_all(5).status, True))
                    self.assertEqual(got, [(200, True)] * 3 + [(404, True)])
                finally:
                    c.close()
            with self.subTest(gateway="Expect: 100-continue", server=srv.label):
                c = RawHttp(srv.client_port, 5)
                try:
                    body = dumps({"key": b64("ec"), "value": b64("x" * 2000)})
                    c.send("POST", "/v3/kv/put", body, {"Expect": "100-continue"}, close=True, send_body=False)
                    head = c.read_head(3, skip_interim=False)
                    self.assertEqual(head.status, 100, head)
                    c.sock.sendall(body.encode())
                    c.read_head(5)
                    r = c.read_all(5)
                    self.assertEqual(r.status, 200, r)
                finally:
                    c.close()


class E2ERequestsTest(GatewayCase):
    """The requests (and the expected substrings) of etcd 3.4.23's
    tests/e2e/v3_curl_test.go and v3_curl_lease_test.go, for /v3 and /v3beta."""

    def test_e2e_lease_requests(self):
        for p in ("/v3", "/v3beta"):
            lid = 7587 if p == "/v3" else 7588
            cases = [
                ("/lease/grant", '{"ID":%d}' % lid, '"ID":"%d"' % lid),
                ("/lease/grant", '{"TTL":20}', '"TTL":"20"'),
                ("/kv/put", '{"key":"Zm9v","value":"YmFy","lease":%d}' % lid, '"revision":"'),
                ("/lease/timetolive", '{"ID":%d,"keys":true}' % lid, '"grantedTTL"'),
                ("/kv/lease/timetolive", '{"ID":%d,"keys":true}' % lid, '"grantedTTL"'),
                ("/lease/leases", "{}", '"ID":"%d"' % lid),
                ("/kv/lease/leases", "{}", '"ID":"%d"' % lid),
                ("/lease/keepalive", '{"ID":%d}' % lid, '"ID":"%d"' % lid),
                ("/lease/revoke", '{"ID":%d}' % lid, '"revision":"'),
                ("/kv/lease/revoke", '{"ID":%d}' % lid, "etcdserver: requested lease not found"),
            ]
            for ep, body, expected in cases:
                replies = [http_call(srv.client_port, "POST", p + ep, body, timeout=5) for srv in (self.ref, self.sut)]
                self.assertIn(expected, replies[0].text, "test bug: etcd %s %s" % (p + ep, replies[0]))
                if expected not in replies[1].text:
                    with self.subTest(gateway="e2e %s%s %s expects %s" % (p, ep, body, expected)):
                        self.fail("%s replied %r" % (self.sut.label, replies[1]))

    def test_e2e_watch(self):
        # testV3CurlWatch: put, then watch from revision 1, expecting "YmFy" within 2 s
        for p in ("/v3", "/v3beta"):
            self.gw(p + "/kv/put", '{"key":"Zm9v","value":"YmFy"}', contains="revision")
            st = self.open_streams(p + "/watch", '{"create_request" : {"key":"Zm9v","start_revision":1}}')
            for s in st:
                s.pieces(2, timeout=2)
            self.assertIn('"YmFy"', st[0].reply.text)
            if '"YmFy"' not in st[1].reply.text:
                with self.subTest(gateway="e2e %s/watch expects \"YmFy\"" % p):
                    self.fail("%s replied %r" % (self.sut.label, st[1].reply))
            self.compare_streams(p + "/watch from revision 1", st)


# ---------------------------------------------------------------------------
# python3-etcd3gw (Debian's 2.0.0), run under /usr/bin/python3 against each server

ETCD3GW_SCRIPT = r'''
import json, queue, re, sys, threading
import etcd3gw
from etcd3gw import watch as gwwatch

port = int(sys.argv[1])
# SCOPE 2: the api_path of the default client's calls: "" keeps etcd3gw's
# default (/v3alpha/, which Engram serves like /v3); etcd is given "/v3/"
DEFAULT_API = sys.argv[2] if len(sys.argv) > 2 else ""
out = []
leases = []

def lease_tag(i):
    s = str(i)
    if s not in leases:
        leases.append(s)
    return "<LEASE%d>" % (leases.index(s) + 1)

def plain(x):
    if isinstance(x, (bytes, bytearray)):
        return "b" + repr(bytes(x))
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return type(x).__name__

def rec(name, f):
    try:
        r = plain(f())
    except Exception as e:
        r = {"exception": type(e).__name__, "args": [str(a) for a in e.args],
             "detail_text": getattr(e, "detail_text", None)}
    out.append([name, r])
    return r

def next_with_timeout(it, timeout=5):
    box = []
    t = threading.Thread(target=lambda: box.append(next(it)), daemon=True)
    t.start()
    t.join(timeout)
    return box[0] if box else "timeout"

STATUS_34 = ("header", "version", "dbSize", "leader", "raftIndex", "raftTerm", "raftAppliedIndex", "dbSizeInUse")

c = etcd3gw.client(host="127.0.0.1", port=port, timeout=10)
rec("default api_path", lambda: c.api_path)
if DEFAULT_API:
    c = etcd3gw.Etcd3Client(host="127.0.0.1", port=port, api_path=DEFAULT_API, timeout=10)
rec("put via the default /v3alpha/ (etcd: /v3/)", lambda: c.put("alpha", "1"))
rec("get via the default /v3alpha/", lambda: c.get("alpha", metadata=True))
rec("status fields via the default /v3alpha/", lambda: [k for k in STATUS_34 if k in c.status()])
def watch_alpha():
    rev = int(c.get("alpha", metadata=True)[0][1]["mod_revision"])
    return c.watch_once("alpha", timeout=5, start_revision=rev)
rec("watch_once via the default /v3alpha/", watch_alpha)
rec("members via the default /v3alpha/", c.members)
for api in ("/v3beta/", "/v3/"):
    c = etcd3gw.Etcd3Client(host="127.0.0.1", port=port, api_path=api, timeout=10)
    p = api.strip("/") + "/"
    rec(p + "put", lambda: c.put(p + "k1", "v1"))
    rec(p + "put bytes", lambda: c.put(p + "k2", b"v2\x00\xff"))
    rec(p + "get", lambda: c.get(p + "k1"))
    rec(p + "get missing", lambda: c.get(p + "nope"))
    rec(p + "get metadata", lambda: c.get(p + "k1", metadata=True))
    rec(p + "get_prefix", lambda: c.get_prefix(p, sort_order="descend", sort_target="key"))
    rec(p + "create new", lambda: c.create(p + "c", "x"))
    rec(p + "create existing", lambda: c.create(p + "c", "y"))
    rec(p + "replace", lambda: c.replace(p + "c", "x", "z"))
    rec(p + "replace stale", lambda: c.replace(p + "c", "x", "w"))
    rec(p + "transaction", lambda: c.transaction({
        "compare": [{"key": "Zm9v", "result": "EQUAL", "target": "VERSION", "version": 0}],
        "success": [{"request_range": {"key": "Zm9v"}}], "failure": []}))
    rec(p + "delete", lambda: c.delete(p + "k1"))
    rec(p + "delete missing", lambda: c.delete(p + "k1"))
    rec(p + "delete_prefix", lambda: c.delete_prefix(p + "c"))
    rec(p + "get_all", lambda: c.get_all())
    lease = c.lease(ttl=30)
    rec(p + "lease", lambda: lease_tag(lease.id))
    rec(p + "put with lease", lambda: c.put(p + "lk", "lv", lease=lease))
    rec(p + "lease ttl in [28, 30]", lambda: 28 <= lease.ttl() <= 30)
    rec(p + "lease refresh", lambda: lease.refresh())
    rec(p + "lease keys", lambda: lease.keys())
    rec(p + "get with lease metadata", lambda: c.get(p + "lk", metadata=True))
    rec(p + "create with lease", lambda: c.create(p + "lc", "x", lease=lease))
    rec(p + "lease revoke", lambda: lease.revoke())
    rec(p + "get after revoke", lambda: c.get(p + "lk"))
    rec(p + "ttl after revoke", lambda: lease.ttl())
    rec(p + "refresh after revoke", lambda: lease.refresh())
    rec(p + "revoke again", lambda: lease.revoke())
    grant = lambda: c.post(c.get_url("/lease/grant"), json={"TTL": 30, "ID": 424242 + len(p)})
    rec(p + "grant an explicit lease ID", grant)
    rec(p + "grant it again (412: PreconditionFailedError)", grant)
    rec(p + "proclaim without a leader (500: InternalServerError)",
        lambda: c.post(c.get_url("/election/proclaim"), json={"value": "djI="}))
    # watch: the Watcher's POST returns with the response head, which etcd
    # sends with the "created" message, so the watcher exists by then
    q = queue.Queue()
    w = gwwatch.Watcher(c, p + "w", q.put, prev_kv=True)
    c.put(p + "w", "1")
    c.put(p + "w", "2")
    c.delete(p + "w")
    evs = []
    for _ in range(3):
        try:
            evs.append(q.get(timeout=5))
        except queue.Empty:
            evs.append("timeout")
    w.stop()
    rec(p + "watch events", lambda: evs)
    it, cancel = c.watch_prefix(p + "wp/")
    c.put(p + "wp/a", "1")
    rec(p + "watch_prefix event", lambda: next_with_timeout(it))
    cancel()
    c.put(p + "once", "o")
    rev = int(c.get(p + "once", metadata=True)[0][1]["mod_revision"])
    rec(p + "watch_once from a revision", lambda: c.watch_once(p + "once", timeout=5, start_revision=rev))
    rec(p + "watch_once timeout", lambda: c.watch_once(p + "quiet", timeout=0.5))
    l1 = c.lock("L" + p.strip("/"), ttl=30)
    rec(p + "lock acquire", l1.acquire)
    rec(p + "lock is_acquired", l1.is_acquired)
    l2 = c.lock("L" + p.strip("/"), ttl=30)
    rec(p + "lock2 acquire while held", l2.acquire)
    rec(p + "lock release", l1.release)
    rec(p + "lock2 acquire", l2.acquire)
    rec(p + "lock2 refresh", l2.refresh)
    rec(p + "lock2 release", l2.release)
    rec(p + "lock release again", l1.release)
    with c.lock("ctx" + p.strip("/")) as l3:
        rec(p + "context lock", l3.is_acquired)
    st = c.status()
    rec(p + "status fields", lambda: [k for k in STATUS_34 if k in st])
    rec(p + "status leader is this member", lambda: st["leader"] == st["header"]["member_id"])
    rec(p + "members", c.members)

text = "\n".join(json.dumps(x, sort_keys=True) for x in out)
for i, s in enumerate(leases):
    text = re.sub(r"(?<![0-9])%s(?![0-9])" % s, "<LEASE%d>" % (i + 1), text)
print(text)
'''


class Etcd3gwTest(GatewayCase):

    def test_etcd3gw(self):
        py = need(ETCD3GW_PYTHON, "python3-etcd3gw")
        env = harness.clean_env({"PYTHONDONTWRITEBYTECODE": "1"})
        env.pop("PYTHONPATH", None)
        # SCOPE 2: the default client (/v3alpha/) against Engram, "/v3/" against
        # etcd (and against etcd as the server under test)
        procs = [subprocess.Popen([py, "-c", ETCD3GW_SCRIPT, str(srv.client_port),
                                   "/v3/" if srv.etcd else ""], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, env=env, preexec_fn=harness._pdeathsig)
                 for srv in (self.ref, self.sut)]
        outs = []
        for p in procs:
            try:
                o, e = p.communicate(timeout=90)
            except subprocess.TimeoutExpired:
                p.kill()
                o, e = p.communicate()
                e += b"\n[killed after 90 s]"
            outs.append((p.returncode, o.decode("utf-8", "replace"), e.decode("utf-8", "replace")))
        if "No module named 'etcd3gw'" in outs[0][2]:
            raise harness.MissingTool("python3-etcd3gw is not importable by %s: install Debian's python3-etcd3gw"
                                      % py)
        self.assertEqual(outs[0][0], 0, "test bug: the etcd3gw script failed against etcd:\n" + outs[0][2])
        ref = self.norm(self.ref, outs[0][1]).splitlines()
        got = self.norm(self.sut, outs[1][1]).splitlines()
        if outs[1][0] != 0:
            got.append("[script exit %s] %s" % (outs[1][0], outs[1][2][-2000:]))
        self.assertIn('["v3/watch events", [{"kv": {"create_revision"', outs[0][1])
        if ref != got:
            self.differ("python3-etcd3gw operations", ref, got)


# ---------------------------------------------------------------------------

def main():
    prog = unittest.main(exit=False)
    r = prog.result
    bad = set()
    for test, _ in r.failures + r.errors:
        bad.add(getattr(test, "test_case", test).id())
    for test in r.unexpectedSuccesses:
        bad.add(test.id())
    skipped = len(r.skipped)
    passed = r.testsRun - len(bad) - skipped
    print("%d passed, %d failed%s" % (passed, len(bad), (", %d skipped" % skipped) if skipped else ""))
    sys.exit(0 if not bad else 1)


if __name__ == "__main__":
    main()
