"""Unary gRPC calls without a gRPC library, for what etcdctl 3.4 cannot send
(count_only, min/max mod/create revision, lease and range compares, nested txns).

Requests are encoded by hand (a few etcdserverpb messages) and sent with the
curl command line over HTTP/2 cleartext (prior knowledge); curl prints the
response trailers (grpc-status, grpc-message) with -D.  Stdlib only otherwise.
"""

import os
import struct
import subprocess
import tempfile
import urllib.parse

import harness


def curl():
    """curl's path; without curl the calling test fails (harness.MissingTool)."""
    return harness.need("curl")


# -- protobuf encoding --------------------------------------------------------

def varint(n):
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def f_varint(num, v):
    return varint(num << 3) + varint(int(v)) if v else b""


def f_bytes(num, b):
    if isinstance(b, str):
        b = b.encode()
    return varint((num << 3) | 2) + varint(len(b)) + b if b is not None else b""


def f_msg(num, m):
    return varint((num << 3) | 2) + varint(len(m)) + m


def _b(s):
    return s.encode() if isinstance(s, str) else s


SORT_ORDER = {"NONE": 0, "ASCEND": 1, "DESCEND": 2}
SORT_TARGET = {"KEY": 0, "VERSION": 1, "CREATE": 2, "MOD": 3, "VALUE": 4}


def range_req(key, range_end=b"", limit=0, revision=0, sort_order="NONE", sort_target="KEY",
              serializable=False, keys_only=False, count_only=False, min_mod_revision=0,
              max_mod_revision=0, min_create_revision=0, max_create_revision=0):
    return (f_bytes(1, _b(key)) + (f_bytes(2, _b(range_end)) if range_end else b"")
            + f_varint(3, limit) + f_varint(4, revision) + f_varint(5, SORT_ORDER[sort_order])
            + f_varint(6, SORT_TARGET[sort_target]) + f_varint(7, serializable) + f_varint(8, keys_only)
            + f_varint(9, count_only) + f_varint(10, min_mod_revision) + f_varint(11, max_mod_revision)
            + f_varint(12, min_create_revision) + f_varint(13, max_create_revision))


def put_req(key, value, lease=0, prev_kv=False, ignore_value=False, ignore_lease=False):
    return (f_bytes(1, _b(key)) + f_bytes(2, _b(value)) + f_varint(3, lease) + f_varint(4, prev_kv)
            + f_varint(5, ignore_value) + f_varint(6, ignore_lease))


def delete_req(key, range_end=b"", prev_kv=False):
    return f_bytes(1, _b(key)) + (f_bytes(2, _b(range_end)) if range_end else b"") + f_varint(3, prev_kv)


def op_range(**kw):
    return f_msg(1, range_req(**kw))


def op_put(key, value, **kw):
    return f_msg(2, put_req(key, value, **kw))


def op_delete(key, range_end=b"", prev_kv=False):
    return f_msg(3, delete_req(key, range_end, prev_kv))


def op_txn(compares=(), success=(), failure=()):
    return f_msg(4, txn_req(compares, success, failure))


CMP_RESULT = {"=": 0, ">": 1, "<": 2, "!=": 3}
CMP_TARGET = {"version": (0, 4), "create": (1, 5), "mod": (2, 6), "value": (3, 7), "lease": (4, 8)}


def compare(target, key, op, value, range_end=b""):
    t, field = CMP_TARGET[target]
    v = f_bytes(field, _b(value)) if target == "value" else varint(field << 3) + varint(int(value))
    return (f_varint(1, CMP_RESULT[op]) + f_varint(2, t) + f_bytes(3, _b(key)) + v
            + (f_bytes(64, _b(range_end)) if range_end else b""))


def txn_req(compares=(), success=(), failure=()):
    return (b"".join(f_msg(1, c) for c in compares) + b"".join(f_msg(2, o) for o in success)
            + b"".join(f_msg(3, o) for o in failure))


def compaction_req(revision, physical=False):
    return f_varint(1, revision) + f_varint(2, physical)


