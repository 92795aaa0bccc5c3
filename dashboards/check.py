#!/usr/bin/env python3
"""Lint the Engram Grafana dashboard (and the metric names of the alert rules).

Usage:
  dashboards/check.py                      lint dashboards/engram.json, alerts/engram-rules.yaml
                                           and the runbook anchors; exit 1 on any problem
  dashboards/check.py --exprs job=etcd     print every dashboard query, one per line, with the
                                           Grafana variables substituted (for a live Prometheus test)
  dashboards/check.py --exprs --titles job=etcd instance=127.0.0.1:2381 rate_interval=1m
  dashboards/check.py --list > dashboards/queries.txt
                                           regenerate the committed list of panel queries
                                           (title, refId, raw expr; tab-separated)

Substitutions for --exprs (key=value): job= or cluster= (the $cluster variable; default
.*etcd.*), instance= (default .*), rate_interval= (default 1m), interval= (default 1m),
range= (default 1h). Variable queries label_values(<selector>, <label>) are printed as their
<selector>.

Checks (python3 standard library only):
  - the dashboard is valid JSON with uid, title, panels, templating;
  - panel ids are unique, gridPos rectangles do not overlap, refIds are unique per panel;
  - every expr has balanced (), [], {} and quotes, well-formed label matchers and range /
    subquery durations, only known $variables and $__ macros (catches `$__rate_intreval`),
    and every vector selector carries the cluster matcher (job=~"$cluster" in the dashboard,
    job=~".*etcd.*" in the rules);
  - every metric name used by the dashboard and the rules is listed in dashboards/metrics.txt
    (histograms as their base name, used with _bucket/_sum/_count), and every listed name is used;
  - every alert's runbook_url anchor exists as a heading in docs/runbooks.md;
  - dashboards/queries.txt (the list of queries) matches the dashboard.
The checks are lexical: promtool (alerts/check.sh) parses the rules for real, and the
--exprs output is meant to be run against a real Prometheus.
"""

import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DASHBOARD = os.path.join(HERE, "engram.json")
METRICS = os.path.join(HERE, "metrics.txt")
RULES = os.path.join(ROOT, "alerts", "engram-rules.yaml")
RUNBOOKS = os.path.join(ROOT, "docs", "runbooks.md")
QUERIES = os.path.join(HERE, "queries.txt")

GRAFANA_MACROS = {"__rate_interval", "__interval", "__interval_ms", "__range", "__range_s", "__range_ms"}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = {"offset", "bool", "and", "or", "unless", "atan2", "inf", "nan", "start", "end"}
AGGREGATORS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
               "bottomk", "topk", "quantile"}
HIST_SUFFIXES = ("_bucket", "_sum", "_count")
IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*')
DUR = r"(?:\$__[a-z_]+|\$[a-zA-Z_]\w*|(?:\d+(?:ms|s|m|h|d|w|y))+)"
RANGE = re.compile(r"^\s*%s\s*(?::\s*(?:%s)?\s*)?$" % (DUR, DUR))


class Problems(list):
    def add(self, where, msg):
        self.append("%s: %s" % (where, msg))


# ----------------------------------------------------------------------------- PromQL lexing

def skip_string(s, i):
    """s[i] is a quote; return the index after the closing quote, or -1."""
    q = s[i]
    i += 1
    while i < len(s):
        if s[i] == "\\" and q != "`":
            i += 2
            continue
        if s[i] == q:
            return i + 1
        i += 1
    return -1


def check_balance(expr):
    pairs = {")": "(", "]": "[", "}": "{"}
    stack = []
    i = 0
    while i < len(expr):
        c = expr[i]
        if c in "\"'`":
            j = skip_string(expr, i)
            if j < 0:
                return "unterminated string starting at offset %d" % i
            i = j
            continue
        if c in "([{":
            stack.append((c, i))
        elif c in ")]}":
            if not stack or stack[-1][0] != pairs[c]:
                return "unbalanced %r at offset %d" % (c, i)
            stack.pop()
        i += 1
    if stack:
        return "unclosed %r at offset %d" % stack[-1]
    return None


def matching(expr, i):
    """expr[i] is an opening bracket; return the index of its closing bracket (the
    expression is known to be balanced)."""
    depth = 0
    while i < len(expr):
        c = expr[i]
        if c in "\"'`":
            i = skip_string(expr, i)
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def parse_matchers(body):
    """Return a list of (label, op, value) or raise ValueError."""
    out = []
    rest = body
    while rest.strip():
        m = MATCHER.match(rest)
        if not m:
            raise ValueError("bad label matcher near %r" % rest.strip()[:40])
        out.append(m.groups())
        rest = rest[m.end():]
        if rest.startswith(","):
            rest = rest[1:]
        elif rest.strip():
            raise ValueError("expected ',' between label matchers near %r" % rest.strip()[:40])
    return out


