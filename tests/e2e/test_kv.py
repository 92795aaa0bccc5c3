"""etcdctl against a fresh etcd 3.4 and a fresh Engram, side by side.

Every etcdctl command runs against both; exit codes and stdout/stderr must be
identical once IDs, addresses and timestamps are normalised (harness.Pair).
Revisions, raft terms and raft indexes are compared as they are.

Run: ENGRAM_BIN=build/engram python3 tests/e2e/test_kv.py -v
"""

import json
import os
import re
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import CompareCase  # noqa: E402

ENGRAM_VERSION = "3.6.0"   # what Engram reports in Status.version (etcd 3.4 says 3.4.23)


def put_stdin(*ops):
    """Non-interactive `etcdctl txn` input: compares, success ops, failure ops."""
    return "".join("".join(line + "\n" for line in section) + "\n" for section in ops)


# ---------------------------------------------------------------------------

class PutTest(CompareCase):

    def test_put_plain(self):
        self.ok("put", "a", "1")
        self.ok("put", "a", "2")
        self.ok("put", "b", "")
        self.ok("put", "sp ace", "va lue")
        self.ok("get", "a", "-w", "json")
        self.ok("get", "b", "-w", "json")
        self.ok("get", "sp ace")

    def test_first_put_is_revision_2(self):
        r = self.ok("put", "a", "1", "-w", "json")
        self.assertEqual(r.json()["header"]["revision"], 2)

    def test_put_prev_kv(self):
        self.ok("put", "k", "v1")
        r = self.ok("put", "k", "v2", "--prev-kv")
        self.assertEqual(r.out, "OK\nk\nv1\n")
        self.ok("put", "new", "v", "--prev-kv")
        self.ok("put", "k", "v3", "--prev-kv", "-w", "json")
        self.ok("put", "k", "v4", "--prev-kv", "-w", "fields")

    def test_put_ignore_value(self):
        self.ok("put", "k", "v")
        self.ok("put", "k", "--ignore-value")
        r = self.ok("get", "k", "-w", "json")
        self.assertEqual(r.json()["kvs"][0]["version"], 2)
        self.err("etcdserver: key not found", "put", "missing", "--ignore-value")
        self.cmp("put", "k", "other", "--ignore-value")   # etcdctl rejects this itself
        self.ok("get", "k", "-w", "json")

    def test_put_ignore_lease(self):
        self.ok("put", "k", "v")
        self.ok("put", "k", "v2", "--ignore-lease")
        self.ok("get", "k", "-w", "json")
        self.err("etcdserver: key not found", "put", "missing", "v", "--ignore-lease")
        self.cmp("put", "k", "v3", "--ignore-lease", "--ignore-value")

    def test_put_unknown_lease(self):
        self.ok("put", "k", "v")
        self.err("etcdserver: requested lease not found", "put", "k", "v2", "--lease=1234")
        self.err("etcdserver: requested lease not found", "put", "other", "v", "--lease=1234")
        r = self.ok("get", "", "--prefix", "-w", "json")
        self.assertEqual(r.json()["header"]["revision"], 2)

    def test_put_empty_key(self):
        self.err("etcdserver: key is not provided", "put", "", "v")
        self.ok("get", "", "--prefix", "-w", "json")

    def test_empty_key_everywhere(self):
        nokey = "etcdserver: key is not provided"
        self.ok("put", "a", "1")
        self.err(nokey, "get", "")
        self.err(nokey, "del", "")
        self.err(nokey, "get", "", "b")
        self.ok("get", "", "--prefix", "--keys-only")

    def test_put_value_from_stdin(self):
        self.ok("put", "k", stdin="from stdin\n")
        self.ok("get", "k")
        self.cmp("put", "k", stdin="")

    def test_put_output_formats(self):
        self.ok("put", "k", "v", "-w", "json")
        self.ok("put", "k", "v", "-w", "fields")
        self.ok("put", "k", "v", "-w", "simple")
        self.ok("put", "k", "v", "-w", "protobuf", protobuf=True)

    def test_put_binaryish_and_long_values(self):
        self.ok("put", "k\u00e9y", "v\u00e4l\u00fc\u00eb")
        self.ok("put", "long", "x" * 5000)
        self.ok("get", "k\u00e9y", "--hex")
        self.ok("get", "long", "-w", "json")


# ---------------------------------------------------------------------------

