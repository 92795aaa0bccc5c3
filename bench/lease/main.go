// leasebench measures lease behaviour of an etcd v3 compatible server over the
// real gRPC path with etcd's own Go client (go.etcd.io/etcd/clientv3, etcd
// 3.4 from Debian's golang-etcd-server-dev), against one endpoint. Run it
// against etcd and Engram one after the other (run.sh) and compare ratios.
//
// Benchmarks (one JSON line on stdout each; exit status 0 when measured, even
// with errors, 2 on a setup failure):
//
//	keepalive  N leases (default 10k) are granted, then kept alive over S
//	           long-lived LeaseKeepAlive streams (raw etcdserverpb streams,
//	           as clientv3 KeepAlive uses them): a paced phase at a given
//	           keepalive rate (default N/(TTL/3) per second: every lease
//	           renewed once per third of its TTL, clientv3's schedule) and a
//	           closed-loop phase (each stream sends the next keepalive when the
//	           previous answer came back). Per phase: keepalive latency, rate,
//	           server CPU; server VmRSS/VmHWM before granting, after granting and
//	           after the keepalives; and a check that all N leases are alive.
//	expiry     L leases (default 1000) with TTL T (default 5 s) and one key
//	           each are granted together while puts run at a steady rate
//	           (10 clients, 1000 puts/s in all). Put latency in a steady window
//	           (after the grants, before the first lease runs out) against a
//	           burst window (from the first lease's nominal expiry until the
//	           last key was deleted, at least --min-window long); per key, how
//	           long after its lease's nominal expiry (grant ack + TTL) a watcher
//	           saw its delete; how long until all keys were gone; keys and
//	           leases left behind.
//	revoke     one lease with K keys attached (default 10k) is revoked by
//	           LeaseRevoke while puts run as above: revoke latency, put latency
//	           in a steady window (ending 100 ms before the revoke) against the
//	           window from the revoke request until its answer (at least
//	           --min-window long), keys left.
//
// A put counts in a window when its [send, ack] overlaps the window (a put
// stalled by the event counts even if it was sent just before). expiry and
// revoke sample CPU every 50 ms, so every window also reports the server's
// cores and the other tenants' cores (host busy minus server and this tool).
//
// Helpers: "leasebench freeports N" prints N free loopback ports; "leasebench
// ready --endpoint E" waits (30 s at most) until a linearizable Get succeeds;
// "leasebench summarize < lines.jsonl" prints a markdown table (median per
// server over the lines, ratio against the server named etcd). summarize also
// reads loadgen's "lease" lines (server = the tag's suffix after '@').
//
// Built in GOPATH mode, offline, like ../../../shared/tools/loadgen (run.sh):
//
//	GO111MODULE=off GOPATH=/tmp/lg-gopath:/usr/share/gocode /usr/lib/go/bin/go build
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/ioutil"
	"math"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.etcd.io/etcd/clientv3"
	pb "go.etcd.io/etcd/etcdserver/etcdserverpb"
	"go.etcd.io/etcd/mvcc/mvccpb"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

// ---------------------------------------------------------------- common

type common struct {
	endpoint  string
	server    string
	serverPID string
	rep       int
	binary    string
	binSHA    string
	timeout   time.Duration
}

func addCommon(fs *flag.FlagSet, c *common) {
	fs.StringVar(&c.endpoint, "endpoint", "127.0.0.1:2379", "client endpoint host:port")
	fs.StringVar(&c.server, "server", "unknown", "server name for the JSON line (etcd, engram, ...)")
	fs.StringVar(&c.serverPID, "server-pid", "", "server PID on this host (CPU and memory from /proc)")
	fs.IntVar(&c.rep, "rep", 0, "repetition number for the JSON line")
	fs.StringVar(&c.binary, "binary", "", "server binary, recorded only")
	fs.StringVar(&c.binSHA, "binary-sha256", "", "server binary sha256, recorded only")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Second, "per-request timeout")
}

type result map[string]interface{}

func newResult(bench string, c *common) result {
	return result{"tool": "leasebench", "bench": bench, "server": c.server, "rep": c.rep,
		"endpoint": c.endpoint, "binary": c.binary, "binary_sha256": c.binSHA,
		"time": time.Now().UTC().Format(time.RFC3339), "loadavg_start": loadavg()}
}

func emit(r result) {
	r["loadavg_end"] = loadavg()
	b, _ := json.Marshal(r)
	fmt.Println(string(b))
}

func setupFail(r result, err error) {
	r["fatal"] = err.Error()
	r["ok"] = false
	emit(r)
	fmt.Fprintf(os.Stderr, "leasebench %v %v: %v\n", r["bench"], r["server"], err)
	os.Exit(2)
}

func quietLog() *zap.Config {
	lc := zap.NewProductionConfig()
	lc.Level = zap.NewAtomicLevelAt(zap.ErrorLevel)
	lc.OutputPaths = []string{"stderr"}
	lc.ErrorOutputPaths = []string{"stderr"}
	return &lc
}

func newClient(ep string) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints:   []string{ep},
		DialTimeout: 3 * time.Second,
		DialOptions: []grpc.DialOption{grpc.WithBlock()},
		LogConfig:   quietLog(),
	})
}

// connect opens n connections, waiting up to 30 s for the server to answer a
// linearizable Get (it has a leader).
func connect(c *common, n int) ([]*clientv3.Client, error) {
	deadline := time.Now().Add(30 * time.Second)
	var cls []*clientv3.Client
	var last error
	for len(cls) < n && time.Now().Before(deadline) {
		cli, err := newClient(c.endpoint)
		if err != nil {
			last = err
			time.Sleep(100 * time.Millisecond)
			continue
		}
		cls = append(cls, cli)
	}
	for len(cls) == n && time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := cls[0].Get(ctx, "leasebench-ready")
		cancel()
		if err == nil {
			return cls, nil
		}
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	for _, cl := range cls {
		cl.Close()
	}
	if last == nil {
		last = errors.New("timed out")
	}
	return nil, fmt.Errorf("connect %s: %v", c.endpoint, last)
}

func closeAll(cls []*clientv3.Client) {
	for _, c := range cls {
		c.Close()
	}
}

func errKind(err error) string {
	if errors.Is(err, context.DeadlineExceeded) {
		return "context deadline exceeded"
	}
	s := err.Error()
	if len(s) > 120 {
		s = s[:120]
	}
	return s
}