def next_nonspace(s, i):
    while i < len(s) and s[i].isspace():
        i += 1
    return i


def scan(expr):
    """Yield ('metric', name, matchers|None) and ('error', msg) items for one PromQL expr."""
    i = 0
    n = len(expr)
    while i < n:
        c = expr[i]
        if c in "\"'`":
            i = skip_string(expr, i)
            if i < 0:
                return
            continue
        if c == "{":
            # a selector without a metric name: {__name__=...}
            j = matching(expr, i)
            try:
                parse_matchers(expr[i + 1:j])
            except ValueError as e:
                yield ("error", str(e))
            yield ("error", "selector without a metric name at offset %d" % i)
            i = j + 1
            continue
        if c == "[":
            j = matching(expr, i)
            if not RANGE.match(expr[i + 1:j]):
                yield ("error", "bad range/subquery %r" % expr[i:j + 1])
            i = j + 1
            continue
        if c.isdigit() or (c == "." and i + 1 < n and expr[i + 1].isdigit()):
            m = re.compile(r"(?:0x[0-9a-fA-F]+|\d*\.?\d+(?:[eE][+-]?\d+)?(?:(?:ms|s|m|h|d|w|y)(?:\d+(?:ms|s|m|h|d|w|y))*)?)").match(expr, i)
            i = m.end() if m and m.end() > i else i + 1
            continue
        m = IDENT.match(expr, i)
        if not m:
            i += 1
            continue
        word = m.group(0)
        i = m.end()
        j = next_nonspace(expr, i)
        if word in GROUPING:
            if j < n and expr[j] == "(":
                k = matching(expr, j)
                labels = expr[j + 1:k]
                if labels.strip() and not re.match(r"^\s*[a-zA-Z_]\w*(\s*,\s*[a-zA-Z_]\w*)*\s*,?\s*$", labels):
                    yield ("error", "bad label list after %s: %r" % (word, labels))
                i = k + 1
            continue
        if word.lower() in KEYWORDS or word in AGGREGATORS:
            continue  # aggregators may be followed by by/without (...) before their "("
        if j < n and expr[j] == "(":
            continue  # function or aggregator call
        matchers = None
        if j < n and expr[j] == "{":
            k = matching(expr, j)
            try:
                matchers = parse_matchers(expr[j + 1:k])
            except ValueError as e:
                yield ("error", "%s: %s" % (word, e))
                matchers = []
            i = k + 1
        yield ("metric", word, matchers)


def variables_in(expr):
    """$name / ${name} / ${name:fmt} references."""
    return [m.group(1) or m.group(2) for m in re.finditer(r"\$\{([a-zA-Z_]\w*)(?::\w+)?\}|\$([a-zA-Z_]\w*)", expr)]


def lint_expr(expr, where, problems, known_vars, required_matcher, used):
    err = check_balance(expr)
    if err:
        problems.add(where, err)
        return
    for v in variables_in(expr):
        if v.startswith("__"):
            if v not in GRAFANA_MACROS:
                problems.add(where, "unknown Grafana macro $%s" % v)
        elif v not in known_vars:
            problems.add(where, "unknown variable $%s" % v)
    for item in scan(expr):
        if item[0] == "error":
            problems.add(where, item[1])
            continue
        _, name, matchers = item
        used.setdefault(name, set()).add(where.split(":")[0])
        if required_matcher:
            if not matchers or required_matcher not in matchers:
                problems.add(where, 'selector %s lacks %s%s"%s"' % ((name,) + tuple(required_matcher)))


# ----------------------------------------------------------------------------- inputs

def load_metrics(path, problems):
    """metrics.txt: '<name> <type>  # comment' lines; returns {name: type}."""
    out = {}
    try:
        lines = open(path).read().splitlines()
    except OSError as e:
        problems.add(path, str(e))
        return out
    for no, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or parts[1] not in ("counter", "gauge", "histogram", "summary", "untyped"):
            problems.add("%s:%d" % (os.path.basename(path), no), "expected '<metric> <counter|gauge|histogram|summary|untyped>'")
            continue
        if parts[0] in out:
            problems.add("%s:%d" % (os.path.basename(path), no), "duplicate %s" % parts[0])
        out[parts[0]] = parts[1]
    return out


def resolve_metric(name, allowed):
    """Map a series name to its allow-list entry, or None."""
    if name in allowed and allowed[name] not in ("histogram", "summary"):
        return name
    for suf in HIST_SUFFIXES:
        if name.endswith(suf):
            base = name[: -len(suf)]
            if allowed.get(base) in ("histogram", "summary"):
                return base
    return None