class GetTest(CompareCase):
    """A small keyspace with distinct create/mod revisions and values."""

    PUTS = [("a", "alpha"), ("ab", "zeta"), ("abc", "mid"), ("b", "bravo"), ("a", "alpha2"),
            ("c", "charlie"), ("ab", "zeta2"), ("ab", "zeta3"), ("foo", "f1"), ("foo1", "f2"),
            ("zoo", "z"), ("b", "bravo2"), ("a", "alpha3"), ("a", "alpha4")]
    LAST_REV = 1 + len(PUTS)

    def setUp(self):
        super().setUp()
        for k, v in self.PUTS:
            self.ok("put", k, v)

    def test_get_single(self):
        r = self.ok("get", "a")
        self.assertEqual(r.out, "a\nalpha4\n")
        self.ok("get", "a", "-w", "json")
        self.ok("get", "missing")
        self.ok("get", "missing", "-w", "json")

    def test_get_prefix(self):
        self.ok("get", "a", "--prefix")
        self.ok("get", "a", "--prefix", "-w", "json")
        self.ok("get", "fo", "--prefix", "--keys-only")
        self.ok("get", "nothing", "--prefix", "-w", "json")
        self.ok("get", "", "--prefix", "--keys-only")

    def test_get_from_key(self):
        self.ok("get", "b", "--from-key")
        self.ok("get", "b", "--from-key", "-w", "json")
        self.ok("get", "zz", "--from-key", "-w", "json")
        self.ok("get", "", "--from-key", "--keys-only")

    def test_get_range(self):
        self.ok("get", "a", "c")            # [a, c)
        self.ok("get", "ab", "b", "-w", "json")
        self.ok("get", "c", "a", "-w", "json")   # empty range
        self.ok("get", "a", "a", "-w", "json")

    def test_get_limit(self):
        r = self.ok("get", "a", "--prefix", "--limit", "2", "-w", "json")
        j = r.json()
        self.assertTrue(j["more"])
        self.assertEqual(j["count"], 3)
        self.ok("get", "a", "--prefix", "--limit", "3", "-w", "json")
        self.ok("get", "a", "--prefix", "--limit", "5", "-w", "json")
        self.ok("get", "", "--from-key", "--limit", "1")
        self.ok("get", "", "--from-key", "--limit", "1", "-w", "fields")

    def test_get_old_revisions(self):
        for rev in range(1, self.LAST_REV + 1):
            self.ok("get", "", "--prefix", "--rev=%d" % rev, "-w", "json")
        self.ok("get", "a", "--rev=2")
        self.ok("get", "a", "--rev=6", "-w", "json")
        self.ok("get", "ab", "--prefix", "--rev=8", "--limit", "1", "-w", "json")
        self.ok("get", "a", "--rev=0")

    def test_get_future_revision(self):
        self.err("etcdserver: mvcc: required revision is a future revision",
                 "get", "a", "--rev=%d" % (self.LAST_REV + 1))
        self.err("etcdserver: mvcc: required revision is a future revision",
                 "get", "a", "--prefix", "--rev=1000000")

    def test_get_sort(self):
        for target in ("KEY", "CREATE", "MODIFY", "VERSION", "VALUE"):
            for order in ("ASCEND", "DESCEND"):
                self.ok("get", "", "--from-key", "--sort-by=" + target, "--order=" + order, "-w", "json")
                self.ok("get", "a", "--prefix", "--sort-by=" + target, "--order=" + order,
                        "--limit", "2", "-w", "json")
            # target without order: etcd sorts ascending for non-KEY targets
            self.ok("get", "", "--from-key", "--sort-by=" + target, "--keys-only")
        self.ok("get", "", "--from-key", "--order=DESCEND", "--keys-only")
        self.ok("get", "", "--from-key", "--order=ASCEND", "--keys-only")
        self.ok("get", "", "--from-key", "--sort-by=MODIFY", "--order=DESCEND", "--rev=9", "-w", "json")

    def test_get_sort_ties(self):
        # Versions tie (several keys at version 1).  etcd 3.4 (Go 1.19 sort.Sort on
        # <= 12 results is an insertion sort) keeps ties in key order, both directions.
        r = self.ok("get", "", "--from-key", "--sort-by=VERSION", "--order=DESCEND", "--keys-only")
        self.assertEqual(r.out.split(), ["a", "ab", "b", "abc", "c", "foo", "foo1", "zoo"])
        self.ok("get", "", "--from-key", "--sort-by=VERSION", "--order=ASCEND", "--keys-only")

    def test_get_keys_only_and_values_only(self):
        self.ok("get", "a", "--prefix", "--keys-only")
        self.ok("get", "a", "--prefix", "--keys-only", "-w", "json")
        self.ok("get", "a", "--prefix", "--print-value-only")
        self.ok("get", "a", "--prefix", "--keys-only", "--print-value-only")
        self.ok("get", "a", "--prefix", "--hex")

    def test_get_serializable(self):
        self.ok("get", "a", "--consistency=s")
        self.ok("get", "a", "--prefix", "--consistency=s", "-w", "json")
        self.ok("get", "a", "--consistency=l", "-w", "json")

    def test_get_output_formats(self):
        self.ok("get", "a", "--prefix", "-w", "json")
        self.ok("get", "a", "--prefix", "-w", "fields")
        self.ok("get", "a", "--prefix", "-w", "simple")
        self.ok("get", "a", "--prefix", "-w", "protobuf", protobuf=True)
        self.ok("get", "missing", "-w", "protobuf", protobuf=True)
        self.cmp("get", "a", "-w", "table")     # etcdctl: table not supported for get


