#!/usr/bin/env python3
"""Check that Engram's .proto files are wire-compatible with etcd's.

How to run (from anywhere; needs python3 and protoc, nothing else):

    python3 proto/check_compat.py            # prints a summary, exit 0 = compatible
    python3 proto/check_compat.py -v         # also lists every compared item
    python3 proto/check_compat.py --etcd-src DIR   # etcd source tree other than Debian's

What it does:

1. Reference: etcd 3.4's own schema, as installed by Debian's golang-etcd-server-dev
   under /usr/share/gocode/src/go.etcd.io/etcd (rpc.proto, kv.proto, auth.proto).
   Those files need gogoproto and google.api annotations that are not installed,
   so a temporary copy is made with those imports and options stripped (they
   change Go code generation only, never the wire format).
2. protoc --include_imports --descriptor_set_out compiles both etcd's copy and
   ours (proto/etcdserverpb/rpc.proto, mvccpb/kv.proto, authpb/auth.proto,
   engrampb/internal.proto) into descriptor sets, which this script decodes
   itself (a small protobuf wire decoder; no python protobuf module needed).
3. Every message, field, oneof, enum, enum value, service and method of etcd 3.4
   must exist in ours with the same full name, field number, name, type, label,
   type name, oneof and streaming flags.
4. Everything ours has beyond 3.4 in the etcd packages (the 3.5 .. 3.7
   additions) must match the PINNED table below, where each entry was confirmed
   against etcd's own schema; an addition that is not pinned is an error, so a
   typo cannot slip in as a "new field".
5. engrampb (our raft entry payloads, persisted in the WAL) must match
   ENGRAMPB exactly: renumbering it would break existing data directories.

Any difference is printed and the exit status is 1. If the etcd 3.4 reference
files are not installed the check cannot run: it says SKIP and exits with 77.
It is also registered with ctest as proto_compat (proto/CMakeLists.txt).
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ETCD_SRC = "/usr/share/gocode/src/go.etcd.io/etcd"
OUR_FILES = ["mvccpb/kv.proto", "authpb/auth.proto", "etcdserverpb/rpc.proto",
             "engrampb/internal.proto", "v3lockpb/v3lock.proto", "v3electionpb/v3election.proto"]
# etcd 3.4 file -> the path its importers use for it.
ETCD_FILES = {
    "mvcc/mvccpb/kv.proto": "etcd/mvcc/mvccpb/kv.proto",
    "auth/authpb/auth.proto": "etcd/auth/authpb/auth.proto",
    "etcdserver/etcdserverpb/rpc.proto": "etcd/etcdserver/etcdserverpb/rpc.proto",
    "etcdserver/api/v3lock/v3lockpb/v3lock.proto": "etcd/etcdserver/api/v3lock/v3lockpb/v3lock.proto",
    "etcdserver/api/v3election/v3electionpb/v3election.proto":
        "etcd/etcdserver/api/v3election/v3electionpb/v3election.proto",
}
ETCD_PACKAGES = ("etcdserverpb", "mvccpb", "authpb", "v3lockpb", "v3electionpb")
SKIP = 77  # exit status when the etcd 3.4 reference is not installed (ctest: skipped)

# ---------------------------------------------------------------------------
# The additions beyond etcd 3.4, pinned to the numbers confirmed in etcd's own
# schema: api/etcdserverpb/rpc.proto and api/authpb/auth.proto of etcd-io/etcd
# (3.5/3.6 versions, with their etcd_version annotations), and for RangeStream
# (3.7) etcd's KEP-5966 API section and etcd PR #21631.
# Field tuple: (message, field, number, type, label, type_name or "").
# ---------------------------------------------------------------------------
PINNED_FIELDS = [
    # 3.5
    ("etcdserverpb.MemberListRequest", "linearizable", 1, "bool", "optional", ""),
    ("etcdserverpb.DowngradeRequest", "action", 1, "enum", "optional",
     ".etcdserverpb.DowngradeRequest.DowngradeAction"),
    ("etcdserverpb.DowngradeRequest", "version", 2, "string", "optional", ""),
    ("etcdserverpb.DowngradeResponse", "header", 1, "message", "optional",
     ".etcdserverpb.ResponseHeader"),
    ("etcdserverpb.DowngradeResponse", "version", 2, "string", "optional", ""),
    ("etcdserverpb.AuthStatusResponse", "header", 1, "message", "optional",
     ".etcdserverpb.ResponseHeader"),
    ("etcdserverpb.AuthStatusResponse", "enabled", 2, "bool", "optional", ""),
    ("etcdserverpb.AuthStatusResponse", "authRevision", 3, "uint64", "optional", ""),
    ("etcdserverpb.AuthUserAddRequest", "hashedPassword", 4, "string", "optional", ""),
    ("etcdserverpb.AuthUserChangePasswordRequest", "hashedPassword", 3, "string",
     "optional", ""),
    # 3.6
    ("etcdserverpb.HashKVResponse", "hash_revision", 4, "int64", "optional", ""),
    ("etcdserverpb.SnapshotResponse", "version", 4, "string", "optional", ""),
    ("etcdserverpb.StatusResponse", "storageVersion", 11, "string", "optional", ""),
    ("etcdserverpb.StatusResponse", "dbSizeQuota", 12, "int64", "optional", ""),
    ("etcdserverpb.StatusResponse", "downgradeInfo", 13, "message", "optional",
     ".etcdserverpb.DowngradeInfo"),
    ("etcdserverpb.DowngradeInfo", "enabled", 1, "bool", "optional", ""),
    ("etcdserverpb.DowngradeInfo", "targetVersion", 2, "string", "optional", ""),
    ("etcdserverpb.DowngradeVersionTestRequest", "ver", 1, "string", "optional", ""),
    # 3.7
    ("etcdserverpb.RangeStreamResponse", "range_response", 1, "message", "optional",
     ".etcdserverpb.RangeResponse"),
]
# New messages (with no fields of their own to pin).
PINNED_EMPTY_MESSAGES = ["etcdserverpb.AuthStatusRequest"]
PINNED_ENUMS = {
    "etcdserverpb.DowngradeRequest.DowngradeAction":
        {"VALIDATE": 0, "ENABLE": 1, "CANCEL": 2},
}
# (service, method, input, output, client_streaming, server_streaming)
PINNED_METHODS = [
    ("etcdserverpb.Maintenance", "Downgrade", ".etcdserverpb.DowngradeRequest",
     ".etcdserverpb.DowngradeResponse", False, False),  # 3.5
    ("etcdserverpb.Auth", "AuthStatus", ".etcdserverpb.AuthStatusRequest",
     ".etcdserverpb.AuthStatusResponse", False, False),  # 3.5
    ("etcdserverpb.KV", "RangeStream", ".etcdserverpb.RangeRequest",
     ".etcdserverpb.RangeStreamResponse", False, True),  # 3.7
]

# engrampb: our own schema, pinned whole (message -> fields; enums).
ENGRAMPB_FIELDS = [
    ("engrampb.InternalRequest", "id", 1, "uint64", "optional", "", None),
    ("engrampb.InternalRequest", "put", 3, "message", "optional",
     ".etcdserverpb.PutRequest", "request"),
    ("engrampb.InternalRequest", "delete_range", 4, "message", "optional",
     ".etcdserverpb.DeleteRangeRequest", "request"),
    ("engrampb.InternalRequest", "txn", 5, "message", "optional",
     ".etcdserverpb.TxnRequest", "request"),
    ("engrampb.InternalRequest", "compaction", 6, "message", "optional",
     ".etcdserverpb.CompactionRequest", "request"),
    ("engrampb.InternalRequest", "alarm", 7, "message", "optional",
     ".etcdserverpb.AlarmRequest", "request"),
    ("engrampb.InternalRequest", "lease_grant", 8, "message", "optional",
     ".etcdserverpb.LeaseGrantRequest", "request"),
    ("engrampb.InternalRequest", "lease_revoke", 9, "message", "optional",
     ".etcdserverpb.LeaseRevokeRequest", "request"),
    ("engrampb.InternalRequest", "publish", 10, "message", "optional",
     ".engrampb.MemberAttributes", "request"),
    ("engrampb.InternalRequest", "cluster_version", 11, "message", "optional",
     ".engrampb.ClusterVersion", "request"),
    ("engrampb.InternalRequest", "lease_checkpoint", 12, "message", "optional",
     ".etcdserverpb.LeaseCheckpointRequest", "request"),
    ("engrampb.MemberAttributes", "member_id", 1, "uint64", "optional", "", None),
    ("engrampb.MemberAttributes", "name", 2, "string", "optional", "", None),
    ("engrampb.MemberAttributes", "client_urls", 3, "string", "repeated", "", None),
    ("engrampb.ClusterVersion", "version", 1, "string", "optional", "", None),
    ("engrampb.ConfChange", "type", 1, "enum", "optional", ".engrampb.ConfChange.Type",
     None),
    ("engrampb.ConfChange", "node_id", 2, "uint64", "optional", "", None),
    ("engrampb.ConfChange", "member", 3, "message", "optional", ".engrampb.Member", None),
    ("engrampb.Member", "id", 1, "uint64", "optional", "", None),
    ("engrampb.Member", "name", 2, "string", "optional", "", None),
    ("engrampb.Member", "peer_urls", 3, "string", "repeated", "", None),
    ("engrampb.Member", "client_urls", 4, "string", "repeated", "", None),
    ("engrampb.Member", "is_learner", 5, "bool", "optional", "", None),
]
ENGRAMPB_ENUMS = {
    "engrampb.ConfChange.Type":
        {"ADD_NODE": 0, "REMOVE_NODE": 1, "UPDATE_NODE": 2, "ADD_LEARNER_NODE": 3},
}

# ---------------------------------------------------------------------------
# A minimal protobuf wire decoder, enough for descriptor.proto.
# ---------------------------------------------------------------------------


def _varint(buf, pos):
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf):
    """Yields (field_number, value) with value an int (varint/fixed) or bytes."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        num, wt = key >> 3, key & 7
        if wt == 0:
            val, pos = _varint(buf, pos)
        elif wt == 1:
            val, pos = int.from_bytes(buf[pos:pos + 8], "little"), pos + 8
        elif wt == 2:
            n, pos = _varint(buf, pos)
            val, pos = buf[pos:pos + n], pos + n
        elif wt == 5:
            val, pos = int.from_bytes(buf[pos:pos + 4], "little"), pos + 4
        else:
            raise ValueError("unsupported wire type %d" % wt)
        yield num, val


