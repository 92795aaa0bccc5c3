#!/usr/bin/env python3
"""Compare k8s.io/apiserver storage-test results (go test -json streams) across backends.

Usage: compare.py REFERENCE=ref.json ENGRAM=engram.json [OTHER=other.json ...] [--known FILE]

Each NAME=FILE is the `go test -json` output of the same test binaries against one backend.
The first is the reference (etcd 3.7), the one named ENGRAM is checked against it: every
test (and subtest) that passes on the reference must pass on Engram. A test that fails on
the reference is listed with its output's first failure line. --known FILE lists tests that
are allowed to differ, one `Package TestName  # reason` per line (Engram-side exceptions
must say why). Exit status 0 when the rule holds, 1 otherwise.
"""
import json
import re
import sys
from collections import OrderedDict


KLOG = re.compile(r"^[IWEF]\d{4} ")
GO_LINE = re.compile(r"^\S+\.go:\d+: ")


def failure_reason(lines):
    """The first meaningful failure line of a test's output: a t.Error/t.Fatal line, a
    testify `Error:` line, a panic or a timeout; klog/grpc log lines are skipped."""
    stripped = [l.strip() for l in lines]
    for i, t in enumerate(stripped):
        if t.startswith("Error:") and i + 1 < len(stripped):
            nxt = stripped[i + 1]
            return t + (" " + nxt if nxt and not nxt.startswith(("Test:", "Messages:")) else "")
    for t in stripped:
        if KLOG.match(t) or "logging.go" in t or KLOG.match(t.split(": ", 1)[-1]):
            continue
        if GO_LINE.match(t) or t.startswith(("panic:", "panic: test timed out")):
            return t
    return "(subtests failed)"


def load(path):
    """Returns {(package, test): (action, first failure line)} for every test that ended."""
    results = OrderedDict()
    output = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            test = ev.get("Test")
            pkg = ev.get("Package", "").rsplit("/", 1)[-1]
            action = ev.get("Action")
            if not test:
                if action == "fail" and pkg:
                    # A package that failed as a whole (panic, timeout) without a test result.
                    results.setdefault((pkg, "(package)"), ("fail", ""))
                continue
            key = (pkg, test)
            if action == "output":
                text = ev.get("Output", "")
                lines = output.setdefault(key, [])
                if len(lines) < 400:
                    lines.append(text)
            elif action in ("pass", "fail", "skip"):
                why = ""
                if action == "fail":
                    why = failure_reason(output.get(key, []))
                elif action == "skip":
                    for text in output.get(key, []):
                        t = text.strip()
                        if t and not t.startswith(("=== ", "--- ")):
                            why = t
                            break
                results[key] = (action, why[:300])
    # A test that started but never ended (the binary died or timed out) counts as failed.
    for key in output:
        if key not in results:
            results[key] = ("fail", "no result (binary ended during the test)")
    return results


def main(argv):
    known = {}
    runs = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--known":
            with open(argv[i + 1], encoding="utf-8") as f:
                for line in f:
                    body, _, reason = line.partition("#")
                    parts = body.split()
                    if len(parts) == 2:
                        known[(parts[0], parts[1])] = reason.strip()
            i += 2
            continue
        name, _, path = a.partition("=")
        runs.append((name, load(path)))
        i += 1
    if len(runs) < 2:
        print(__doc__)
        return 2
    ref_name, ref = runs[0]
    engram = dict(runs).get("ENGRAM")
    if engram is None:
        print("no ENGRAM=FILE given")
        return 2

    keys = list(ref.keys())
    for _, res in runs[1:]:
        for k in res:
            if k not in ref:
                keys.append(k)

    print("tests (incl. subtests) per backend: run / passed / failed / skipped")
    for name, res in runs:
        counts = {"pass": 0, "fail": 0, "skip": 0}
        for action, _ in res.values():
            counts[action] += 1
        print(f"  {name:10s} {len(res):5d} / {counts['pass']:5d} / {counts['fail']:5d} / {counts['skip']:5d}")

    print(f"\nfailing on the reference ({ref_name}), with the first failure line:")
    n = 0
    for k in keys:
        a, why = ref.get(k, ("missing", ""))
        if a == "fail":
            n += 1
            print(f"  {k[0]} {k[1]}: {why}")
    if n == 0:
        print("  none")

    for name, res in runs[1:]:
        if name == "ENGRAM":
            continue
        print(f"\nfailing on {name} but passing on {ref_name}:")
        m = 0
        for k in keys:
            if ref.get(k, ("",))[0] == "pass" and res.get(k, ("missing", ""))[0] != "pass":
                m += 1
                print(f"  {k[0]} {k[1]}: {res.get(k, ('missing', ''))[1]}")
        if m == 0:
            print("  none")

    bad = []
    excused = []
    for k in keys:
        if ref.get(k, ("",))[0] != "pass":
            continue
        a, why = engram.get(k, ("missing", "not run on Engram"))
        if a == "pass":
            continue
        if k in known:
            excused.append((k, a, known[k]))
        else:
            bad.append((k, a, why))
    print(f"\npassing on {ref_name}, not on ENGRAM (the rule):")
    for k, a, why in bad:
        print(f"  {a:7s} {k[0]} {k[1]}: {why}")
    for k, a, reason in excused:
        print(f"  known   {k[0]} {k[1]}: {reason}")
    if not bad and not excused:
        print("  none")
    ref_pass = sum(1 for a, _ in ref.values() if a == "pass")
    eng_pass = sum(1 for k in keys if ref.get(k, ("",))[0] == "pass" and engram.get(k, ("",))[0] == "pass")
    print(f"\nstorage suites: {len(keys)} run, {ref_pass} passed on {ref_name}, "
          f"{eng_pass} of those passed on Engram, {len(bad)} regressions, {len(excused)} known")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