# ---------------------------------------------------------------------------

class DeleteTest(CompareCase):

    def setUp(self):
        super().setUp()
        for k in ("a", "ab", "abc", "b", "c", "d", "e"):
            self.ok("put", k, "v-" + k)

    def test_del_single(self):
        r = self.ok("del", "b")
        self.assertEqual(r.out, "1\n")
        self.ok("get", "b", "-w", "json")

    def test_del_missing_does_not_bump_revision(self):
        r = self.ok("del", "missing")
        self.assertEqual(r.out, "0\n")
        self.ok("del", "missing", "-w", "json")
        self.ok("del", "zz", "--prefix", "-w", "json")
        self.ok("get", "a", "-w", "json")

    def test_del_prev_kv(self):
        self.ok("del", "c", "--prev-kv")
        self.ok("del", "a", "--prefix", "--prev-kv")
        self.ok("del", "missing", "--prev-kv")
        self.ok("put", "x", "1")
        self.ok("del", "x", "--prev-kv", "-w", "json")

    def test_del_prefix(self):
        r = self.ok("del", "a", "--prefix")
        self.assertEqual(r.out, "3\n")
        self.ok("get", "", "--prefix", "--keys-only")

    def test_del_from_key(self):
        self.ok("del", "c", "--from-key")
        self.ok("get", "", "--prefix", "--keys-only")
        self.ok("del", "", "--from-key", "-w", "json")

    def test_del_range(self):
        self.ok("del", "ab", "c")
        self.ok("get", "", "--prefix", "--keys-only")

    def test_del_then_recreate(self):
        self.ok("del", "a")
        self.ok("put", "a", "again")
        r = self.ok("get", "a", "-w", "json")
        self.assertEqual(r.json()["kvs"][0]["version"], 1)
        self.ok("get", "a", "--rev=2", "-w", "json")
        self.ok("get", "a", "--rev=9", "-w", "json")


# ---------------------------------------------------------------------------