# The parts of descriptor.proto we read: message -> {number: (name, kind, repeated)}.
SCHEMA = {
    "FileDescriptorSet": {1: ("file", "FileDescriptorProto", True)},
    "FileDescriptorProto": {
        1: ("name", "str", False), 2: ("package", "str", False),
        3: ("dependency", "str", True), 4: ("message_type", "DescriptorProto", True),
        5: ("enum_type", "EnumDescriptorProto", True),
        6: ("service", "ServiceDescriptorProto", True), 12: ("syntax", "str", False)},
    "DescriptorProto": {
        1: ("name", "str", False), 2: ("field", "FieldDescriptorProto", True),
        3: ("nested_type", "DescriptorProto", True),
        4: ("enum_type", "EnumDescriptorProto", True),
        6: ("extension", "FieldDescriptorProto", True),
        8: ("oneof_decl", "OneofDescriptorProto", True)},
    "FieldDescriptorProto": {
        1: ("name", "str", False), 3: ("number", "int", False), 4: ("label", "int", False),
        5: ("type", "int", False), 6: ("type_name", "str", False),
        8: ("options", "FieldOptions", False), 9: ("oneof_index", "int", False),
        10: ("json_name", "str", False), 17: ("proto3_optional", "int", False)},
    "FieldOptions": {2: ("packed", "int", False)},
    "OneofDescriptorProto": {1: ("name", "str", False)},
    "EnumDescriptorProto": {1: ("name", "str", False),
                            2: ("value", "EnumValueDescriptorProto", True)},
    "EnumValueDescriptorProto": {1: ("name", "str", False), 2: ("number", "int", False)},
    "ServiceDescriptorProto": {1: ("name", "str", False),
                               2: ("method", "MethodDescriptorProto", True)},
    "MethodDescriptorProto": {
        1: ("name", "str", False), 2: ("input_type", "str", False),
        3: ("output_type", "str", False), 5: ("client_streaming", "int", False),
        6: ("server_streaming", "int", False)},
}