def all_panels(dash):
    for p in dash.get("panels", []):
        yield p
        for sub in p.get("panels", []) or []:  # collapsed rows keep their panels inside
            yield sub


def dashboard_queries(dash):
    """Yield (where, title, refId, expr) for panel targets and ('var', name, None, selector) for variables."""
    for p in all_panels(dash):
        for t in p.get("targets", []) or []:
            if "expr" in t:
                yield ("panel %s %r" % (p.get("id"), p.get("title")), p.get("title"), t.get("refId"), t["expr"])
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v.get("query")
        if isinstance(q, dict):
            q = q.get("query", "")
        m = re.match(r"^\s*label_values\((.*),\s*([a-zA-Z_]\w*)\s*\)\s*$", q or "", re.S)
        if m:
            yield ("variable $%s" % v.get("name"), "$" + v.get("name"), None, m.group(1))
        else:
            yield ("variable $%s" % v.get("name"), "$" + v.get("name"), None, q or "")


def rules_exprs(path):
    """Yield (alert, expr, runbook_url) from the rules file; PyYAML if present, else a
    minimal reader of this repository's layout (`expr: |` blocks or one-line exprs)."""
    text = open(path).read()
    try:
        import yaml  # noqa
        doc = yaml.safe_load(text)
        for g in doc.get("groups", []):
            for r in g.get("rules", []):
                yield (r.get("alert") or r.get("record"), str(r.get("expr", "")),
                       (r.get("annotations") or {}).get("runbook_url"))
        return
    except ImportError:
        pass
    lines = text.splitlines()
    cur = None
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"^\s*-\s*(alert|record):\s*(\S+)", line)
        if m:
            if cur:
                yield cur
            cur = [m.group(2), "", None]
        m = re.match(r"^(\s*)expr:\s*(.*)$", line)
        if m and cur is not None:
            indent, val = len(m.group(1)), m.group(2).strip()
            if val in ("|", "|-", ">", ">-"):
                body = []
                i += 1
                while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
                    body.append(lines[i].strip())
                    i += 1
                cur[1] = " ".join(body)
                continue
            cur[1] = val.strip("'\"")
        m = re.match(r"^\s*runbook_url:\s*(\S+)", line)
        if m and cur is not None:
            cur[2] = m.group(1).strip("'\"")
        i += 1
    if cur:
        yield cur


def github_anchor(heading):
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


# ----------------------------------------------------------------------------- checks

def lint(problems):
    try:
        dash = json.load(open(DASHBOARD))
    except (OSError, ValueError) as e:
        problems.add(os.path.basename(DASHBOARD), "not valid JSON: %s" % e)
        return
    for key in ("uid", "title", "panels", "templating", "schemaVersion"):
        if key not in dash:
            problems.add("dashboard", "missing %r" % key)
    known_vars = {v.get("name") for v in dash.get("templating", {}).get("list", [])}

    ids = {}
    rects = []
    for p in all_panels(dash):
        pid = p.get("id")
        where = "panel %s %r" % (pid, p.get("title"))
        if not isinstance(pid, int):
            problems.add(where, "id must be an integer")
        elif pid in ids:
            problems.add(where, "duplicate panel id (also %r)" % ids[pid])
        else:
            ids[pid] = p.get("title")
        if not p.get("title"):
            problems.add(where, "missing title")
        g = p.get("gridPos")
        if not g or not all(isinstance(g.get(k), int) for k in "xywh"):
            problems.add(where, "missing or bad gridPos")
        else:
            if g["x"] + g["w"] > 24:
                problems.add(where, "gridPos wider than 24 columns")
            for (other, o) in rects:
                if g["x"] < o["x"] + o["w"] and o["x"] < g["x"] + g["w"] and g["y"] < o["y"] + o["h"] and o["y"] < g["y"] + g["h"]:
                    problems.add(where, "gridPos overlaps %s" % other)
            rects.append((where, g))
        if p.get("type") == "row":
            continue
        refs = [t.get("refId") for t in p.get("targets", []) or []]
        if not refs:
            problems.add(where, "no targets")
        if len(set(refs)) != len(refs):
            problems.add(where, "duplicate refId")
        for t in p.get("targets", []) or []:
            if not t.get("expr"):
                problems.add(where, "target %s has no expr" % t.get("refId"))
            ds = t.get("datasource", p.get("datasource"))
            uid = ds.get("uid") if isinstance(ds, dict) else ds
            if uid not in ("${datasource}", "$datasource"):
                problems.add(where, "target %s: datasource must be the $datasource variable" % t.get("refId"))

    allowed = load_metrics(METRICS, problems)
    used = {}
    cluster = ("job", "=~", "$cluster")
    for where, title, ref, expr in dashboard_queries(dash):
        w = "%s%s" % (where, " " + ref if ref else "")
        required = None if where.startswith("variable $cluster") else cluster
        lint_expr(expr, w, problems, known_vars, required, used)

    if os.path.exists(RULES):
        anchors = set()
        if os.path.exists(RUNBOOKS):
            for line in open(RUNBOOKS):
                m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
                if m:
                    anchors.add(github_anchor(m.group(1)))
        else:
            problems.add(RUNBOOKS, "missing")
        for alert, expr, runbook in rules_exprs(RULES):
            w = "rule %s" % alert
            lint_expr(expr, w, problems, set(), ("job", "=~", ".*etcd.*"), used)
            if not runbook:
                problems.add(w, "no runbook_url")
            elif "#" not in runbook or runbook.split("#", 1)[1] != alert.lower():
                problems.add(w, "runbook_url anchor must be #%s" % alert.lower())
            elif anchors and alert.lower() not in anchors:
                problems.add(w, "docs/runbooks.md has no heading for #%s" % alert.lower())

    if os.path.exists(QUERIES):
        if open(QUERIES).read() != query_list(dash):
            problems.add("queries.txt", "does not match the dashboard: regenerate with dashboards/check.py --list > dashboards/queries.txt")
    else:
        problems.add("queries.txt", "missing: dashboards/check.py --list > dashboards/queries.txt")

    listed_used = set()
    for name, where in sorted(used.items()):
        base = resolve_metric(name, allowed)
        if base is None:
            if name in allowed:
                problems.add(", ".join(sorted(where)), "%s is a %s: use %s_bucket/_sum/_count" % (name, allowed[name], name))
            else:
                problems.add(", ".join(sorted(where)), "metric %s is not in metrics.txt" % name)
        else:
            listed_used.add(base)
    for name in sorted(set(allowed) - listed_used):
        problems.add("metrics.txt", "%s is listed but used by neither the dashboard nor the rules" % name)