class TxnTest(CompareCase):

    def setUp(self):
        super().setUp()
        self.ok("put", "a", "1")       # rev 2
        self.ok("put", "b", "2")       # rev 3
        self.ok("put", "a", "11")      # rev 4  (a: version 2, create 2, mod 4)

    def txn(self, compares, success, failure, *flags, interactive=False):
        args = ("txn",) + (("-i",) if interactive else ()) + flags
        return self.ok(*args, stdin=put_stdin(compares, success, failure))

    def test_txn_compare_value(self):
        r = self.txn(['value("a") = "11"'], ["put a 12", "get a"], ["get b"])
        self.assertTrue(r.out.startswith("SUCCESS"))
        r = self.txn(['value("a") = "nope"'], ["put a 13"], ["get b"])
        self.assertTrue(r.out.startswith("FAILURE"))
        self.txn(['value("a") > "1"'], ["get a"], ["get b"])
        self.txn(['value("a") < "2"'], ["get a"], ["get b"])
        self.txn(['value("a") != "12"'], ["get a"], ["get b"])
        self.txn(['value("missing") = ""'], ["get a"], ["get b"])

    def test_txn_compare_version(self):
        self.txn(['version("a") = "2"'], ["put s1 x"], ["put f1 x"])
        self.txn(['version("a") > "1"'], ["put s2 x"], ["put f2 x"])
        self.txn(['version("a") < "2"'], ["put s3 x"], ["put f3 x"])
        self.txn(['version("a") != "2"'], ["put s4 x"], ["put f4 x"])
        self.txn(['version("missing") = "0"'], ["put s5 x"], ["put f5 x"])
        self.ok("get", "", "--prefix", "--keys-only")

    def test_txn_compare_create(self):
        self.txn(['create("a") = "2"'], ["put s1 x"], ["put f1 x"])
        self.txn(['create("b") > "2"'], ["put s2 x"], ["put f2 x"])
        self.txn(['create("b") < "3"'], ["put s3 x"], ["put f3 x"])
        self.txn(['create("b") != "3"'], ["put s4 x"], ["put f4 x"])
        self.txn(['create("missing") = "0"'], ["put s5 x"], ["put f5 x"])
        self.ok("get", "", "--prefix", "--keys-only")

    def test_txn_compare_mod(self):
        self.txn(['mod("a") = "4"'], ["put s1 x"], ["put f1 x"])
        self.txn(['mod("a") > "4"'], ["put s2 x"], ["put f2 x"])
        self.txn(['mod("b") < "4"'], ["put s3 x"], ["put f3 x"])
        self.txn(['mod("b") != "3"'], ["put s4 x"], ["put f4 x"])
        self.txn(['mod("missing") < "1"'], ["put s5 x"], ["put f5 x"])
        self.ok("get", "", "--prefix", "--keys-only")

    def test_txn_multiple_compares(self):
        self.txn(['value("a") = "11"', 'version("b") = "1"', 'mod("a") > "3"'],
                 ["put all yes"], ["put all no"])
        self.txn(['value("a") = "11"', 'version("b") = "7"'], ["put some yes"], ["put some no"])
        self.ok("get", "all")
        self.ok("get", "some")

    def test_txn_interactive(self):
        r = self.txn(['value("a") = "11"'], ["put a 12", "get a"], ["get b"], interactive=True)
        self.assertIn("compares:", r.out)
        self.txn(['version("b") > "1"'], ["del a"], ["get b", "put c 3"], interactive=True)
        self.txn([], ["get a"], [], interactive=True)

    def test_txn_output_formats(self):
        self.txn(['value("a") = "11"'], ["get a", "put c 3", "del b"], ["get b"], "-w", "json")
        self.txn(['value("a") = "11"'], ["get a"], ["get b"], "-w", "fields")
        self.txn(['value("a") = "x"'], ["get a"], ["get b", "put d 4", "del e"], "-w", "json")
        self.ok("txn", "-w", "protobuf", stdin=put_stdin(['value("a") = "11"'], ["get a", "put e 5"], []),
                protobuf=True)

    def test_txn_ops_with_options(self):
        self.txn([], ["get a --prefix", "put e 5 --prev-kv", "del b --prev-kv"], [])
        self.txn([], ["get a --keys-only", 'get "" --from-key --limit 2'], [], "-w", "json")
        self.txn([], ["put a 99 --prev-kv"], [], "-w", "json")
        self.txn([], ["put a --ignore-value"], [])
        self.txn([], ["del a --from-key --prev-kv"], [], "-w", "json")

    def test_txn_empty_and_read_only_keep_revision(self):
        self.txn([], [], [])
        self.txn([], ["get a", "get b"], [], "-w", "json")
        self.txn(['value("a") = "x"'], [], [], "-w", "json")
        r = self.ok("get", "a", "-w", "json")
        self.assertEqual(r.json()["header"]["revision"], 4)

    def test_txn_put_then_get_same_key(self):
        self.txn([], ["put n 1", "get n"], [], "-w", "json")
        self.txn([], ["get n", "put n 2", "get n"], [], "-w", "json")
        self.txn([], ["del n", "get n"], [], "-w", "json")

    def test_txn_empty_keys(self):
        nokey = "etcdserver: key is not provided"
        self.err(nokey, "txn", stdin=put_stdin(['value("") = "x"'], ["get a"], []))
        self.err(nokey, "txn", stdin=put_stdin([], ['put "" v'], []))
        self.err(nokey, "txn", stdin=put_stdin([], [], ['del ""']))
        self.err(nokey, "txn", stdin=put_stdin([], ['get ""'], []))

    def test_txn_duplicate_keys(self):
        dup = "etcdserver: duplicate key given in txn request"
        self.err(dup, "txn", stdin=put_stdin([], ["put q 1", "put q 2"], []))
        self.err(dup, "txn", stdin=put_stdin([], ["put q 1", "del q"], []))
        self.err(dup, "txn", stdin=put_stdin([], ["put ab 1", "del a --prefix"], []))
        self.err(dup, "txn", stdin=put_stdin([], [], ["put q 1", "put q 2"]))
        self.err(dup, "txn", stdin=put_stdin(['value("a") = "11"'], ["put a 1", "put a 2"], []))
        # the same key in different branches, or del+del, is fine
        self.ok("txn", stdin=put_stdin([], ["put q 1"], ["put q 2"]))
        self.ok("txn", stdin=put_stdin([], ["del q", "del q"], []))
        self.ok("txn", stdin=put_stdin([], ["del a --prefix", "del a"], []))
        self.ok("get", "q")


# ---------------------------------------------------------------------------

