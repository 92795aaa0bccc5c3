#!/usr/bin/env python3
"""A real kube-apiserver keeps its state in one backend (Engram or etcd); kubectl drives it.

Usage: scenario.py --name NAME --launcher servers/X.sh --kube-bin DIR --work DIR --out FILE.json
       scenario.py --bench --name A,B --launcher servers/A.sh,servers/B.sh --kube-bin DIR --work DIR
                   --out DIR [--rounds N]   (the load driver through one apiserver per backend)

Starts the backend through its launcher (the same launchers as the storage suites), then
kube-apiserver v1.37 on it, and runs the scenario of issue 14 step by step. Every step
asserts behaviour; the deterministic observations (watch event sequences, list sizes,
error texts, field managers) go into --out so run.sh can compare backends. Exit status 0
when every step passed. Prints one `PASS|FAIL step: detail` line per step and a final
`N passed, M failed` line.
"""
import argparse
import base64
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

TOKEN = "engram-scenario-token"


def free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


class Scenario:
    def __init__(self, args):
        self.args = args
        self.work = os.path.abspath(args.work)
        shutil.rmtree(self.work, ignore_errors=True)
        os.makedirs(self.work)
        self.kbin = os.path.abspath(args.kube_bin)
        self.cport, self.pport, self.mport, self.aport = free_ports(4)
        self.client_url = f"http://127.0.0.1:{self.cport}"
        self.data_dir = os.path.join(self.work, "data")
        self.backend = None
        self.apiserver = None
        self.results = []
        self.obs = {}
        self.ctx = ssl.create_default_context()
        self.ctx.check_hostname = False
        self.ctx.verify_mode = ssl.CERT_NONE

    # ---- processes -------------------------------------------------------------------
    def start_backend(self):
        log = open(os.path.join(self.work, "backend.log"), "ab")
        self.backend = subprocess.Popen(
            [self.args.launcher, self.client_url, f"http://127.0.0.1:{self.pport}",
             f"http://127.0.0.1:{self.mport}", self.data_dir],
            stdout=log, stderr=log, start_new_session=True)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.backend.poll() is not None:
                raise RuntimeError(f"backend exited: {self.tail('backend.log')}")
            r = subprocess.run(["etcdctl", "--endpoints", self.client_url, "endpoint", "health"],
                               capture_output=True, text=True, env={**os.environ, "ETCDCTL_API": "3"})
            if r.returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError("backend did not become healthy in 30 s")

    def stop(self, proc, sig=signal.SIGTERM, wait=20):
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, sig)
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def tail(self, name, n=3000):
        try:
            with open(os.path.join(self.work, name), "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def start_apiserver(self):
        w = self.work
        if not os.path.exists(f"{w}/sa.key"):
            subprocess.run(["openssl", "genrsa", "-out", f"{w}/sa.key", "2048"], check=True,
                           capture_output=True)
            with open(f"{w}/tokens.csv", "w") as f:
                f.write(f"{TOKEN},admin,admin,system:masters\n")
            os.makedirs(f"{w}/certs", exist_ok=True)
            kubeconfig = {
                "apiVersion": "v1", "kind": "Config", "current-context": "s",
                "clusters": [{"name": "s", "cluster": {
                    "server": f"https://127.0.0.1:{self.aport}", "insecure-skip-tls-verify": True}}],
                "users": [{"name": "u", "user": {"token": TOKEN}}],
                "contexts": [{"name": "s", "context": {"cluster": "s", "user": "u"}}],
            }
            with open(f"{w}/kubeconfig", "w") as f:
                json.dump(kubeconfig, f)
        log = open(os.path.join(w, "apiserver.log"), "ab")
        self.apiserver = subprocess.Popen([
            f"{self.kbin}/kube-apiserver",
            f"--etcd-servers={self.client_url}",
            "--etcd-compaction-interval=10s",
            "--endpoint-reconciler-type=lease",
            "--event-ttl=20s",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={w}/sa.key",
            f"--service-account-signing-key-file={w}/sa.key",
            "--authorization-mode=RBAC", f"--token-auth-file={w}/tokens.csv",
            "--bind-address=127.0.0.1", f"--secure-port={self.aport}", f"--cert-dir={w}/certs",
            "--advertise-address=198.51.100.10",
            "--service-cluster-ip-range=10.0.0.0/24",
            # Secrets are not cached: their lists and pages are served by the backend itself.
            "--watch-cache-sizes=secrets#0",
            "--v=1",
        ], stdout=log, stderr=log, start_new_session=True)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.apiserver.poll() is not None:
                raise RuntimeError(f"kube-apiserver exited: {self.tail('apiserver.log')}")
            code, _ = self.http("/readyz")
            if code == 200:
                return
            time.sleep(0.5)
        raise RuntimeError("kube-apiserver not ready in 120 s: " + self.tail("apiserver.log"))

    def http(self, path, timeout=5):
        req = urllib.request.Request(f"https://127.0.0.1:{self.aport}{path}",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=timeout) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")
        except (urllib.error.URLError, OSError) as e:
            return 0, str(e)

    def kubectl(self, *args, input=None, check=True, timeout=300):
        r = subprocess.run([f"{self.kbin}/kubectl", f"--kubeconfig={self.work}/kubeconfig", *args],
                           input=input, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {r.stderr.strip()}")
        return r

    def etcdctl(self, *args):
        return subprocess.run(["etcdctl", "--endpoints", self.client_url, *args],
                              capture_output=True, text=True, env={**os.environ, "ETCDCTL_API": "3"})

    def watch(self, *args):
        out = open(os.path.join(self.work, f"watch-{len(self.obs)}-{time.time_ns()}.json"), "w+")
        p = subprocess.Popen([f"{self.kbin}/kubectl", f"--kubeconfig={self.work}/kubeconfig", "get",
                              *args, "-w", "--output-watch-events", "-o", "json"],
                             stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        return p, out

    @staticmethod
    def read_events(out):
        out.flush()
        out.seek(0)
        text = out.read()
        dec = json.JSONDecoder()
        events, i = [], 0
        while True:
            while i < len(text) and text[i].isspace():
                i += 1
            if i >= len(text):
                break
            try:
                obj, i = dec.raw_decode(text, i)
            except ValueError:
                break
            events.append(obj)
        return events

    def wait_events(self, out, n, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            ev = self.read_events(out)
            if len(ev) >= n:
                return ev
            time.sleep(0.2)
        return self.read_events(out)

    # ---- bookkeeping -----------------------------------------------------------------
    def step(self, name, fn):
        t0 = time.time()
        try:
            detail = fn() or ""
            ok = True
        except Exception as e:  # a failed step is reported, the scenario goes on
            ok, detail = False, f"{type(e).__name__}: {e}"
        self.results.append({"step": name, "ok": ok, "detail": str(detail)[:2000],
                             "seconds": round(time.time() - t0, 1)})
        print(f"{'PASS' if ok else 'FAIL'} {name}: {str(detail)[:400]}", flush=True)
        return ok

    # ---- the scenario ----------------------------------------------------------------
    def s_ready(self):
        code, body = self.http("/readyz?verbose")
        assert code == 200, f"/readyz {code}: {body[-500:]}"
        for check in ("[+]etcd ok", "[+]etcd-readiness ok"):
            assert check in body, f"{check!r} missing from /readyz?verbose"
        code, body = self.http("/livez?verbose")
        assert code == 200 and "[+]etcd ok" in body, f"/livez {code}"
        v = json.loads(self.kubectl("version", "-o", "json").stdout)
        self.obs["server_version"] = v["serverVersion"]["gitVersion"]
        return f"etcd and etcd-readiness ok; server {self.obs['server_version']}"

    def s_namespaces(self):
        self.kubectl("create", "namespace", "scen")
        self.kubectl("create", "namespace", "scratch")
        self.kubectl("label", "namespace", "scratch", "purpose=test")
        got = self.kubectl("get", "namespace", "scratch", "-o", "jsonpath={.metadata.labels.purpose}").stdout
        assert got == "test", got
        # No kube-controller-manager runs here, so the namespace finalizer is removed by hand
        # through the finalize subresource (what the namespace controller does).
        self.kubectl("delete", "namespace", "scratch", "--wait=false")
        ns = json.loads(self.kubectl("get", "namespace", "scratch", "-o", "json").stdout)
        assert ns["status"]["phase"] == "Terminating", ns["status"]
        ns["spec"]["finalizers"] = []
        self.kubectl("replace", "--raw", "/api/v1/namespaces/scratch/finalize", "-f", "-",
                     input=json.dumps(ns))
        deadline = time.time() + 30
        while time.time() < deadline:
            r = self.kubectl("get", "namespace", "scratch", check=False)
            if r.returncode != 0 and "NotFound" in r.stderr:
                break
            time.sleep(0.3)
        else:
            raise AssertionError("namespace scratch still present after finalize")
        names = self.kubectl("get", "namespaces", "-o", "name").stdout.split()
        self.obs["namespaces"] = sorted(names)
        assert "namespace/scen" in names and "namespace/scratch" not in names, names
        return " ".join(sorted(names))

    def s_configmaps_secrets_watch(self):
        # kubectl get -w on an empty namespace-wide list, then every change must arrive in order.
        wcm, ocm = self.watch("configmaps", "-n", "scen", "--field-selector=metadata.name!=kube-root-ca.crt")
        wsec, osec = self.watch("secrets", "-n", "scen")
        time.sleep(2)
        k = self.kubectl
        k("create", "configmap", "app", "-n", "scen", "--from-literal=a=1")
        k("create", "configmap", "other", "-n", "scen", "--from-literal=x=1")
        k("patch", "configmap", "app", "-n", "scen", "--type=merge", "-p", '{"data":{"b":"2"}}')
        cm = json.loads(k("get", "configmap", "app", "-n", "scen", "-o", "json").stdout)
        cm["data"]["a"] = "10"
        k("replace", "-f", "-", input=json.dumps(cm))
        # A stale update is refused with a conflict.
        r = k("replace", "-f", "-", input=json.dumps(cm), check=False)
        assert r.returncode != 0 and "the object has been modified" in r.stderr, r.stderr
        self.obs["conflict_error"] = r.stderr.strip().split("\n")[-1]
        k("delete", "configmap", "other", "-n", "scen")
        k("create", "secret", "generic", "s1", "-n", "scen", "--from-literal=password=hunter2")
        k("patch", "secret", "s1", "-n", "scen", "--type=json",
          "-p", '[{"op":"add","path":"/data/user","value":"' + base64.b64encode(b"root").decode() + '"}]')
        k("delete", "secret", "s1", "-n", "scen")
        want_cm = [("ADDED", "app"), ("ADDED", "other"), ("MODIFIED", "app"), ("MODIFIED", "app"),
                   ("DELETED", "other")]
        want_sec = [("ADDED", "s1"), ("MODIFIED", "s1"), ("DELETED", "s1")]
        evc = self.wait_events(ocm, len(want_cm))
        evs = self.wait_events(osec, len(want_sec))
        self.stop(wcm), self.stop(wsec)
        got_cm = [(e["type"], e["object"]["metadata"]["name"]) for e in evc]
        got_sec = [(e["type"], e["object"]["metadata"]["name"]) for e in evs]
        assert got_cm == want_cm, f"configmap watch saw {got_cm}"
        assert got_sec == want_sec, f"secret watch saw {got_sec}"
        for evs_ in (evc, evs):
            rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in evs_]
            assert rvs == sorted(rvs) and len(set(rvs)) == len(rvs), f"resourceVersions not increasing: {rvs}"
        data = json.loads(k("get", "configmap", "app", "-n", "scen", "-o", "json").stdout)["data"]
        assert data == {"a": "10", "b": "2"}, data
        assert evs[1]["object"]["data"]["user"] == base64.b64encode(b"root").decode()
        self.obs["watch_configmaps"] = got_cm
        self.obs["watch_secrets"] = got_sec
        return f"configmap watch {got_cm}; secret watch {got_sec}"

    def s_crd(self):
        crd = {
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.engram.dev"},
            "spec": {"group": "engram.dev", "scope": "Namespaced",
                     "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                     "versions": [{"name": "v1", "served": True, "storage": True,
                                   "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                                       "spec": {"type": "object", "properties": {
                                           "size": {"type": "integer", "minimum": 0},
                                           "color": {"type": "string"}}}}}}}]}}
        self.kubectl("apply", "-f", "-", input=json.dumps(crd))
        self.kubectl("wait", "--for=condition=Established", "crd/widgets.engram.dev", "--timeout=60s")
        w, out = self.watch("widgets", "-n", "scen")
        time.sleep(2)
        deadline = time.time() + 30
        while True:  # discovery of a new CRD takes a moment
            r = self.kubectl("create", "-f", "-", check=False, input=json.dumps({
                "apiVersion": "engram.dev/v1", "kind": "Widget",
                "metadata": {"name": "w1", "namespace": "scen"}, "spec": {"size": 1, "color": "red"}}))
            if r.returncode == 0 or time.time() > deadline:
                break
            time.sleep(1)
        assert r.returncode == 0, r.stderr
        r = self.kubectl("create", "-f", "-", check=False, input=json.dumps({
            "apiVersion": "engram.dev/v1", "kind": "Widget",
            "metadata": {"name": "bad", "namespace": "scen"}, "spec": {"size": -1}}))
        assert r.returncode != 0 and "spec.size" in r.stderr, r.stderr
        self.kubectl("patch", "widget", "w1", "-n", "scen", "--type=merge", "-p", '{"spec":{"size":2}}')
        self.kubectl("delete", "widget", "w1", "-n", "scen")
        ev = self.wait_events(out, 3)
        self.stop(w)
        got = [(e["type"], e["object"]["metadata"]["name"], e["object"].get("spec", {}).get("size")) for e in ev]
        assert got == [("ADDED", "w1", 1), ("MODIFIED", "w1", 2), ("DELETED", "w1", 2)], got
        self.obs["watch_widgets"] = got
        return f"CRD established, schema enforced, widget watch {got}"

    def s_server_side_apply(self):
        cm = {"apiVersion": "v1", "kind": "ConfigMap",
              "metadata": {"name": "ssa", "namespace": "scen"}, "data": {"owner": "alice", "x": "1"}}
        self.kubectl("apply", "--server-side", "--field-manager=alice", "-f", "-", input=json.dumps(cm))
        bob = {"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "ssa", "namespace": "scen"}, "data": {"owner": "bob"}}
        r = self.kubectl("apply", "--server-side", "--field-manager=bob", "-f", "-",
                         input=json.dumps(bob), check=False)
        assert r.returncode != 0 and "conflict" in r.stderr.lower(), r.stderr
        self.obs["ssa_conflict"] = [l for l in r.stderr.splitlines() if "conflict" in l.lower()][:1]
        self.kubectl("apply", "--server-side", "--field-manager=bob", "--force-conflicts", "-f", "-",
                     input=json.dumps(bob))
        got = json.loads(self.kubectl("get", "configmap", "ssa", "-n", "scen", "-o", "json",
                                      "--show-managed-fields").stdout)
        managers = sorted(m["manager"] for m in got["metadata"]["managedFields"])
        assert got["data"] == {"owner": "bob", "x": "1"}, got["data"]
        assert managers == ["alice", "bob"], managers
        self.obs["ssa_managers"] = managers
        return f"conflict refused, forced; managers {managers}"

    def s_bulk_and_pages(self):
        n = self.args.objects
        self.kubectl("create", "namespace", "bulk")
        for kind in ("ConfigMap", "Secret"):
            items = []
            for i in range(n):
                o = {"apiVersion": "v1", "kind": kind,
                     "metadata": {"name": f"o-{i:05d}", "namespace": "bulk", "labels": {"mod": str(i % 7)}}}
                if kind == "ConfigMap":
                    o["data"] = {"i": str(i), "pad": "p" * 200}
                else:
                    o["stringData"] = {"i": str(i)}
                items.append(o)
            # kubectl create sends one POST per object, in order.
            for start in range(0, n, 1000):
                self.kubectl("create", "-f", "-", "-o", "name",
                             input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items[start:start + 1000]}))
        out = {}
        for res in ("configmaps", "secrets"):
            names = self.kubectl("get", res, "-n", "bulk", "--chunk-size=500", "-o", "name").stdout.split()
            names = [x for x in names if not x.endswith("/kube-root-ca.crt")]
            assert len(names) == n and len(set(names)) == n, f"{res}: {len(names)} listed, want {n}"
            sel = self.kubectl("get", res, "-n", "bulk", "--chunk-size=100", "-l", "mod=3", "-o", "name").stdout.split()
            want = len([i for i in range(n) if i % 7 == 3])
            assert len(sel) == want, f"{res} mod=3: {len(sel)}, want {want}"
            out[res] = (len(names), len(sel))
        # A raw page with a continue token, served by the backend (secrets are not cached).
        limit = max(1, n // 5)
        code, body = self.http(f"/api/v1/namespaces/bulk/secrets?limit={limit}")
        assert code == 200, body[:300]
        page = json.loads(body)
        assert len(page["items"]) == limit and page["metadata"].get("continue"), page["metadata"]
        total, pages = len(page["items"]), 1
        cont = page["metadata"]["continue"]
        while cont:
            pages += 1
            code, body = self.http(f"/api/v1/namespaces/bulk/secrets?limit={limit}&continue={cont}")
            assert code == 200, body[:300]
            page = json.loads(body)
            total += len(page["items"])
            cont = page["metadata"].get("continue")
        assert total == n and pages == (n + limit - 1) // limit, (total, pages)
        self.obs["bulk"] = out
        return f"{n} configmaps and {n} secrets created; paged lists {out}; {pages} raw pages of {limit}: {total}"

    def s_events_expire(self):
        ev = {"apiVersion": "v1", "kind": "Event",
              "metadata": {"name": "scen-event", "namespace": "scen"},
              "involvedObject": {"kind": "ConfigMap", "name": "app", "namespace": "scen"},
              "reason": "Drill", "message": "expires through a lease", "type": "Normal"}
        self.kubectl("create", "-f", "-", input=json.dumps(ev))
        key = "/registry/events/scen/scen-event"
        r = self.etcdctl("get", key, "-w", "json")
        assert r.returncode == 0 and r.stdout.strip(), f"etcdctl get {key}: {r.stderr.strip()}"
        kvs = json.loads(r.stdout).get("kvs")
        assert kvs, f"{key} not stored: {r.stdout.strip()}"
        kv = kvs[0]
        lease = kv.get("lease", 0)
        assert lease, f"event stored without a lease: {kv}"
        ttl = self.etcdctl("lease", "timetolive", format(lease, "x"))
        t0 = time.time()
        deadline = t0 + 90
        while time.time() < deadline:
            r = self.kubectl("get", "event", "scen-event", "-n", "scen", check=False)
            if r.returncode != 0 and "NotFound" in r.stderr:
                break
            time.sleep(1)
        else:
            raise AssertionError("event still present 90 s after creation")
        gone = self.etcdctl("get", key, "-w", "json")
        assert gone.returncode == 0 and not json.loads(gone.stdout).get("kvs"), gone.stdout + gone.stderr
        self.obs["event_expired"] = True
        return f"lease {lease:x} ({ttl.stdout.strip()}); event gone after {time.time() - t0:.0f} s"

    def s_compaction(self):
        # --etcd-compaction-interval=10s: the apiserver compacts the backend itself.
        deadline = time.time() + 60
        while time.time() < deadline:
            r = self.etcdctl("get", "/registry/namespaces/scen", "--rev=2")
            if "compacted" in r.stderr:
                return r.stderr.strip().splitlines()[-1]
            time.sleep(2)
        raise AssertionError("revision 2 never compacted: " + r.stderr + r.stdout[:200])

    def counts(self):
        c = {}
        for res, ns in (("configmaps", "bulk"), ("secrets", "bulk"), ("configmaps", "scen")):
            c[f"{res}/{ns}"] = len(self.kubectl("get", res, "-n", ns, "-o", "name").stdout.split())
        c["widgets.crd"] = self.kubectl("get", "crd", "widgets.engram.dev", "-o", "name").stdout.strip()
        return c

    def s_restart_apiserver(self):
        before = self.counts()
        self.stop(self.apiserver)
        self.start_apiserver()
        after = self.counts()
        assert before == after, f"{before} != {after}"
        w, out = self.watch("configmaps", "-n", "scen", "--field-selector=metadata.name=app")
        self.wait_events(out, 1)  # the initial list is in: the patch below must come as MODIFIED
        self.kubectl("patch", "configmap", "app", "-n", "scen", "--type=merge", "-p", '{"data":{"c":"3"}}')
        ev = self.wait_events(out, 2)
        self.stop(w)
        got = [e["type"] for e in ev]
        assert got == ["ADDED", "MODIFIED"], got
        return f"relisted: {after}; watch {got}"

    def s_restart_backend(self):
        before = self.counts()
        w, out = self.watch("configmaps", "-n", "scen", "--field-selector=metadata.name=app")
        self.wait_events(out, 1)
        # kill -9: every write the apiserver was told succeeded must still be there.
        self.stop(self.backend, signal.SIGKILL)
        deadline = time.time() + 30
        down = None
        while time.time() < deadline:
            code, body = self.http("/readyz/etcd")
            if code != 200:
                down = (code, body.strip()[-200:])
                break
            time.sleep(0.3)
        assert down, "/readyz/etcd stayed 200 with the backend stopped"
        self.start_backend()
        deadline = time.time() + 60
        while time.time() < deadline:
            code, _ = self.http("/readyz/etcd")
            if code == 200:
                break
            time.sleep(0.3)
        else:
            raise AssertionError("/readyz/etcd not 200 within 60 s of the restart")
        after = self.counts()
        assert before == after, f"{before} != {after}"
        # Writes work again, and a watch opened before the restart still delivers.
        deadline = time.time() + 30
        while True:
            r = self.kubectl("patch", "configmap", "app", "-n", "scen", "--type=merge",
                             "-p", '{"data":{"d":"4"}}', check=False)
            if r.returncode == 0 or time.time() > deadline:
                break
            time.sleep(1)
        assert r.returncode == 0, r.stderr
        ev = self.wait_events(out, 2)
        self.stop(w)
        got = [(e["type"], e["object"]["data"].get("d")) for e in ev]
        assert got[-1] == ("MODIFIED", "4"), f"watch across the restart saw {got}"
        code, body = self.http("/readyz?verbose")
        assert code == 200 and "[+]etcd ok" in body
        return f"/readyz/etcd {down[0]} while down, 200 after; nothing lost {after}; watch {got}"

    def s_metrics(self):
        code, body = self.http("/metrics", timeout=20)
        assert code == 200
        streams = 0.0
        for line in body.splitlines():
            if line.startswith("etcd_requests_total{") and 'operation="listStream"' in line:
                streams += float(line.rsplit(" ", 1)[1])
        self.obs["list_streams_used"] = streams > 0
        assert streams > 0, "the apiserver never read through RangeStream"
        return f"etcd_requests_total{{operation=listStream}} = {streams:.0f}"

    def cpu_seconds(self, proc):
        with open(f"/proc/{proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def run(self):
        try:
            self.step("backend starts", self.start_backend)
            self.step("kube-apiserver starts on it", self.start_apiserver)
        except Exception:
            pass
        if all(r["ok"] for r in self.results):
            self.step("readyz and livez list etcd ok", self.s_ready)
            self.step("namespaces: create, label, delete through finalize", self.s_namespaces)
            self.step("configmaps and secrets: create, patch, replace, conflict, delete; watch sees all in order",
                      self.s_configmaps_secrets_watch)
            self.step("CRD and custom objects, with a watch", self.s_crd)
            self.step("server-side apply with a conflict", self.s_server_side_apply)
            self.step(f"{self.args.objects} objects, paginated lists", self.s_bulk_and_pages)
            self.step("an event expires through its lease", self.s_events_expire)
            self.step("the apiserver compacts the backend", self.s_compaction)
            self.step("lists go through RangeStream", self.s_metrics)
            self.step("kube-apiserver restart: watch cache relists", self.s_restart_apiserver)
            self.step("backend killed (-9) and restarted under the apiserver", self.s_restart_backend)
        self.stop(self.apiserver)
        self.stop(self.backend)
        passed = sum(1 for r in self.results if r["ok"])
        failed = len(self.results) - passed
        with open(self.args.out, "w") as f:
            json.dump({"name": self.args.name, "results": self.results, "observations": self.obs}, f, indent=1)
        print(f"{self.args.name}: {passed} passed, {failed} failed")
        return 0 if failed == 0 else 1


def bench(args):
    """The client-go load mix (bin/loaddriver) through one kube-apiserver per backend, all up at
    once; the driver interleaves the phases between them. Writes OUT/bench-NAME-ROUND.json."""
    names, launchers = args.name.split(","), args.launcher.split(",")
    if len(names) != len(launchers):
        raise SystemExit("--bench: give as many --launcher as --name (comma-separated)")
    stacks = []
    try:
        for name, launcher in zip(names, launchers):
            a = argparse.Namespace(**{**vars(args), "name": name, "launcher": launcher,
                                      "work": os.path.join(args.work, name)})
            while True:  # four ports per stack, none shared with another stack
                sc = Scenario(a)
                taken = {p for o in stacks for p in (o.cport, o.pport, o.mport, o.aport)}
                if not taken & {sc.cport, sc.pport, sc.mport, sc.aport}:
                    break
            stacks.append(sc)
        for sc in stacks:
            sc.start_backend()
            sc.start_apiserver()
        cpu0 = [sc.cpu_seconds(sc.backend) for sc in stacks]
        r = subprocess.run([f"{stacks[0].kbin}/loaddriver",
                            "--kubeconfig=" + ",".join(f"{sc.work}/kubeconfig" for sc in stacks),
                            "--names=" + ",".join(names),
                            "--backend-pids=" + ",".join(str(sc.backend.pid) for sc in stacks),
                            "--apiserver-pids=" + ",".join(str(sc.apiserver.pid) for sc in stacks),
                            f"--rounds={args.rounds}", f"--objects={args.objects}"],
                           capture_output=True, text=True, timeout=600 + 600 * args.rounds)
        cpu = [sc.cpu_seconds(sc.backend) - c for sc, c in zip(stacks, cpu0)]
        sys.stderr.write(r.stderr)
        runs = json.loads(r.stdout).get("runs", {}) if r.stdout.strip().startswith("{") else {}
        os.makedirs(args.out, exist_ok=True)
        for name, c in zip(names, cpu):
            got = {rr["round"]: rr for rr in runs.get(name, [])}
            for rnd in range(1, args.rounds + 1):
                rr = got.get(rnd, {"name": name, "round": rnd, "ok": False, "phases": []})
                rr["stderr"] = r.stderr[-2000:]
                with open(os.path.join(args.out, f"bench-{name}-{rnd}.json"), "w") as f:
                    json.dump(rr, f, indent=1)
            ok = len(got) == args.rounds and all(rr["ok"] for rr in got.values())
            print(f"{name}: {len(got)} of {args.rounds} rounds {'ok' if ok else 'FAILED'}; "
                  f"backend CPU {c:.1f} s in all (its phases, the others' and idle time)")
        return 0 if r.returncode == 0 else 1
    finally:
        for sc in stacks:
            sc.stop(sc.apiserver, signal.SIGKILL, 5)
            sc.stop(sc.backend, signal.SIGKILL, 5)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--launcher", required=True)
    ap.add_argument("--kube-bin", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--objects", type=int, default=None,
                    help="objects for the paginated lists (5000) or the load driver (10000)")
    ap.add_argument("--bench", action="store_true",
                    help="run the client-go load driver instead: --name and --launcher comma-separated "
                         "(one stack per backend, all up at once), --out a folder")
    ap.add_argument("--rounds", type=int, default=5, help="benchmark rounds (--bench)")
    args = ap.parse_args()
    if args.objects is None:
        args.objects = 10000 if args.bench else 5000
    if args.bench:
        return bench(args)
    sc = Scenario(args)
    try:
        return sc.run()
    finally:
        sc.stop(sc.apiserver, signal.SIGKILL, 5)
        sc.stop(sc.backend, signal.SIGKILL, 5)


if __name__ == "__main__":
    sys.exit(main())