def query_list(dash):
    out = ["# Every query of dashboards/engram.json: title<TAB>refId<TAB>expr (Grafana variables unsubstituted).",
           "# Generated by: dashboards/check.py --list > dashboards/queries.txt (check.py fails when stale)."]
    for where, title, ref, expr in dashboard_queries(dash):
        out.append("%s\t%s\t%s" % (title, ref or "-", " ".join(expr.split())))
    return "\n".join(out) + "\n"


def print_exprs(args, titles):
    subs = {"cluster": ".*etcd.*", "instance": ".*", "__rate_interval": "1m", "__interval": "1m",
            "__interval_ms": "60000", "__range": "1h", "__range_s": "3600", "__range_ms": "3600000"}
    for a in args:
        if "=" not in a:
            sys.exit("--exprs: expected key=value, got %r" % a)
        k, v = a.split("=", 1)
        k = {"job": "cluster", "rate_interval": "__rate_interval", "interval": "__interval", "range": "__range"}.get(k, k)
        subs[k] = v
        if k == "__range":
            secs = parse_seconds(v)
            subs["__range_s"], subs["__range_ms"] = str(secs), str(secs * 1000)
        if k == "__interval":
            subs["__interval_ms"] = str(parse_seconds(v) * 1000)
    dash = json.load(open(DASHBOARD))

    def sub(m):
        name = m.group(1) or m.group(2)
        return subs.get(name, m.group(0))
    for where, title, ref, expr in dashboard_queries(dash):
        e = re.sub(r"\$\{([a-zA-Z_]\w*)(?::\w+)?\}|\$([a-zA-Z_]\w*)", sub, expr)
        e = " ".join(e.split())
        if titles:
            print("%s\t%s\t%s" % (title, ref or "-", e))
        else:
            print(e)


def parse_seconds(v):
    total = 0
    for num, unit in re.findall(r"(\d+)(ms|s|m|h|d|w|y)", v):
        total += int(num) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}[unit]
    return int(total)


def main(argv):
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    if argv == ["--list"]:
        sys.stdout.write(query_list(json.load(open(DASHBOARD))))
        return 0
    if argv and argv[0] == "--exprs":
        rest = argv[1:]
        titles = "--titles" in rest
        rest = [a for a in rest if a != "--titles"]
        print_exprs(rest, titles)
        return 0
    if argv:
        print("usage: check.py [--list | --exprs [--titles] [key=value ...]]", file=sys.stderr)
        return 2
    problems = Problems()
    lint(problems)
    for p in problems:
        print("check.py: " + p, file=sys.stderr)
    if problems:
        print("check.py: %d problem(s)" % len(problems), file=sys.stderr)
        return 1
    print("check.py: OK (%s, %s)" % (os.path.relpath(DASHBOARD, ROOT), os.path.relpath(RULES, ROOT)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