class CompactionTest(CompareCase):

    def setUp(self):
        super().setUp()
        for i in range(8):                   # revisions 2..9
            self.ok("put", "k%d" % (i % 3), "v%d" % i)

    def test_compaction(self):
        r = self.ok("compaction", "4")
        self.assertEqual(r.out, "compacted revision 4\n")
        compacted = "etcdserver: mvcc: required revision has been compacted"
        self.err(compacted, "get", "k0", "--rev=3")
        self.err(compacted, "get", "", "--prefix", "--rev=1")
        self.ok("get", "", "--prefix", "--rev=4", "-w", "json")
        self.ok("get", "", "--prefix", "--rev=5", "-w", "json")
        self.err(compacted, "compaction", "4")          # twice
        self.err(compacted, "compaction", "2")          # below
        self.ok("put", "k9", "after")
        self.ok("get", "", "--prefix", "-w", "json")

    def test_compaction_physical(self):
        self.ok("compaction", "--physical", "6")
        self.err("etcdserver: mvcc: required revision has been compacted", "get", "k0", "--rev=5")
        self.ok("get", "", "--prefix", "--rev=6", "-w", "json")
        self.ok("compaction", "--physical=true", "9")
        self.ok("get", "", "--prefix", "--rev=9", "-w", "json")

    def test_compaction_future_and_current(self):
        future = "etcdserver: mvcc: required revision is a future revision"
        self.err(future, "compaction", "10")
        self.err(future, "compaction", "1000")
        self.ok("compaction", "9")          # the current revision itself
        self.ok("get", "", "--prefix", "-w", "json")
        self.ok("put", "k0", "x", "-w", "json")
        self.ok("get", "k0", "--rev=9", "-w", "json")

    def test_compaction_bad_args(self):
        self.cmp("compaction", "0")
        self.cmp("compaction", "-1")
        self.cmp("compaction", "abc")
        self.cmp("compaction")

    def test_compaction_raft_index(self):
        # compaction goes through raft: index moves, revision does not
        self.ok("compaction", "3")
        self.ok("endpoint", "status", "-w", "json", out_normaliser=status_json_compared)
        self.ok("get", "k1", "-w", "json")


# ---------------------------------------------------------------------------

STATUS_COMPARED = ("header", "leader", "raftIndex", "raftTerm", "raftAppliedIndex", "errors", "isLearner")
STATUS_ALLOWED_TO_DIFFER = ("version", "dbSize", "dbSizeInUse")


def status_json_compared(text):
    """Keep the Status fields that must match; drop version/dbSize/dbSizeInUse and
    any extra (newer) fields.  Those are checked on Engram alone."""
    try:
        j = json.loads(text)
    except ValueError:
        return text
    out = []
    for ep in j:
        st = ep.get("Status", {})
        out.append({"Endpoint": ep.get("Endpoint"),
                    "Status": {k: st[k] for k in STATUS_COMPARED if k in st},
                    "present": sorted(k for k in STATUS_ALLOWED_TO_DIFFER if k in st)})
    return json.dumps(out, sort_keys=True)


def status_simple_compared(text):
    # "ep, id, version, db size, leader, learner, term, index, applied, errors"
    lines = []
    for line in text.split("\n"):
        cells = line.split(", ")
        if len(cells) >= 4:
            cells[2], cells[3] = "<VERSION>", "<DBSIZE>"
        lines.append(", ".join(cells))
    return "\n".join(lines)


def status_table_compared(text):
    lines = []
    for line in text.split("\n"):
        if line.startswith("|") and "ENDPOINT" not in line:
            cells = line.split("|")
            if len(cells) > 5:
                cells[3], cells[4] = "<VERSION>", "<DBSIZE>"
            line = "|".join(cells)
        lines.append(line)
    return "\n".join(lines)