def decode(buf, msg="FileDescriptorSet"):
    out = {}
    for num, val in _fields(buf):
        if num not in SCHEMA[msg]:
            continue
        name, kind, repeated = SCHEMA[msg][num]
        if kind == "str":
            val = val.decode("utf-8")
        elif kind == "int":
            if val >= 1 << 63:  # negative int32/int64 as varint
                val -= 1 << 64
        else:
            val = decode(val, kind)
        if repeated:
            out.setdefault(name, []).append(val)
        else:
            out[name] = val
    return out


TYPE_NAMES = {1: "double", 2: "float", 3: "int64", 4: "uint64", 5: "int32", 6: "fixed64",
              7: "fixed32", 8: "bool", 9: "string", 10: "group", 11: "message",
              12: "bytes", 13: "uint32", 14: "enum", 15: "sfixed32", 16: "sfixed64",
              17: "sint32", 18: "sint64"}
LABEL_NAMES = {1: "optional", 2: "required", 3: "repeated"}

# ---------------------------------------------------------------------------
# Flattening a descriptor set into comparable tables.
# ---------------------------------------------------------------------------


class Schema:
    def __init__(self, fds):
        self.messages = {}  # full name (no leading dot) -> {number: field dict}
        self.enums = {}     # full name -> {value name: number}
        self.methods = {}   # service full name -> {method name: method dict}
        self.packages = set()
        for f in fds.get("file", []):
            pkg = f.get("package", "")
            self.packages.add(pkg)
            for m in f.get("message_type", []):
                self._message(pkg, m)
            for e in f.get("enum_type", []):
                self._enum(pkg, e)
            for s in f.get("service", []):
                full = "%s.%s" % (pkg, s["name"]) if pkg else s["name"]
                self.methods[full] = {m["name"]: m for m in s.get("method", [])}

    def _message(self, scope, m):
        full = "%s.%s" % (scope, m["name"]) if scope else m["name"]
        oneofs = [o["name"] for o in m.get("oneof_decl", [])]
        fields = {}
        for fd in m.get("field", []):
            oneof = None
            if "oneof_index" in fd and not fd.get("proto3_optional"):
                oneof = oneofs[fd["oneof_index"]]
            fields[fd["number"]] = {
                "name": fd["name"],
                "number": fd["number"],
                "type": TYPE_NAMES.get(fd.get("type"), str(fd.get("type"))),
                "label": LABEL_NAMES.get(fd.get("label"), str(fd.get("label"))),
                "type_name": fd.get("type_name", ""),
                "oneof": oneof,
                "packed": fd.get("options", {}).get("packed"),
            }
        self.messages[full] = fields
        for n in m.get("nested_type", []):
            self._message(full, n)
        for e in m.get("enum_type", []):
            self._enum(full, e)

    def _enum(self, scope, e):
        full = "%s.%s" % (scope, e["name"]) if scope else e["name"]
        self.enums[full] = {v["name"]: v["number"] for v in e.get("value", [])}


