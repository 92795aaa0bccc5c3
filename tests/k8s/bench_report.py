#!/usr/bin/env python3
"""Engram over etcd 3.7 ratios of loaddriver runs through kube-apiserver.

Usage: bench_report.py ETCD37=r1.json,r2.json,... ENGRAM=r1.json,r2.json,...
Each file is one backend's round of tests/k8s/bin/loaddriver (scenario.py --bench): both
backends, each under its own kube-apiserver, are up for the whole run, and every phase of a
round runs on one backend and then at once on the other (the order alternates between rounds),
so a phase's two measurements are seconds apart. Per phase the median over rounds is taken of: throughput,
the apiserver's own p50/p99 (apiserver_request_duration_seconds, interpolated in its
buckets), and the mean backend time per storage operation as the apiserver measures it
(etcd_request_duration_seconds sum/count), and the backend process's own CPU time per
operation during the phase. Goal per row: rate ratio >= 1 and p99 ratio <= 1.
The client's own p99 ratio (exact, from the driver's latencies, which include the driver's
queueing on the shared cores) is printed beside it for reference; the goal uses the apiserver's.
Also printed: the ratios round by round (a round's two measurements of a phase are adjacent),
whose median is less sensitive to the machine's drift than the ratio of medians.
Prints a table and a last line; exit 1 only when a run failed (a missed goal is reported,
not hidden; timing is for benchmarks, not tests)."""
import json
import statistics
import sys


def load(arg):
    name, _, files = arg.partition("=")
    return name, [json.load(open(f)) for f in files.split(",") if f]


def med(xs):
    xs = [x for x in xs if x is not None and x >= 0]
    return statistics.median(xs) if xs else float("nan")


def cpu_us_per_op(phase, field):
    """A process's CPU time per operation during the phase, in microseconds (None if not measured)."""
    return phase[field] / phase["ops"] * 1e6 if field in phase else None


def summarize(runs):
    out = {}
    for p in runs[0]["phases"]:
        name = p["name"]
        ph = [next(q for q in r["phases"] if q["name"] == name) for r in runs]
        ops = sorted({op for q in ph for op in q.get("backend_mean_ms", {})})
        out[name] = {
            "rate": med([q["ops_per_second"] for q in ph]),
            "p50": med([q["apiserver_ms"]["p50"] for q in ph]),
            "p99": med([q["apiserver_ms"]["p99"] for q in ph]),
            "client_p99": med([q.get("client_p99_ms") for q in ph]),
            "backend": {op: med([q.get("backend_mean_ms", {}).get(op) for q in ph]) for op in ops},
            "cpu_us": med([cpu_us_per_op(q, "backend_cpu_seconds") for q in ph]),
            "api_cpu_us": med([cpu_us_per_op(q, "apiserver_cpu_seconds") for q in ph]),
        }
    return out, med([r["backend_cpu_seconds"] for r in runs])


def paired_ratios(ref, eng):
    """{phase: ([rate ratio per round], [p99 ratio per round])}: a phase of round r ran on one
    backend right after the other, so their ratio cancels the machine's drift between rounds
    (both backends are often 20-30 % faster in some rounds than in others)."""
    if len(ref) != len(eng):
        return {}
    out = {}
    for p in ref[0]["phases"]:
        name = p["name"]
        rate, p99 = [], []
        for r, e in zip(ref, eng):
            rp = next(q for q in r["phases"] if q["name"] == name)
            ep = next(q for q in e["phases"] if q["name"] == name)
            rate.append(ep["ops_per_second"] / rp["ops_per_second"])
            if rp["apiserver_ms"]["p99"] > 0:
                p99.append(ep["apiserver_ms"]["p99"] / rp["apiserver_ms"]["p99"])
        out[name] = (rate, p99 or [float("nan")])
    return out


def main(argv):
    (rn, ref), (en, eng) = load(argv[0]), load(argv[1])
    failed = [r for r in ref + eng if not r.get("ok")]
    if failed or not ref or not eng:
        for r in failed:
            print(f"{r.get('name')} run failed: {r.get('stderr', '')[-400:]}")
        print("a run failed")
        return 1
    rs, rcpu = summarize(ref)
    es, ecpu = summarize(eng)
    paired = paired_ratios(ref, eng)
    print(f"medians of {len(ref)} rounds on {rn} and {len(eng)} on {en} (both up, phases interleaved)")
    print(f"{'phase':8s} {'rate ' + rn:>12s} {'rate ' + en:>12s} {'ratio':>6s}  "
          f"{'p50/p99 ' + rn:>17s} {'p50/p99 ' + en:>17s} {'p99 ratio':>9s} {'client p99':>10s}  "
          f"backend: CPU us per op (and the apiserver's); mean ms per op as the apiserver sees it ({rn} -> {en})")
    missed = []
    for name, e in es.items():
        r = rs[name]
        rate = e["rate"] / r["rate"]
        p99 = e["p99"] / r["p99"] if r["p99"] > 0 else float("nan")
        cp99 = e["client_p99"] / r["client_p99"] if r["client_p99"] > 0 else float("nan")
        means = ", ".join(f"{op} {r['backend'].get(op, float('nan')):.2f}->{v:.2f}" for op, v in e["backend"].items())
        backend = (f"CPU {r['cpu_us']:.0f}->{e['cpu_us']:.0f} "
                   f"(apiserver's {r['api_cpu_us']:.0f}->{e['api_cpu_us']:.0f}); {means}")
        print(f"{name:8s} {r['rate']:12.0f} {e['rate']:12.0f} {rate:6.2f}  "
              f"{r['p50']:8.1f}/{r['p99']:<8.1f} {e['p50']:8.1f}/{e['p99']:<8.1f} {p99:9.2f} {cp99:10.2f}  {backend}")
        if rate < 1 or p99 > 1:
            missed.append(name)
    if paired:
        print(f"per round ({en} over {rn}, each phase measured on both seconds apart): "
              "median [min-max] of the rate and apiserver p99 ratios")
        for name, (rate, p99) in paired.items():
            print(f"  {name:8s} rate {med(rate):.2f} [{min(rate):.2f}-{max(rate):.2f}]"
                  f"  p99 {med(p99):.2f} [{min(p99):.2f}-{max(p99):.2f}]")
    print(f"backend CPU during its measured phases, per round (median): {rn} {rcpu:.1f} s, {en} {ecpu:.1f} s "
          f"(ratio {ecpu / rcpu:.2f}); every watcher saw every event in every round")
    for label, runs in ((rn, ref), (en, eng)):
        retried = [(i + 1, p["name"], p["retries"]) for i, r in enumerate(runs)
                   for p in r["phases"] if p.get("retries")]
        if retried:
            print(f"{label}: reads retried once after an HTTP/2 transport error with the apiserver: "
                  + ", ".join(f"round {i} {n} {c}" for i, n, c in retried))
    print(f"{len(es)} phases, goal met on {len(es) - len(missed)}"
          + (f" (missed: {', '.join(missed)})" if missed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