class ClusterTest(CompareCase):

    def test_endpoint_status_json(self):
        r = self.ok("endpoint", "status", "-w", "json", out_normaliser=status_json_compared)
        st = r.json()[0]["Status"]
        self.assertEqual((st["raftTerm"], st["raftIndex"], st["header"]["revision"]), (2, 4, 1))
        self.assertEqual(st["leader"], st["header"]["member_id"])
        got = json.loads(self.last_got.out)[0]["Status"]
        for field in STATUS_COMPARED[:5] + STATUS_ALLOWED_TO_DIFFER:
            self.assertIn(field, got, "engram endpoint status lacks %s: %s" % (field, self.last_got.out))
        if not self.sut_is_etcd:
            self.assertEqual(got["version"], ENGRAM_VERSION)
        self.assertGreater(got["dbSize"], 0)
        self.assertGreater(got["dbSizeInUse"], 0)
        self.assertLessEqual(got["dbSizeInUse"], got["dbSize"])
        self.ok("put", "a", "1")
        self.ok("endpoint", "status", "-w", "json", out_normaliser=status_json_compared)

    def test_endpoint_status_simple_and_table(self):
        self.ok("put", "a", "1")
        self.ok("endpoint", "status", out_normaliser=status_simple_compared)
        self.ok("endpoint", "status", "-w", "table", out_normaliser=status_table_compared)
        self.ok("endpoint", "status", "-w", "fields", out_normaliser=lambda t: re.sub(
            r'"(Version|DBSize|DBSizeInUse)" : .*', r'"\1" : <X>', t))

    def test_endpoint_health(self):
        r = self.ok("endpoint", "health")
        self.assertIn("is healthy: successfully committed proposal", r.err)
        self.ok("endpoint", "health", "-w", "json")
        self.ok("endpoint", "health", "-w", "table", out_normaliser=lambda t: re.sub(
            r"\| *[0-9.]+[µmn]?s *\|", "|<DUR>|", t))

    def test_member_list(self):
        r = self.ok("member", "list", "-w", "json")
        m = r.json()["members"]
        self.assertEqual(len(m), 1)
        self.assertEqual(m[0]["name"], "s1")
        self.ok("member", "list")
        self.ok("member", "list", "-w", "table")
        self.ok("member", "list", "-w", "fields")

    def test_alarm_list(self):
        r = self.ok("alarm", "list")
        self.assertEqual(r.out, "")
        self.ok("alarm", "list", "-w", "json")

    def test_revision_and_raft_index_line_up(self):
        for i in range(3):
            self.ok("put", "k", str(i), "-w", "json")
        self.ok("del", "k", "-w", "json")
        self.ok("endpoint", "status", "-w", "json", out_normaliser=status_json_compared)


# ---------------------------------------------------------------------------

class LimitsTest(CompareCase):
    SERVER_ARGS = ("--max-txn-ops", "3", "--max-request-bytes", "1024")

    def test_too_many_txn_ops(self):
        many = "etcdserver: too many operations in txn request"
        self.ok("txn", stdin=put_stdin([], ["put a 1", "put b 1", "put c 1"], []))
        self.err(many, "txn", stdin=put_stdin([], ["put a 1", "put b 1", "put c 1", "put d 1"], []))
        self.err(many, "txn", stdin=put_stdin([], ["get a", "get b", "get c", "get d"], []))
        self.err(many, "txn", stdin=put_stdin([], [], ["put a 1", "put b 1", "put c 1", "put d 1"]))
        self.err(many, "txn", stdin=put_stdin(['value("a") = "1"'] * 4, ["get a"], []))
        self.ok("txn", stdin=put_stdin(['value("a") = "1"'] * 3, ["get a", "get b", "get c"],
                                       ["get a", "get b", "get c"]))

    def test_request_too_large(self):
        big = "etcdserver: request is too large"
        self.err(big, "put", "k", "x" * 2000)
        self.ok("put", "k", "x" * 500)
        self.err(big, "txn", stdin=put_stdin([], ["put a " + "y" * 600, "put b " + "y" * 600], []))
        self.err(big, "put", "k", "--prev-kv", stdin="z" * 4000)
        self.ok("get", "k", "-w", "json")


class RestartTest(CompareCase):
    """Both servers restarted on their data dirs: same data, revisions, compaction,
    and the same raft term/index (a restarted single member campaigns again)."""

    def setUp(self):
        super().setUp()
        for i in range(6):
            self.ok("put", "k%d" % (i % 4), "v%d" % i)      # revisions 2..7
        self.ok("del", "k3")                               # 8
        self.ok("compaction", "4")

    def check_after_restart(self):
        self.ok("get", "", "--prefix", "-w", "json")
        self.ok("get", "", "--prefix", "--rev=5", "-w", "json")
        self.err("etcdserver: mvcc: required revision has been compacted", "get", "k0", "--rev=3")
        self.ok("endpoint", "status", "-w", "json", out_normaliser=status_json_compared)
        self.ok("member", "list", "-w", "json")
        self.ok("put", "k9", "after", "-w", "json")
        self.ok("endpoint", "status", "-w", "json", out_normaliser=status_json_compared)

    def test_restart_after_sigterm(self):
        self.pair.restart()
        self.check_after_restart()
        self.pair.restart()
        self.check_after_restart()

    def test_restart_after_kill9(self):
        self.pair.restart(kill=True)
        self.check_after_restart()


# ---------------------------------------------------------------------------

import rawgrpc as g  # noqa: E402