// errCount counts errors by kind (thread-safe).
type errCount struct {
	mu sync.Mutex
	n  int64
	by map[string]int64
}

func (e *errCount) add(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.by == nil {
		e.by = map[string]int64{}
	}
	e.n++
	e.by[errKind(err)]++
}

func (e *errCount) put(r result, name string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	r[name] = e.n
	if e.n > 0 {
		r[name+"_kinds"] = e.by
	}
}

// parallel runs fn(i) for i in [0, n) on `workers` goroutines; worker w uses cls[w % len].
func parallel(n, workers int, cls []*clientv3.Client, fn func(cli *clientv3.Client, i int)) {
	var next int64 = -1
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(cli *clientv3.Client) {
			defer wg.Done()
			for {
				i := int(atomic.AddInt64(&next, 1))
				if i >= n {
					return
				}
				fn(cli, i)
			}
		}(cls[w%len(cls)])
	}
	wg.Wait()
}

func ms(d time.Duration) float64     { return math.Round(float64(d)/1e3) / 1e3 }
func msNs(ns int64) float64          { return math.Round(float64(ns)/1e3) / 1e3 }
func round(x float64, d int) float64 { p := math.Pow(10, float64(d)); return math.Round(x*p) / p }

// latStats: percentiles (ms) of latencies in ns.
func latStats(ns []int64) map[string]interface{} {
	m := map[string]interface{}{"n": len(ns)}
	if len(ns) == 0 {
		return m
	}
	s := append([]int64(nil), ns...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	pct := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(s)))) - 1
		if i < 0 {
			i = 0
		}
		if i >= len(s) {
			i = len(s) - 1
		}
		return msNs(s[i])
	}
	var sum float64
	for _, v := range s {
		sum += float64(v)
	}
	m["p50_ms"], m["p90_ms"], m["p99_ms"], m["p999_ms"] = pct(0.5), pct(0.9), pct(0.99), pct(0.999)
	m["max_ms"], m["min_ms"], m["mean_ms"] = msNs(s[len(s)-1]), msNs(s[0]), round(sum/float64(len(s))/1e6, 3)
	return m
}

// ---------------------------------------------------------------- /proc

const clkTck = 100.0

func loadavg() string {
	b, err := ioutil.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

func hostBusy() (busy, steal float64) {
	b, err := ioutil.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0])
	if len(f) < 9 {
		return 0, 0
	}
	v := make([]float64, len(f)-1)
	for i := range v {
		v[i], _ = strconv.ParseFloat(f[i+1], 64)
	}
	return (v[0] + v[1] + v[2] + v[5] + v[6]) / clkTck, v[7] / clkTck
}

func procCPU(pid string) float64 {
	if pid == "" {
		return 0
	}
	b, err := ioutil.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (u + st) / clkTck
}

func selfCPU() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

// procMem returns VmRSS and VmHWM in MiB.
func procMem(pid string) (rss, hwm float64) {
	if pid == "" {
		return 0, 0
	}
	b, err := ioutil.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return 0, 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "VmRSS:":
			rss = round(v/1024, 1)
		case "VmHWM:":
			hwm = round(v/1024, 1)
		}
	}
	return
}

type cpuSnap struct {
	wall                      time.Time
	busy, steal, self, server float64
}

func snap(pid string) cpuSnap {
	s := cpuSnap{wall: time.Now(), self: selfCPU(), server: procCPU(pid)}
	s.busy, s.steal = hostBusy()
	return s
}

// cpuDelta: server and load generator CPU over the interval, and the CPU used
// by everything else on the host (other tenants: noise).
func cpuDelta(a, b cpuSnap, ops int64) map[string]interface{} {
	w := b.wall.Sub(a.wall).Seconds()
	m := map[string]interface{}{}
	if w <= 0 {
		return m
	}
	srv, self := b.server-a.server, b.self-a.self
	other := (b.busy - a.busy) - srv - self
	m["server_s"] = round(srv, 2)
	m["server_cores"] = round(srv/w, 3)
	m["client_cores"] = round(self/w, 3)
	m["other_cores"] = round(other/w, 3)
	m["steal_cores"] = round((b.steal-a.steal)/w, 3)
	if ops > 0 {
		m["server_us_per_op"] = round(srv/float64(ops)*1e6, 1)
		m["client_us_per_op"] = round(self/float64(ops)*1e6, 1)
	}
	return m
}

// sampler snapshots CPU every 50 ms, so that any time window afterwards gets
// the server's CPU and the other tenants' CPU during it.
type sampler struct {
	base  time.Time
	pid   string
	mu    sync.Mutex
	snaps []cpuSnap
	stop  chan struct{}
}

func startSampler(pid string, base time.Time) *sampler {
	sm := &sampler{base: base, pid: pid, stop: make(chan struct{})}
	sm.snaps = append(sm.snaps, snap(pid))
	go func() {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-sm.stop:
				return
			case <-t.C:
				s := snap(pid)
				sm.mu.Lock()
				sm.snaps = append(sm.snaps, s)
				sm.mu.Unlock()
			}
		}
	}()
	return sm
}

func (sm *sampler) finish() {
	close(sm.stop)
	s := snap(sm.pid)
	sm.mu.Lock()
	sm.snaps = append(sm.snaps, s)
	sm.mu.Unlock()
}

// window: CPU between the last sample at or before a and the first at or
// after b (ns since base).
func (sm *sampler) window(a, b int64, ops int64) map[string]interface{} {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	if len(sm.snaps) == 0 {
		return nil
	}
	ia, ib := 0, len(sm.snaps)-1
	for i, s := range sm.snaps {
		t := int64(s.wall.Sub(sm.base))
		if t <= a {
			ia = i
		}
		if t >= b && ib == len(sm.snaps)-1 && i < ib {
			ib = i
		}
	}
	if ib <= ia {
		return nil
	}
	return cpuDelta(sm.snaps[ia], sm.snaps[ib], ops)
}

// ---------------------------------------------------------------- steady puts

type putRec struct {
	send, ack int64 // ns since base
	err       bool
}

type putLoad struct {
	base time.Time
	stop int32
	wg   sync.WaitGroup
	recs [][]putRec
	errs errCount
	cpu  *sampler // optional
}