def in_packages(name, packages):
    return name.split(".", 1)[0] in packages


# ---------------------------------------------------------------------------
# Building the descriptor sets.
# ---------------------------------------------------------------------------


def strip_annotations(text):
    """Removes gogoproto and google.api usage from an etcd .proto file.

    These only steer Go code generation and the REST gateway; none of them
    changes a field number, type or name."""
    text = re.sub(r'^\s*import\s+"(gogoproto/gogo\.proto|google/api/annotations\.proto)"\s*;',
                  "", text, flags=re.M)
    text = re.sub(r'^\s*option\s+\(gogoproto\.[^)]*\)\s*=\s*[^;]*;', "", text, flags=re.M)
    # Field options: [(gogoproto.nullable) = false, ...] -> removed entirely.
    text = re.sub(r'\[\s*\(gogoproto\.[^\]]*\]', "", text)
    # option (google.api.http) = { ... nested braces ... };
    out, pos = [], 0
    pattern = re.compile(r'option\s+\(google\.api\.http\)\s*=\s*\{')
    while True:
        m = pattern.search(text, pos)
        if not m:
            out.append(text[pos:])
            break
        out.append(text[pos:m.start()])
        depth, i = 1, m.end()
        while depth:
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
            i += 1
        while text[i] in " \t\r\n":
            i += 1
        if text[i] == ";":
            i += 1
        pos = i
    return "".join(out)