RANGE, PUT, DEL, TXN, COMPACT = ("etcdserverpb.KV/Range", "etcdserverpb.KV/Put", "etcdserverpb.KV/DeleteRange",
                                 "etcdserverpb.KV/Txn", "etcdserverpb.KV/Compact")


class RawGrpcTest(CompareCase):
    """Request fields etcdctl 3.4 cannot send (its get has no --count-only or
    --min/max-*-revision flags, its txn parser crashes on lease compares and
    knows no range compares or nested txns): sent as raw gRPC to both servers,
    replies (status, message, response protobuf) compared."""

    NEEDS = ("curl",)  # raw gRPC calls (rawgrpc.py)

    def setUp(self):
        super().setUp()
        # key: (create rev, mod rev, version) after these puts
        # a:(2,11,3) b:(3,7,2) c:(4,4,1) d:(5,5,1) a/x:(6,6,1) b/y:(8,10,2); revision 11
        for k, v in (("a", "1"), ("b", "1"), ("c", "1"), ("d", "1"), ("a/x", "1"), ("b", "2"),
                     ("b/y", "1"), ("a", "2"), ("b/y", "2"), ("a", "3")):
            self.ok("put", k, v)

    def test_range_count_only(self):
        self.grpc(RANGE, g.range_req("a", count_only=True))
        self.grpc(RANGE, g.range_req("\0", range_end="\0", count_only=True))
        self.grpc(RANGE, g.range_req("a", range_end="c", count_only=True, limit=1))
        self.grpc(RANGE, g.range_req("a", range_end="z", count_only=True, revision=5))
        self.grpc(RANGE, g.range_req("a", range_end="z", count_only=True, keys_only=True))
        self.grpc(RANGE, g.range_req("zz", count_only=True))

    def test_range_mod_revision_filters(self):
        all_ = dict(key="\0", range_end="\0")
        self.grpc(RANGE, g.range_req(min_mod_revision=6, **all_))
        self.grpc(RANGE, g.range_req(max_mod_revision=6, **all_))
        self.grpc(RANGE, g.range_req(min_mod_revision=5, max_mod_revision=9, **all_))
        self.grpc(RANGE, g.range_req(min_mod_revision=100, **all_))
        # count is taken before filtering; limit applies after it (etcd 3.4)
        self.grpc(RANGE, g.range_req(min_mod_revision=5, limit=2, **all_))
        self.grpc(RANGE, g.range_req(min_mod_revision=5, count_only=True, **all_))
        self.grpc(RANGE, g.range_req(max_mod_revision=7, revision=8, **all_))

    def test_range_create_revision_filters(self):
        all_ = dict(key="\0", range_end="\0")
        self.grpc(RANGE, g.range_req(min_create_revision=4, **all_))
        self.grpc(RANGE, g.range_req(max_create_revision=4, **all_))
        self.grpc(RANGE, g.range_req(min_create_revision=3, max_create_revision=5, **all_))
        self.grpc(RANGE, g.range_req(min_create_revision=3, max_create_revision=8, limit=1, **all_))
        self.grpc(RANGE, g.range_req(min_create_revision=3, sort_order="DESCEND", sort_target="MOD", **all_))
        self.grpc(RANGE, g.range_req(min_create_revision=3, min_mod_revision=7, keys_only=True, **all_))

    def test_range_edge_values(self):
        self.grpc(RANGE, g.range_req("a", range_end="z", limit=-1))
        self.grpc(RANGE, g.range_req("a", revision=-1))
        self.grpc(RANGE, g.range_req("b", range_end="\0", sort_target="VALUE"))      # order NONE
        self.grpc(RANGE, g.range_req("b", range_end="\0", sort_order="ASCEND", sort_target="KEY"))
        self.grpc(RANGE, g.range_req("", range_end="b"), expect_status=3,
                  expect_message="etcdserver: key is not provided")
        self.grpc(RANGE, g.range_req("", count_only=True), expect_status=3,
                  expect_message="etcdserver: key is not provided")

    def test_txn_compare_lease(self):
        for op, lease in (("=", 0), ("!=", 0), (">", 0), ("<", 1), ("=", 1234)):
            self.grpc(TXN, g.txn_req([g.compare("lease", "a", op, lease)],
                                     [g.op_range(key="a")], [g.op_range(key="b")]))
        self.grpc(TXN, g.txn_req([g.compare("lease", "missing", "=", 0)],
                                 [g.op_put("s", "1")], [g.op_put("f", "1")]))

    def test_txn_compare_over_range(self):
        cases = [("version", "a", "a0", ">", 0), ("version", "b", "c", "=", 2), ("version", "a", "z", ">", 1),
                 ("mod", "a", "\0", "<", 11), ("create", "a", "c", "<", 8), ("create", "a", "c", "!=", 99),
                 ("value", "a", "b", "=", "1"), ("value", "a/", "a0", "=", "1"), ("version", "x", "y", "=", 5),
                 ("value", "x", "y", "=", "1")]
        for target, key, end, op, val in cases:
            self.grpc(TXN, g.txn_req([g.compare(target, key, op, val, range_end=end)],
                                     [g.op_range(key="a")], [g.op_range(key="b")]))

    def test_nested_txn(self):
        inner_ok = g.op_txn([g.compare("value", "a", "=", "3")], [g.op_put("n1", "x"), g.op_range(key="a")],
                            [g.op_put("n2", "x")])
        inner_fail = g.op_txn([g.compare("value", "a", "=", "nope")], [g.op_put("n3", "x")],
                              [g.op_delete("c", prev_kv=True), g.op_range(key="c")])
        self.grpc(TXN, g.txn_req([g.compare("version", "a", ">", 0)], [inner_ok, inner_fail, g.op_put("o", "1")],
                                 [g.op_put("never", "1")]))
        self.grpc(TXN, g.txn_req([], [g.op_txn([], [g.op_txn([], [g.op_range(key="\0", range_end="\0")])])]))
        self.grpc(TXN, g.txn_req([], [g.op_txn([], [g.op_put("deep", "1")], [g.op_put("deep", "2")])]))
        self.ok("get", "", "--prefix", "-w", "json")

    def test_nested_txn_duplicate_keys(self):
        dup = "etcdserver: duplicate key given in txn request"
        self.grpc(TXN, g.txn_req([], [g.op_put("k", "1"), g.op_txn([], [g.op_put("k", "2")])]),
                  expect_status=3, expect_message=dup)
        self.grpc(TXN, g.txn_req([], [g.op_delete("a", range_end="b"), g.op_txn([], [g.op_put("a/x", "2")])]),
                  expect_status=3, expect_message=dup)
        # the same key in the two branches of the inner txn is fine
        self.grpc(TXN, g.txn_req([], [g.op_txn([], [g.op_put("k", "1")], [g.op_put("k", "2")])]))

    def test_put_and_delete_raw(self):
        self.grpc(PUT, g.put_req("p", "v", prev_kv=True))
        self.grpc(PUT, g.put_req("p", "", ignore_value=True, prev_kv=True))
        self.grpc(PUT, g.put_req("p", "v", lease=0x1234), expect_status=5,
                  expect_message="etcdserver: requested lease not found")
        self.grpc(PUT, g.put_req("p", "v", ignore_value=True), expect_status=3,
                  expect_message="etcdserver: value is provided")
        self.grpc(PUT, g.put_req("p", "", lease=0x1234, ignore_lease=True), expect_status=3,
                  expect_message="etcdserver: lease is provided")
        self.grpc(DEL, g.delete_req("a", range_end="\0", prev_kv=True))
        self.grpc(DEL, g.delete_req("", range_end=""), expect_status=3,
                  expect_message="etcdserver: key is not provided")
        self.grpc(COMPACT, g.compaction_req(5, physical=True))
        self.grpc(RANGE, g.range_req("b", revision=4), expect_status=11,
                  expect_message="etcdserver: mvcc: required revision has been compacted")


