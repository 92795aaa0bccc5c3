#!/usr/bin/env python3
"""Compare two scenario.py results: every step must pass on both backends, and every
deterministic observation (watch event sequences, list sizes, error texts, field managers)
must be equal. Usage: scenario_compare.py REFERENCE.json ENGRAM.json"""
import json
import sys


def main(ref_path, eng_path):
    ref, eng = (json.load(open(p)) for p in (ref_path, eng_path))
    steps = [r["step"] for r in ref["results"]]
    for r in eng["results"]:
        if r["step"] not in steps:
            steps.append(r["step"])
    rs = {r["step"]: r for r in ref["results"]}
    es = {r["step"]: r for r in eng["results"]}
    print(f"{'step':80s} {ref['name']:>8s} {eng['name']:>8s}")
    bad = 0
    for s in steps:
        a, b = rs.get(s), es.get(s)
        fa = "pass" if a and a["ok"] else ("fail" if a else "-")
        fb = "pass" if b and b["ok"] else ("fail" if b else "-")
        print(f"{s[:80]:80s} {fa:>8s} {fb:>8s}")
        if fb != "pass" or fa != "pass":
            bad += 1
    keys = sorted(set(ref["observations"]) | set(eng["observations"]))
    differ = []
    for k in keys:
        va, vb = ref["observations"].get(k), eng["observations"].get(k)
        if va != vb:
            differ.append(k)
            print(f"observation {k} differs:\n  {ref['name']}: {va}\n  {eng['name']}: {vb}")
    ref_pass = sum(1 for r in ref["results"] if r["ok"])
    eng_pass = sum(1 for r in eng["results"] if r["ok"])
    print(f"{len(steps)} steps: {ref_pass} passed on {ref['name']}, {eng_pass} on {eng['name']}; "
          f"{len(keys) - len(differ)} of {len(keys)} observations equal")
    return 1 if bad or differ else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