def descriptor_set(protoc, include_dir, files, out_path):
    cmd = [protoc, "-I", include_dir, "--include_imports",
           "--descriptor_set_out=" + out_path] + files
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit("protoc failed:\n  %s\n%s" % (" ".join(cmd), res.stderr))
    with open(out_path, "rb") as f:
        return decode(f.read())


# ---------------------------------------------------------------------------
# Comparisons.
# ---------------------------------------------------------------------------


def describe_field(f):
    s = "%s %s %s = %d" % (f["label"], f["type_name"] or f["type"], f["name"], f["number"])
    if f["oneof"]:
        s += " (oneof %s)" % f["oneof"]
    return s


def compare_with_reference(ref, ours, problems, log):
    counts = {"messages": 0, "fields": 0, "enums": 0, "enum values": 0,
              "services": 0, "methods": 0}
    for msg, ref_fields in sorted(ref.messages.items()):
        counts["messages"] += 1
        if msg not in ours.messages:
            problems.append("message %s: missing" % msg)
            continue
        our_fields = ours.messages[msg]
        for num, rf in sorted(ref_fields.items()):
            counts["fields"] += 1
            of = our_fields.get(num)
            if of is None:
                problems.append("%s: field %d (%s) missing" % (msg, num, describe_field(rf)))
                continue
            for key in ("name", "type", "label", "type_name", "oneof", "packed"):
                if rf[key] != of[key]:
                    problems.append("%s field %d: %s is %r, etcd has %r"
                                    % (msg, num, key, of[key], rf[key]))
            log("  ok  %s: %s" % (msg, describe_field(rf)))
    for enum, values in sorted(ref.enums.items()):
        counts["enums"] += 1
        if enum not in ours.enums:
            problems.append("enum %s: missing" % enum)
            continue
        for name, number in sorted(values.items(), key=lambda kv: kv[1]):
            counts["enum values"] += 1
            if ours.enums[enum].get(name) != number:
                problems.append("enum %s: %s is %r, etcd has %d"
                                % (enum, name, ours.enums[enum].get(name), number))
            else:
                log("  ok  enum %s.%s = %d" % (enum, name, number))
        for name, number in ours.enums[enum].items():
            if name not in values and number in values.values():
                problems.append("enum %s: our %s = %d clashes with etcd's number %d"
                                % (enum, name, number, number))
    for svc, methods in sorted(ref.methods.items()):
        counts["services"] += 1
        if svc not in ours.methods:
            problems.append("service %s: missing" % svc)
            continue
        for name, rm in sorted(methods.items()):
            counts["methods"] += 1
            om = ours.methods[svc].get(name)
            if om is None:
                problems.append("service %s: method %s missing" % (svc, name))
                continue
            for key in ("input_type", "output_type"):
                if rm.get(key) != om.get(key):
                    problems.append("%s.%s: %s is %r, etcd has %r"
                                    % (svc, name, key, om.get(key), rm.get(key)))
            for key in ("client_streaming", "server_streaming"):
                if bool(rm.get(key)) != bool(om.get(key)):
                    problems.append("%s.%s: %s is %r, etcd has %r"
                                    % (svc, name, key, bool(om.get(key)), bool(rm.get(key))))
            log("  ok  rpc %s.%s(%s%s) returns (%s%s)" % (
                svc, name, "stream " if rm.get("client_streaming") else "",
                rm["input_type"], "stream " if rm.get("server_streaming") else "",
                rm["output_type"]))
    return counts