// startPuts runs `clients` goroutines over cls; together they send `rate`
// puts per second (client i at times base' + (j*clients+i)/rate; a put that
// is late is sent at once, nothing is skipped) to keys prefix+[0, keySpace).
func startPuts(cls []*clientv3.Client, clients int, rate float64, prefix string, keySpace int, valSize int, timeout time.Duration, base time.Time) *putLoad {
	p := &putLoad{base: base, recs: make([][]putRec, clients)}
	val := strings.Repeat("v", valSize)
	start := time.Now()
	for i := 0; i < clients; i++ {
		p.wg.Add(1)
		go func(i int) {
			defer p.wg.Done()
			cli := cls[i%len(cls)]
			for j := 0; atomic.LoadInt32(&p.stop) == 0; j++ {
				at := start.Add(time.Duration(float64(j*clients+i) / rate * 1e9))
				if d := time.Until(at); d > 0 {
					time.Sleep(d)
				}
				k := fmt.Sprintf("%s%06d", prefix, (j*clients+i)%keySpace)
				t0 := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), timeout)
				_, err := cli.Put(ctx, k, val)
				cancel()
				t1 := time.Now()
				rec := putRec{send: int64(t0.Sub(base)), ack: int64(t1.Sub(base)), err: err != nil}
				if err != nil {
					p.errs.add(err)
				}
				p.recs[i] = append(p.recs[i], rec)
			}
		}(i)
	}
	return p
}

func (p *putLoad) finish() {
	atomic.StoreInt32(&p.stop, 1)
	p.wg.Wait()
	if p.cpu != nil {
		p.cpu.finish()
	}
}

// window: puts whose [send, ack] overlaps [a, b] (ns since base).
func (p *putLoad) window(a, b int64) map[string]interface{} {
	var lat []int64
	var nerr, sent int64
	for _, rs := range p.recs {
		for _, r := range rs {
			if r.send > b || r.ack < a {
				continue
			}
			if r.send >= a {
				sent++
			}
			if r.err {
				nerr++
				continue
			}
			lat = append(lat, r.ack-r.send)
		}
	}
	m := latStats(lat)
	m["errors"] = nerr
	m["from_s"], m["to_s"] = round(float64(a)/1e9, 3), round(float64(b)/1e9, 3)
	if p.cpu != nil {
		m["cpu"] = p.cpu.window(a, b, 0)
	}
	if b > a {
		m["sent_per_s"] = round(float64(sent)/(float64(b-a)/1e9), 1)
	}
	return m
}

// ---------------------------------------------------------------- delete watcher

type delWatch struct {
	mu     sync.Mutex
	times  map[string]int64 // key -> receive time, ns since base
	revs   map[int64]bool
	err    string
	cancel context.CancelFunc
}

func watchDeletes(cli *clientv3.Client, prefix string, rev int64, base time.Time) *delWatch {
	ctx, cancel := context.WithCancel(context.Background())
	w := &delWatch{times: map[string]int64{}, revs: map[int64]bool{}, cancel: cancel}
	wch := cli.Watch(clientv3.WithRequireLeader(ctx), prefix, clientv3.WithPrefix(), clientv3.WithRev(rev))
	go func() {
		for resp := range wch {
			now := int64(time.Since(base))
			w.mu.Lock()
			if err := resp.Err(); err != nil && w.err == "" && ctx.Err() == nil {
				w.err = err.Error()
			}
			for _, ev := range resp.Events {
				if ev.Type == mvccpb.DELETE {
					if _, ok := w.times[string(ev.Kv.Key)]; !ok {
						w.times[string(ev.Kv.Key)] = now
					}
					w.revs[ev.Kv.ModRevision] = true
				}
			}
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *delWatch) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.times)
}

func countPrefix(cli *clientv3.Client, prefix string, timeout time.Duration) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	r, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return -1, err
	}
	return r.Count, nil
}

func currentRev(cli *clientv3.Client, timeout time.Duration) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	r, err := cli.Get(ctx, "leasebench-rev")
	if err != nil {
		return 0, err
	}
	return r.Header.Revision, nil
}

func leaseCount(cli *clientv3.Client, timeout time.Duration) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	r, err := cli.Leases(ctx)
	if err != nil {
		return -1, err
	}
	return len(r.Leases), nil
}

func memInto(r result, pid, name string) {
	rss, hwm := procMem(pid)
	r[name+"_vmrss_mb"], r[name+"_vmhwm_mb"] = rss, hwm
}

// ---------------------------------------------------------------- keepalive

type kaReq struct {
	id   int64
	send time.Time
}