# -- protobuf decoding (for comparing and printing responses) -------------------

_rd_varint = harness._varint  # one varint reader for the e2e helpers


def decode(buf):
    out, i = [], 0
    while i < len(buf):
        key, i = _rd_varint(buf, i)
        field, wt = key >> 3, key & 7
        if field == 0:
            raise ValueError("field 0")
        if wt == 0:
            v, i = _rd_varint(buf, i)
        elif wt == 2:
            n, i = _rd_varint(buf, i)
            if i + n > len(buf):
                raise ValueError("truncated")
            v, i = bytes(buf[i:i + n]), i + n
        elif wt == 1:
            v, i = bytes(buf[i:i + 8]), i + 8
        elif wt == 5:
            v, i = bytes(buf[i:i + 4]), i + 4
        else:
            raise ValueError("wire type %d" % wt)
        out.append((field, v))
    return out


def pretty(buf, depth=0):
    """Best-effort tree of a message: length-delimited fields that parse as a
    message are shown as one, otherwise as bytes."""
    if depth > 8:
        raise ValueError("too deep")
    out = []
    for field, v in decode(buf):
        if isinstance(v, bytes) and v:
            try:
                sub = pretty(v, depth + 1)
                if all(f < 100 for f, _ in sub) and not _looks_printable(v):
                    v = sub
            except (ValueError, IndexError):
                pass
        out.append((field, v))
    return out


def _looks_printable(b):
    try:
        s = b.decode("ascii")
    except UnicodeDecodeError:
        return False
    return all(32 <= ord(c) < 127 for c in s)


def normalised(buf, cluster_id, member_id):
    """pretty(), with the top-level ResponseHeader's cluster_id/member_id tagged."""
    tree = pretty(buf)
    out = []
    for field, v in tree:
        if field == 1 and isinstance(v, list):
            v = [(hf, "<CLUSTER_ID>" if hf == 1 and hv == cluster_id else
                  "<MEMBER_ID>" if hf == 2 and hv == member_id else hv) for hf, hv in v]
        out.append((field, v))
    return out


# -- transport ----------------------------------------------------------------

class Reply(object):
    def __init__(self, status, message, body, raw_headers, curl_rc, curl_err):
        self.status, self.message, self.body = status, message, body
        self.raw_headers, self.curl_rc, self.curl_err = raw_headers, curl_rc, curl_err

    @property
    def ok(self):
        return self.status == 0 and self.body is not None

    def fields(self):
        return decode(self.body or b"")

    def __repr__(self):
        return "Reply(status=%r, message=%r, body=%r)" % (self.status, self.message,
                                                          pretty(self.body) if self.body else self.body)


def call(endpoint, method, request, timeout=15):
    """method like 'etcdserverpb.KV/Range'; request = encoded protobuf bytes."""
    curl_bin = curl()
    fd, body_path = tempfile.mkstemp(prefix="e2e-grpc-")
    os.close(fd)
    try:
        frame = b"\0" + struct.pack(">I", len(request)) + request
        p = subprocess.run([curl_bin, "-sS", "--http2-prior-knowledge", "--max-time", str(timeout),
                            "-D", "-", "-o", body_path, "-X", "POST",
                            "-H", "content-type: application/grpc", "-H", "te: trailers",
                            "--data-binary", "@-", "http://%s/%s" % (endpoint, method)],
                           input=frame, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=timeout + 5)
        with open(body_path, "rb") as f:
            data = f.read()
    finally:
        os.unlink(body_path)
    headers = p.stdout.decode("utf-8", "replace")
    status, message = None, None
    for line in headers.splitlines():
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "grpc-status":
            status = int(value.strip())
        elif name == "grpc-message":
            message = urllib.parse.unquote(value.strip())
    body = None
    if len(data) >= 5:
        n = struct.unpack(">I", data[1:5])[0]
        body = data[5:5 + n]
    return Reply(status, message, body, headers, p.returncode, p.stderr.decode("utf-8", "replace"))