def check_additions(ref, ours, problems, log):
    """Ours minus etcd 3.4, in the etcd packages, must equal the pinned table."""
    pinned_fields = {(m, n): (name, t, lab, tn) for m, name, n, t, lab, tn in PINNED_FIELDS}
    pinned_msgs = {m for m, *_ in PINNED_FIELDS} | set(PINNED_EMPTY_MESSAGES)
    seen = set()
    added = 0
    for msg, fields in sorted(ours.messages.items()):
        if not in_packages(msg, ETCD_PACKAGES):
            continue
        ref_fields = ref.messages.get(msg)
        if ref_fields is None:
            if msg not in pinned_msgs:
                problems.append("message %s: not in etcd 3.4 and not pinned" % msg)
            else:
                log("  new message %s" % msg)
                added += 1
            ref_fields = {}
        for num, f in sorted(fields.items()):
            if num in ref_fields:
                continue
            key = (msg, num)
            got = (f["name"], f["type"], f["label"], f["type_name"])
            if key not in pinned_fields:
                problems.append("%s: field %s not in etcd 3.4 and not pinned"
                                % (msg, describe_field(f)))
            elif pinned_fields[key] != got:
                problems.append("%s field %d: is %r, pinned %r"
                                % (msg, num, got, pinned_fields[key]))
            else:
                log("  new %s: %s" % (msg, describe_field(f)))
                added += 1
            seen.add(key)
    for key in pinned_fields:
        if key not in seen:
            problems.append("%s: pinned field %d (%s) missing" % (key[0], key[1],
                                                                 pinned_fields[key][0]))
    for m in PINNED_EMPTY_MESSAGES:
        if m not in ours.messages:
            problems.append("message %s: pinned but missing" % m)
    for enum, values in sorted(ours.enums.items()):
        if not in_packages(enum, ETCD_PACKAGES):
            continue
        extra = {k: v for k, v in values.items() if k not in ref.enums.get(enum, {})}
        if not extra:
            continue
        if PINNED_ENUMS.get(enum) != extra:
            problems.append("enum %s: values %r beyond etcd 3.4, pinned %r"
                            % (enum, extra, PINNED_ENUMS.get(enum)))
        else:
            log("  new enum %s %r" % (enum, extra))
            added += 1
    for enum in PINNED_ENUMS:
        if enum not in ours.enums:
            problems.append("enum %s: pinned but missing" % enum)
    pinned_methods = {(s, m): (i, o, cs, ss) for s, m, i, o, cs, ss in PINNED_METHODS}
    for svc, methods in sorted(ours.methods.items()):
        if not in_packages(svc, ETCD_PACKAGES):
            continue
        for name, om in sorted(methods.items()):
            if name in ref.methods.get(svc, {}):
                continue
            got = (om.get("input_type"), om.get("output_type"),
                   bool(om.get("client_streaming")), bool(om.get("server_streaming")))
            if (svc, name) not in pinned_methods:
                problems.append("rpc %s.%s: not in etcd 3.4 and not pinned" % (svc, name))
            elif pinned_methods[(svc, name)] != got:
                problems.append("rpc %s.%s: is %r, pinned %r"
                                % (svc, name, got, pinned_methods[(svc, name)]))
            else:
                log("  new rpc %s.%s(%s) returns (%s%s)" % (
                    svc, name, got[0], "stream " if got[3] else "", got[1]))
                added += 1
    for svc, name in pinned_methods:
        if name not in ours.methods.get(svc, {}):
            problems.append("rpc %s.%s: pinned but missing" % (svc, name))
    return added