func runKeepalive(args []string) {
	var c common
	fs := flag.NewFlagSet("keepalive", flag.ExitOnError)
	addCommon(fs, &c)
	n := fs.Int("leases", 10000, "leases to grant and keep alive")
	ttl := fs.Int64("ttl", 30, "lease TTL, seconds")
	conns := fs.Int("conns", 10, "gRPC connections")
	streams := fs.Int("streams", 100, "LeaseKeepAlive streams (stream s on connection s % conns; lease i on stream i % streams)")
	grantWorkers := fs.Int("grant-clients", 100, "concurrent LeaseGrant callers")
	rate := fs.Float64("rate", 0, "paced phase: keepalives per second in all (default leases / (ttl/3), clientv3's renew schedule)")
	pacedDur := fs.Duration("paced", 10*time.Second, "paced phase duration")
	maxDur := fs.Duration("max", 8*time.Second, "closed-loop phase duration")
	fs.Parse(args)
	r := newResult("keepalive", &c)
	if *rate <= 0 {
		*rate = float64(*n) / (float64(*ttl) / 3)
	}
	r["params"] = map[string]interface{}{"leases": *n, "ttl": *ttl, "conns": *conns, "streams": *streams,
		"grant_clients": *grantWorkers, "rate": *rate, "paced_s": pacedDur.Seconds(), "max_s": maxDur.Seconds()}
	cls, err := connect(&c, *conns)
	if err != nil {
		setupFail(r, err)
	}
	defer closeAll(cls)
	time.Sleep(200 * time.Millisecond)
	memInto(r, c.serverPID, "before_grant")

	// Grant.
	ids := make([]int64, *n)
	glat := make([]int64, *n)
	var gerr errCount
	cs := snap(c.serverPID)
	t0 := time.Now()
	parallel(*n, *grantWorkers, cls, func(cli *clientv3.Client, i int) {
		ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
		defer cancel()
		s := time.Now()
		g, err := cli.Grant(ctx, *ttl)
		if err != nil {
			gerr.add(err)
			return
		}
		glat[i] = int64(time.Since(s))
		ids[i] = int64(g.ID)
	})
	gd := time.Since(t0)
	var okLat []int64
	for i := range ids {
		if ids[i] != 0 {
			okLat = append(okLat, glat[i])
		}
	}
	g := latStats(okLat)
	g["seconds"], g["per_s"] = round(gd.Seconds(), 3), round(float64(len(okLat))/gd.Seconds(), 1)
	g["cpu"] = cpuDelta(cs, snap(c.serverPID), int64(len(okLat)))
	gerr.put(g, "errors")
	r["grant"] = g
	time.Sleep(300 * time.Millisecond)
	memInto(r, c.serverPID, "after_grant")

	// Streams.
	type stream struct {
		s      pb.Lease_LeaseKeepAliveClient
		cancel context.CancelFunc
		ids    []int64
	}
	sts := make([]*stream, *streams)
	for s := range sts {
		ctx, cancel := context.WithCancel(context.Background())
		ks, err := pb.NewLeaseClient(cls[s%len(cls)].ActiveConnection()).LeaseKeepAlive(ctx)
		if err != nil {
			cancel()
			setupFail(r, fmt.Errorf("open keepalive stream: %v", err))
		}
		sts[s] = &stream{s: ks, cancel: cancel}
	}
	for i, id := range ids {
		if id != 0 {
			sts[i%len(sts)].ids = append(sts[i%len(sts)].ids, id)
		}
	}
	defer func() {
		for _, st := range sts {
			st.s.CloseSend()
			st.cancel()
		}
	}()
	var broken int32 // a stream failed: later phases skip it

	phase := func(name string, paced bool, dur time.Duration) {
		var mu sync.Mutex
		var lat []int64
		var kerr errCount
		var lost, mismatch int64
		var sent int64
		var wg sync.WaitGroup
		cs := snap(c.serverPID)
		start := time.Now()
		end := start.Add(dur)
		for si, st := range sts {
			if len(st.ids) == 0 {
				continue
			}
			wg.Add(1)
			go func(si int, st *stream) {
				defer wg.Done()
				var my []int64
				defer func() { mu.Lock(); lat = append(lat, my...); mu.Unlock() }()
				if !paced {
					for j := 0; time.Now().Before(end); j++ {
						id := st.ids[j%len(st.ids)]
						s := time.Now()
						if err := st.s.Send(&pb.LeaseKeepAliveRequest{ID: id}); err != nil {
							kerr.add(err)
							atomic.StoreInt32(&broken, 1)
							return
						}
						atomic.AddInt64(&sent, 1)
						resp, err := st.s.Recv()
						if err != nil {
							kerr.add(err)
							atomic.StoreInt32(&broken, 1)
							return
						}
						my = append(my, int64(time.Since(s)))
						if resp.ID != id {
							atomic.AddInt64(&mismatch, 1)
						} else if resp.TTL <= 0 {
							atomic.AddInt64(&lost, 1)
						}
					}
					return
				}
				// Paced: a sender on schedule, a receiver matching answers in order.
				q := make(chan kaReq, 1<<16)
				go func() {
					defer close(q)
					S := len(sts)
					for j := 0; ; j++ {
						at := start.Add(time.Duration(float64(j*S+si) / *rate * 1e9))
						if !at.Before(end) {
							return
						}
						if d := time.Until(at); d > 0 {
							time.Sleep(d)
						}
						id := st.ids[j%len(st.ids)]
						q <- kaReq{id: id, send: time.Now()}
						if err := st.s.Send(&pb.LeaseKeepAliveRequest{ID: id}); err != nil {
							kerr.add(err)
							atomic.StoreInt32(&broken, 1)
							return
						}
						atomic.AddInt64(&sent, 1)
					}
				}()
				for rq := range q {
					resp, err := st.s.Recv()
					if err != nil {
						kerr.add(err)
						atomic.StoreInt32(&broken, 1)
						for range q {
						}
						return
					}
					my = append(my, int64(time.Since(rq.send)))
					if resp.ID != rq.id {
						atomic.AddInt64(&mismatch, 1)
					} else if resp.TTL <= 0 {
						atomic.AddInt64(&lost, 1)
					}
				}
			}(si, st)
		}
		wg.Wait()
		el := time.Since(start)
		m := latStats(lat)
		m["sent"], m["seconds"] = sent, round(el.Seconds(), 3)
		m["per_s"] = round(float64(len(lat))/el.Seconds(), 1)
		m["ttl_le_0"], m["id_mismatch"] = lost, mismatch
		m["cpu"] = cpuDelta(cs, snap(c.serverPID), int64(len(lat)))
		kerr.put(m, "errors")
		r[name] = m
	}
	phase("paced", true, *pacedDur)
	memInto(r, c.serverPID, "after_paced")
	if atomic.LoadInt32(&broken) == 0 {
		phase("max", false, *maxDur)
	}
	memInto(r, c.serverPID, "after_keepalive")
	// Every granted lease must still be alive.
	if nl, err := leaseCount(cls[0], c.timeout); err != nil {
		r["leases_alive_error"] = err.Error()
	} else {
		r["leases_alive"] = nl
	}
	r["leases_granted"] = len(okLat)
	ok := r["leases_alive"] == len(okLat) && atomic.LoadInt32(&broken) == 0
	for _, ph := range []string{"paced", "max"} {
		if m, _ := r[ph].(map[string]interface{}); m != nil {
			if m["errors"].(int64) != 0 || m["ttl_le_0"].(int64) != 0 || m["id_mismatch"].(int64) != 0 {
				ok = false
			}
		}
	}
	if g["errors"].(int64) != 0 {
		ok = false
	}
	r["ok"] = ok
	emit(r)
}

// ---------------------------------------------------------------- expiry burst