class RawGrpcLimitsTest(CompareCase):
    NEEDS = ("curl",)  # raw gRPC calls (rawgrpc.py)
    SERVER_ARGS = ("--max-txn-ops", "3")

    def test_nested_txn_ops_limit(self):
        many = "etcdserver: too many operations in txn request"
        four = [g.op_put("k%d" % i, "v") for i in range(4)]
        self.grpc(TXN, g.txn_req([], [g.op_txn([], four)]), expect_status=3, expect_message=many)
        # etcd 3.4 gives a nested txn the budget its parent leaves: max - len(parent's largest list)
        self.grpc(TXN, g.txn_req([], [g.op_txn([], four[:2], four[:2])]))
        self.grpc(TXN, g.txn_req([], [g.op_txn([], four[:3])]), expect_status=3, expect_message=many)
        self.grpc(TXN, g.txn_req([g.compare("version", "a", "=", 0)] * 2, [g.op_txn([], four[:1])]))
        self.grpc(TXN, g.txn_req([g.compare("version", "a", "=", 0)] * 2, [g.op_txn([], four[:2])]),
                  expect_status=3, expect_message=many)
        self.grpc(TXN, g.txn_req([], [g.op_range(key="a")] * 3, [g.op_txn([], [], four)]),
                  expect_status=3, expect_message=many)


if __name__ == "__main__":
    unittest.main()