def check_engrampb(ours, problems, log):
    want = {}
    for m, name, num, t, lab, tn, oneof in ENGRAMPB_FIELDS:
        want.setdefault(m, {})[num] = (name, t, lab, tn, oneof)
    have = {m: {n: (f["name"], f["type"], f["label"], f["type_name"], f["oneof"])
                for n, f in fields.items()}
            for m, fields in ours.messages.items() if m.startswith("engrampb.")}
    for m in sorted(set(want) | set(have)):
        if m not in have:
            problems.append("engrampb: message %s missing" % m)
        elif m not in want:
            problems.append("engrampb: message %s not pinned in ENGRAMPB_FIELDS" % m)
        elif want[m] != have[m]:
            for n in sorted(set(want[m]) | set(have[m])):
                if want[m].get(n) != have[m].get(n):
                    problems.append("engrampb: %s field %d is %r, pinned %r"
                                    % (m, n, have[m].get(n), want[m].get(n)))
        else:
            log("  ok  %s (%d fields)" % (m, len(want[m])))
    have_enums = {e: v for e, v in ours.enums.items() if e.startswith("engrampb.")}
    if have_enums != ENGRAMPB_ENUMS:
        problems.append("engrampb: enums are %r, pinned %r" % (have_enums, ENGRAMPB_ENUMS))
    if any(s.startswith("engrampb.") for s in ours.methods):
        problems.append("engrampb: must not define services")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--etcd-src", default=DEFAULT_ETCD_SRC,
                    help="etcd 3.4 source tree (default: %(default)s)")
    ap.add_argument("--protoc", default=shutil.which("protoc") or "protoc")
    ap.add_argument("-v", "--verbose", action="store_true", help="list every compared item")
    args = ap.parse_args()

    def log(line):
        if args.verbose:
            print(line)

    with tempfile.TemporaryDirectory(prefix="engram-protocheck-") as tmp:
        ref_dir = os.path.join(tmp, "etcd34")
        for src, dst in ETCD_FILES.items():
            path = os.path.join(args.etcd_src, src)
            if not os.path.exists(path):
                print("SKIP: %s not found (apt-get install golang-etcd-server-dev, or pass"
                      " --etcd-src)" % path)
                return SKIP
            with open(path, encoding="utf-8") as f:
                text = strip_annotations(f.read())
            if "gogoproto" in text or "google.api" in text:
                sys.exit("could not strip all annotations from " + path)
            os.makedirs(os.path.dirname(os.path.join(ref_dir, dst)), exist_ok=True)
            with open(os.path.join(ref_dir, dst), "w", encoding="utf-8") as f:
                f.write(text)
        ref = Schema(descriptor_set(args.protoc, ref_dir, list(ETCD_FILES.values()),
                                    os.path.join(tmp, "etcd34.pb")))
        ours = Schema(descriptor_set(args.protoc, HERE, OUR_FILES,
                                     os.path.join(tmp, "ours.pb")))

    problems = []
    print("etcd 3.4 reference: %s" % args.etcd_src)
    log("-- etcd 3.4 schema, item by item:")
    counts = compare_with_reference(ref, ours, problems, log)
    print("compared with etcd 3.4: " + ", ".join("%d %s" % (v, k) for k, v in counts.items()))
    log("-- additions beyond etcd 3.4:")
    added = check_additions(ref, ours, problems, log)
    print("additions beyond 3.4 checked against the pinned 3.5-3.7 numbers: %d" % added)
    log("-- engrampb:")
    check_engrampb(ours, problems, log)
    print("engrampb checked against its pinned numbers")
    if problems:
        print("\n%d difference(s):" % len(problems))
        for p in problems:
            print("  " + p)
        print("FAIL")
        return 1
    print("OK: wire-compatible")
    return 0


if __name__ == "__main__":
    sys.exit(main())