func runExpiry(args []string) {
	var c common
	fs := flag.NewFlagSet("expiry", flag.ExitOnError)
	addCommon(fs, &c)
	n := fs.Int("leases", 1000, "leases, one key each")
	ttl := fs.Int64("ttl", 5, "lease TTL, seconds")
	putClients := fs.Int("put-clients", 10, "put goroutines")
	putConns := fs.Int("put-conns", 2, "connections for the puts")
	putRate := fs.Float64("put-rate", 1000, "puts per second in all")
	warmup := fs.Duration("warmup", time.Second, "puts before the grants")
	minWin := fs.Duration("min-window", 2*time.Second, "the burst window is at least this long")
	wait := fs.Duration("wait", 30*time.Second, "give up waiting for the deletes this long after the last nominal expiry")
	grantWorkers := fs.Int("grant-clients", 100, "concurrent grant / attach callers")
	fs.Parse(args)
	r := newResult("expiry", &c)
	r["params"] = map[string]interface{}{"leases": *n, "ttl": *ttl, "put_clients": *putClients, "put_conns": *putConns,
		"put_rate": *putRate, "warmup_s": warmup.Seconds(), "min_window_s": minWin.Seconds(), "val_size": 256}
	cls, err := connect(&c, *putConns+4+2)
	if err != nil {
		setupFail(r, err)
	}
	defer closeAll(cls)
	putCls, grantCls, watchCli, pollCli := cls[:*putConns], cls[*putConns:*putConns+4], cls[*putConns+4], cls[*putConns+5]
	rev, err := currentRev(pollCli, c.timeout)
	if err != nil {
		setupFail(r, err)
	}
	base := time.Now()
	dw := watchDeletes(watchCli, "e/", rev+1, base)
	defer dw.cancel()
	memInto(r, c.serverPID, "before")
	sm := startSampler(c.serverPID, base)
	puts := startPuts(putCls, *putClients, *putRate, "p/", 1000, 256, c.timeout, base)
	puts.cpu = sm
	time.Sleep(*warmup)

	// Grant all, then attach one key to each.
	ids := make([]int64, *n)
	gack := make([]int64, *n) // grant ack, ns since base
	var gerr, aerr errCount
	gStart := int64(time.Since(base))
	parallel(*n, *grantWorkers, grantCls, func(cli *clientv3.Client, i int) {
		ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
		defer cancel()
		g, err := cli.Grant(ctx, *ttl)
		if err != nil {
			gerr.add(err)
			return
		}
		gack[i] = int64(time.Since(base))
		ids[i] = int64(g.ID)
		if g.TTL != *ttl {
			gerr.add(fmt.Errorf("granted TTL %d, asked %d", g.TTL, *ttl))
		}
	})
	gEnd := int64(time.Since(base))
	attached := make([]bool, *n)
	parallel(*n, *grantWorkers, grantCls, func(cli *clientv3.Client, i int) {
		if ids[i] == 0 {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
		defer cancel()
		if _, err := cli.Put(ctx, fmt.Sprintf("e/%05d", i), "x", clientv3.WithLease(clientv3.LeaseID(ids[i]))); err != nil {
			aerr.add(err)
			return
		}
		attached[i] = true
	})
	aEnd := int64(time.Since(base))
	nAttached := 0
	var firstExp, lastExp int64 = math.MaxInt64, 0
	for i := range ids {
		if !attached[i] {
			continue
		}
		nAttached++
		e := gack[i] + int64(time.Duration(*ttl)*time.Second)
		if e < firstExp {
			firstExp = e
		}
		if e > lastExp {
			lastExp = e
		}
	}
	r["grant"] = map[string]interface{}{"granted": *n - int(gerr.n), "attached": nAttached,
		"grant_s": round(float64(gEnd-gStart)/1e9, 3), "attach_s": round(float64(aEnd-gEnd)/1e9, 3),
		"expiry_spread_s": round(float64(lastExp-firstExp)/1e9, 3)}
	gerr.put(r["grant"].(map[string]interface{}), "grant_errors")
	aerr.put(r["grant"].(map[string]interface{}), "attach_errors")
	if nAttached == 0 {
		puts.finish()
		setupFail(r, errors.New("no lease with a key"))
	}
	steadyFrom, steadyTo := aEnd+int64(500*time.Millisecond), firstExp-int64(200*time.Millisecond)

	// Wait for the deletes (watch), polling the count as well.
	var pollZero int64 = -1
	deadline := lastExp + int64(*wait)
	for {
		now := int64(time.Since(base))
		if now > firstExp-int64(500*time.Millisecond) && pollZero < 0 {
			if cnt, err := countPrefix(pollCli, "e/", c.timeout); err == nil && cnt == 0 {
				pollZero = int64(time.Since(base))
			}
		}
		if dw.count() >= nAttached && pollZero >= 0 {
			break
		}
		if now > deadline {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	lastDel, firstDel := int64(0), int64(math.MaxInt64)
	var delays []int64
	dw.mu.Lock()
	deleted := len(dw.times)
	for i := range ids {
		if !attached[i] {
			continue
		}
		t, ok := dw.times[fmt.Sprintf("e/%05d", i)]
		if !ok {
			continue
		}
		if t > lastDel {
			lastDel = t
		}
		if t < firstDel {
			firstDel = t
		}
		delays = append(delays, t-(gack[i]+int64(time.Duration(*ttl)*time.Second)))
	}
	delRevs := len(dw.revs)
	watchErr := dw.err
	dw.mu.Unlock()
	burstFrom := firstExp
	burstTo := lastDel
	if deleted < nAttached {
		burstTo = int64(time.Since(base))
	}
	if burstTo < burstFrom+int64(*minWin) {
		burstTo = burstFrom + int64(*minWin)
	}
	for int64(time.Since(base)) < burstTo+int64(500*time.Millisecond) {
		time.Sleep(20 * time.Millisecond)
	}
	puts.finish()
	memInto(r, c.serverPID, "after")

	r["put_steady"] = puts.window(steadyFrom, steadyTo)
	r["put_burst"] = puts.window(burstFrom, burstTo)
	puts.errs.put(r, "put_errors")
	st, bu := r["put_steady"].(map[string]interface{}), r["put_burst"].(map[string]interface{})
	if sp, ok := st["p99_ms"].(float64); ok && sp > 0 {
		if bp, ok := bu["p99_ms"].(float64); ok {
			r["burst_over_steady_p99"] = round(bp/sp, 2)
		}
	}
	ex := map[string]interface{}{"keys": nAttached, "deleted_seen_by_watch": deleted, "delete_revisions": delRevs,
		"cpu_during": sm.window(burstFrom, burstTo, int64(nAttached))}
	if watchErr != "" {
		ex["watch_error"] = watchErr
	}
	if len(delays) > 0 {
		d := latStats(delays)
		ex["delay_after_nominal_expiry"] = d
		ex["first_delete_after_first_expiry_s"] = round(float64(firstDel-firstExp)/1e9, 3)
		ex["all_gone_after_first_expiry_s"] = round(float64(lastDel-firstExp)/1e9, 3)
		ex["all_gone_after_last_expiry_s"] = round(float64(lastDel-lastExp)/1e9, 3)
		ex["delete_span_s"] = round(float64(lastDel-firstDel)/1e9, 3)
		if lastDel > firstDel {
			ex["deletes_per_s"] = round(float64(len(delays))/(float64(lastDel-firstDel)/1e9), 1)
		}
	}
	if pollZero >= 0 {
		ex["poll_zero_after_first_expiry_s"] = round(float64(pollZero-firstExp)/1e9, 3)
		ex["poll_zero_after_last_expiry_s"] = round(float64(pollZero-lastExp)/1e9, 3)
	}
	left, err := countPrefix(pollCli, "e/", c.timeout)
	ex["keys_left"] = left
	if err != nil {
		ex["keys_left_error"] = err.Error()
	}
	nl, err := leaseCount(pollCli, c.timeout)
	ex["leases_left"] = nl
	if err != nil {
		ex["leases_left_error"] = err.Error()
	}
	r["expiry"] = ex
	r["windows"] = map[string]interface{}{"steady_s": round(float64(steadyTo-steadyFrom)/1e9, 3),
		"burst_s": round(float64(burstTo-burstFrom)/1e9, 3)}
	r["ok"] = left == 0 && nl == 0 && deleted == nAttached && puts.errs.n == 0 && gerr.n == 0 && aerr.n == 0 && steadyTo > steadyFrom
	emit(r)
}

// ---------------------------------------------------------------- big revoke

func runRevoke(args []string) {
	var c common
	fs := flag.NewFlagSet("revoke", flag.ExitOnError)
	addCommon(fs, &c)
	keys := fs.Int("keys", 10000, "keys attached to the lease")
	putClients := fs.Int("put-clients", 10, "put goroutines")
	putConns := fs.Int("put-conns", 2, "connections for the puts")
	putRate := fs.Float64("put-rate", 1000, "puts per second in all")
	warmup := fs.Duration("warmup", time.Second, "puts before the steady window")
	steady := fs.Duration("steady", 4*time.Second, "steady window")
	minWin := fs.Duration("min-window", 2*time.Second, "the revoke window is at least this long")
	fs.Parse(args)
	r := newResult("revoke", &c)
	r["params"] = map[string]interface{}{"keys": *keys, "put_clients": *putClients, "put_conns": *putConns,
		"put_rate": *putRate, "warmup_s": warmup.Seconds(), "steady_s": steady.Seconds(), "min_window_s": minWin.Seconds(), "val_size": 256}
	cls, err := connect(&c, *putConns+4+2)
	if err != nil {
		setupFail(r, err)
	}
	defer closeAll(cls)
	putCls, loadCls, watchCli, ctlCli := cls[:*putConns], cls[*putConns:*putConns+4], cls[*putConns+4], cls[*putConns+5]
	memInto(r, c.serverPID, "before")
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	g, err := ctlCli.Grant(ctx, 3600)
	cancel()
	if err != nil {
		setupFail(r, fmt.Errorf("grant: %v", err))
	}
	var aerr errCount
	t0 := time.Now()
	val := strings.Repeat("v", 64)
	parallel(*keys, 100, loadCls, func(cli *clientv3.Client, i int) {
		ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
		defer cancel()
		if _, err := cli.Put(ctx, fmt.Sprintf("r/%06d", i), val, clientv3.WithLease(g.ID)); err != nil {
			aerr.add(err)
		}
	})
	r["attach_s"] = round(time.Since(t0).Seconds(), 3)
	aerr.put(r, "attach_errors")
	attached, _ := countPrefix(ctlCli, "r/", c.timeout)
	r["keys_attached"] = attached
	rev, err := currentRev(ctlCli, c.timeout)
	if err != nil {
		setupFail(r, err)
	}
	memInto(r, c.serverPID, "after_attach")
	base := time.Now()
	dw := watchDeletes(watchCli, "r/", rev+1, base)
	defer dw.cancel()
	sm := startSampler(c.serverPID, base)
	puts := startPuts(putCls, *putClients, *putRate, "p/", 1000, 256, c.timeout, base)
	puts.cpu = sm
	time.Sleep(*warmup + *steady)
	steadyTo := int64(time.Since(base))
	steadyFrom := steadyTo - int64(*steady)
	time.Sleep(100 * time.Millisecond) // no put of the steady window is still running at the revoke

	cs := snap(c.serverPID)
	rs := int64(time.Since(base))
	ctx, cancel = context.WithTimeout(context.Background(), 60*time.Second)
	_, rerr := ctlCli.Revoke(ctx, g.ID)
	cancel()
	ra := int64(time.Since(base))
	ce := snap(c.serverPID)
	leftAtAck, _ := countPrefix(ctlCli, "r/", c.timeout)
	// Wait for the watcher to see every delete (up to 10 s).
	for int64(time.Since(base)) < ra+int64(10*time.Second) && int64(dw.count()) < attached {
		time.Sleep(10 * time.Millisecond)
	}
	var lastDel int64
	dw.mu.Lock()
	seen := len(dw.times)
	for _, t := range dw.times {
		if t > lastDel {
			lastDel = t
		}
	}
	delRevs := len(dw.revs)
	dw.mu.Unlock()
	burstTo := ra
	if burstTo < rs+int64(*minWin) {
		burstTo = rs + int64(*minWin)
	}
	for int64(time.Since(base)) < burstTo+int64(500*time.Millisecond) {
		time.Sleep(20 * time.Millisecond)
	}
	puts.finish()
	memInto(r, c.serverPID, "after")

	rv := map[string]interface{}{"latency_ms": msNs(ra - rs), "keys_left_at_ack": leftAtAck,
		"deleted_seen_by_watch": seen, "delete_revisions": delRevs, "cpu": cpuDelta(cs, ce, 0)}
	if rerr != nil {
		rv["error"] = rerr.Error()
	}
	if seen > 0 {
		rv["watch_last_delete_after_request_ms"] = msNs(lastDel - rs)
	}
	ctx, cancel = context.WithTimeout(context.Background(), c.timeout)
	if ttl, err := ctlCli.TimeToLive(ctx, g.ID); err == nil {
		rv["ttl_after"] = ttl.TTL
	} else {
		rv["ttl_after_error"] = err.Error()
	}
	cancel()
	left, err := countPrefix(ctlCli, "r/", c.timeout)
	rv["keys_left"] = left
	if err != nil {
		rv["keys_left_error"] = err.Error()
	}
	r["revoke"] = rv
	r["put_steady"] = puts.window(steadyFrom, steadyTo)
	r["put_revoke"] = puts.window(rs, burstTo)
	r["put_during_rpc"] = puts.window(rs, ra)
	puts.errs.put(r, "put_errors")
	st, bu := r["put_steady"].(map[string]interface{}), r["put_revoke"].(map[string]interface{})
	if sp, ok := st["p99_ms"].(float64); ok && sp > 0 {
		if bp, ok := bu["p99_ms"].(float64); ok {
			r["revoke_over_steady_p99"] = round(bp/sp, 2)
		}
	}
	r["ok"] = rerr == nil && left == 0 && attached == int64(*keys) && puts.errs.n == 0 && aerr.n == 0
	emit(r)
}

// ---------------------------------------------------------------- helpers

func freeports() {
	n := 1
	if len(os.Args) > 2 {
		n, _ = strconv.Atoi(os.Args[2])
	}
	var ls []net.Listener
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Fprintln(os.Stderr, "leasebench freeports:", err)
			os.Exit(2)
		}
		ls = append(ls, l)
		fmt.Println(l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
}

func getPath(m map[string]interface{}, path string) (float64, bool) {
	var cur interface{} = m
	for _, p := range strings.Split(path, ".") {
		mm, ok := cur.(map[string]interface{})
		if !ok {
			return 0, false
		}
		cur, ok = mm[p]
		if !ok {
			return 0, false
		}
	}
	switch v := cur.(type) {
	case float64:
		return v, true
	case bool:
		if v {
			return 1, true
		}
		return 0, true
	}
	return 0, false
}

type row struct {
	bench, label, path, better string
}

var rows = []row{
	{"lg_lease", "(1) grant+put+keepalive, 10 conns / 100 clients, 10k: ops/s", "ops_per_sec", "higher"},
	{"lg_lease", "(1) … op p50 ms", "p50_ms", "lower"},
	{"lg_lease", "(1) … op p99 ms", "p99_ms", "lower"},
	{"lg_lease", "(1) … grant p50 ms", "extra.grant_latency.p50_ms", "lower"},
	{"lg_lease", "(1) … keepalive p50 ms", "extra.keepalive_latency.p50_ms", "lower"},
	{"lg_lease", "(1) … server CPU µs/op", "cpu.server_us_per_op", "lower"},
	{"keepalive", "(2) grant 10k leases (100 clients): grants/s", "grant.per_s", "higher"},
	{"keepalive", "(2) … grant p99 ms", "grant.p99_ms", "lower"},
	{"keepalive", "(2) paced keepalives (100 streams): keepalives/s", "paced.per_s", "="},
	{"keepalive", "(2) … paced keepalive p50 ms", "paced.p50_ms", "lower"},
	{"keepalive", "(2) … paced keepalive p99 ms", "paced.p99_ms", "lower"},
	{"keepalive", "(2) … paced server CPU, cores", "paced.cpu.server_cores", "lower"},
	{"keepalive", "(2) … paced server CPU µs/keepalive", "paced.cpu.server_us_per_op", "lower"},
	{"keepalive", "(2) closed-loop keepalives (100 streams): keepalives/s", "max.per_s", "higher"},
	{"keepalive", "(2) … closed-loop keepalive p50 ms", "max.p50_ms", "lower"},
	{"keepalive", "(2) … closed-loop keepalive p99 ms", "max.p99_ms", "lower"},
	{"keepalive", "(2) … closed-loop server CPU µs/keepalive", "max.cpu.server_us_per_op", "lower"},
	{"keepalive", "(2) VmRSS before granting, MiB", "before_grant_vmrss_mb", "lower"},
	{"keepalive", "(2) VmRSS with 10k leases after keepalives, MiB", "after_keepalive_vmrss_mb", "lower"},
	{"keepalive", "(2) VmHWM at the end, MiB", "after_keepalive_vmhwm_mb", "lower"},
	{"keepalive", "(2) leases alive at the end (of 10k)", "leases_alive", "="},
	{"expiry", "(3) 1000-lease expiry: put p99 steady, ms", "put_steady.p99_ms", "lower"},
	{"expiry", "(3) … put p99 during the burst, ms", "put_burst.p99_ms", "lower"},
	{"expiry", "(3) … burst p99 / steady p99 (goal ≤ 2)", "burst_over_steady_p99", "lower"},
	{"expiry", "(3) … put max during the burst, ms", "put_burst.max_ms", "lower"},
	{"expiry", "(3) … burst window, s", "windows.burst_s", "lower"},
	{"expiry", "(3) … first key deleted, s after first nominal expiry", "expiry.first_delete_after_first_expiry_s", "lower"},
	{"expiry", "(3) … all keys gone, s after the last nominal expiry", "expiry.all_gone_after_last_expiry_s", "lower"},
	{"expiry", "(3) … delete span first→last, s", "expiry.delete_span_s", "lower"},
	{"expiry", "(3) … key deleted after its lease's nominal expiry, p50 ms", "expiry.delay_after_nominal_expiry.p50_ms", "lower"},
	{"expiry", "(3) … keys left at the end", "expiry.keys_left", "="},
	{"expiry", "(3) … leases left at the end", "expiry.leases_left", "="},
	{"expiry", "(3) … server CPU steady, cores", "put_steady.cpu.server_cores", "lower"},
	{"expiry", "(3) … server CPU during the burst, cores", "put_burst.cpu.server_cores", "lower"},
	{"revoke", "(4) revoke 1 lease with 10k keys: revoke latency ms", "revoke.latency_ms", "lower"},
	{"revoke", "(4) … put p99 steady, ms", "put_steady.p99_ms", "lower"},
	{"revoke", "(4) … put p99 in the revoke window (≥2 s), ms", "put_revoke.p99_ms", "lower"},
	{"revoke", "(4) … revoke-window p99 / steady p99", "revoke_over_steady_p99", "lower"},
	{"revoke", "(4) … put max in the revoke window, ms", "put_revoke.max_ms", "lower"},
	{"revoke", "(4) … put p99 of puts overlapping the revoke RPC, ms", "put_during_rpc.p99_ms", "lower"},
	{"revoke", "(4) … keys left after the ack", "revoke.keys_left_at_ack", "="},
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func fmtNum(x float64) string {
	a := math.Abs(x)
	switch {
	case x == math.Trunc(x) && a < 1e7:
		return strconv.FormatFloat(x, 'f', 0, 64)
	case a >= 100:
		return strconv.FormatFloat(x, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(x, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(x, 'f', 2, 64)
	default:
		return strconv.FormatFloat(x, 'f', 3, 64)
	}
}

func summarize() {
	dec := json.NewDecoder(os.Stdin)
	var servers []string
	vals := map[string]map[string][]float64{} // bench|path -> server -> values
	notes := map[string][]string{}            // server -> notes
	other := map[string]map[string]float64{}  // bench -> server -> max other_cores seen
	var benches []string
	add := func(bench, server string, m map[string]interface{}) {
		found := false
		for _, s := range servers {
			if s == server {
				found = true
			}
		}
		if !found {
			servers = append(servers, server)
		}
		for _, rw := range rows {
			if rw.bench != bench {
				continue
			}
			if v, ok := getPath(m, rw.path); ok {
				k := rw.bench + "|" + rw.path
				if vals[k] == nil {
					vals[k] = map[string][]float64{}
				}
				vals[k][server] = append(vals[k][server], v)
			}
		}
		if ok, _ := m["ok"].(bool); !ok {
			notes[server] = append(notes[server], fmt.Sprintf("%s rep %v not ok", bench, m["rep"]))
		}
		var walk func(x interface{})
		walk = func(x interface{}) {
			if mm, ok := x.(map[string]interface{}); ok {
				for k, v := range mm {
					if k == "other_cores" {
						if other[bench] == nil {
							other[bench] = map[string]float64{}
							benches = append(benches, bench)
						}
						if f, ok := v.(float64); ok {
							if cur, seen := other[bench][server]; !seen || f > cur {
								other[bench][server] = f
							}
						}
					}
					walk(v)
				}
			}
		}
		walk(m)
	}
	for {
		var m map[string]interface{}
		if err := dec.Decode(&m); err != nil {
			if err != io.EOF {
				fmt.Fprintln(os.Stderr, "leasebench summarize:", err)
			}
			break
		}
		if t, _ := m["tool"].(string); t == "leasebench" {
			if _, bad := m["fatal"]; bad {
				s, _ := m["server"].(string)
				notes[s] = append(notes[s], fmt.Sprintf("%v failed: %v", m["bench"], m["fatal"]))
				continue
			}
			b, _ := m["bench"].(string)
			s, _ := m["server"].(string)
			add(b, s, m)
		} else if w, _ := m["workload"].(string); w == "lease" {
			tag, _ := m["tag"].(string)
			s := tag
			if i := strings.LastIndexByte(tag, '@'); i >= 0 {
				s = tag[i+1:]
			}
			add("lg_lease", s, m)
		}
	}
	// etcd first
	sort.SliceStable(servers, func(i, j int) bool { return servers[i] == "etcd" && servers[j] != "etcd" })
	hdr := "| benchmark / metric |"
	sep := "|---|"
	for _, s := range servers {
		hdr += " " + s + " |"
		sep += "---|"
	}
	baseline := ""
	if len(servers) > 1 && servers[0] == "etcd" {
		baseline = "etcd"
		for _, s := range servers[1:] {
			hdr += " " + s + "/etcd |"
			sep += "---|"
		}
		hdr += " better |"
		sep += "---|"
	}
	fmt.Println(hdr)
	fmt.Println(sep)
	for _, rw := range rows {
		k := rw.bench + "|" + rw.path
		if vals[k] == nil {
			continue
		}
		line := "| " + rw.label + " |"
		med := map[string]float64{}
		for _, s := range servers {
			v := vals[k][s]
			if len(v) == 0 {
				line += " – |"
				continue
			}
			med[s] = median(v)
			cell := fmtNum(med[s])
			if len(v) > 1 {
				sv := append([]float64(nil), v...)
				sort.Float64s(sv)
				cell += fmt.Sprintf(" (%s–%s)", fmtNum(sv[0]), fmtNum(sv[len(sv)-1]))
			}
			line += " " + cell + " |"
		}
		if baseline != "" {
			for _, s := range servers[1:] {
				b, okb := med[baseline]
				x, okx := med[s]
				if okb && okx && b != 0 {
					line += " " + fmt.Sprintf("%.2f×", x/b) + " |"
				} else {
					line += " – |"
				}
			}
			line += " " + rw.better + " |"
		}
		fmt.Println(line)
	}
	fmt.Println()
	fmt.Print("Other tenants' CPU (host busy minus server and load generator; max over the phases, cores):")
	for i, b := range benches {
		if i > 0 {
			fmt.Print(";")
		}
		fmt.Printf(" %s", b)
		for _, s := range servers {
			if v, ok := other[b][s]; ok {
				fmt.Printf(" %s %.2f", s, v)
			}
		}
	}
	fmt.Println()
	for _, s := range servers {
		if len(notes[s]) > 0 {
			fmt.Printf("- %s NOT OK: %s\n", s, strings.Join(notes[s], "; "))
		}
	}
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: leasebench keepalive|expiry|revoke|ready|summarize|freeports [flags]")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "keepalive":
		runKeepalive(os.Args[2:])
	case "expiry":
		runExpiry(os.Args[2:])
	case "revoke":
		runRevoke(os.Args[2:])
	case "ready":
		var c common
		fs := flag.NewFlagSet("ready", flag.ExitOnError)
		addCommon(fs, &c)
		fs.Parse(os.Args[2:])
		cls, err := connect(&c, 1)
		if err != nil {
			fmt.Fprintln(os.Stderr, "leasebench ready:", err)
			os.Exit(2)
		}
		closeAll(cls)
	case "summarize":
		summarize()
	case "freeports":
		freeports()
	default:
		fmt.Fprintln(os.Stderr, "usage: leasebench keepalive|expiry|revoke|ready|summarize|freeports [flags]")
		os.Exit(2)
	}
}
