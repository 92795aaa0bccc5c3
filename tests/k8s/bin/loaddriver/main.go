// loaddriver runs one fixed request mix through one or more kube-apiservers (one per backend,
// all running at once) with client-go and reports, per backend, round and phase, the client's
// throughput and latency, the apiserver's own request latency (apiserver_request_duration_seconds,
// p50/p99 from its histogram buckets over the phase) and the backend's CPU during the phase.
// `tests/k8s/run.sh bench` runs it against kube-apiserver on etcd 3.7 and on Engram in one run.
//
// After an unmeasured warm-up on each backend (1,000 creates, updates and gets in namespace
// "warm"), every round r runs these phases (namespaces load-r and load1k-r):
//
//	create   N configmaps, W workers
//	update   every configmap once (Update with the last resourceVersion), W workers
//	get      N gets, W workers
//	list1k   lists of a 1,000-object namespace, W workers, `lists` times
//	list10k  lists of the 10,000-object namespace (N objects), `lists`/5 times
//
// Phases interleave: each phase runs on every backend, one after the other, before the next
// phase starts (the order of the backends alternates from round to round), so the two
// measurements of a phase are seconds apart and the machine's drift over minutes cancels.
// The other stacks stay up, idle, meanwhile. `watchers` watches on the round's namespace stay
// open on each backend and count what they receive; after a write phase the driver waits
// (unmeasured) until every watcher has caught up, so no stack's leftover work runs into the
// next measured phase. Every watcher must see every create and update.
// Output: one JSON object on stdout, {"runs": {name: [one object per round]}}.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

type phaseResult struct {
	Name        string             `json:"name"`
	Ops         int                `json:"ops"`
	Seconds     float64            `json:"seconds"`
	Rate        float64            `json:"ops_per_second"`
	ClientP50ms float64            `json:"client_p50_ms"`
	ClientP99ms float64            `json:"client_p99_ms"`
	Server      map[string]float64 `json:"apiserver_ms"` // p50, p99 of apiserver_request_duration_seconds
	Errors      int64              `json:"errors"`
	// Reads (GET, LIST) retried once after an HTTP/2 transport error between this client and
	// the apiserver (not an API answer): seen once in 10^5 lists, on etcd's run.
	Retries int64 `json:"retries"`
	// Mean of the apiserver's etcd_request_duration_seconds per storage operation during the
	// phase: the backend's share of each request, as kube-apiserver measures it.
	BackendMeanMs map[string]float64 `json:"backend_mean_ms"`
	BackendOps    map[string]float64 `json:"backend_ops"`
	// The backend process's CPU time (user + system) during the phase, when its pid is known.
	BackendCPUSeconds float64 `json:"backend_cpu_seconds"`
	// The stack's kube-apiserver's CPU time during the phase, when its pid is known.
	APIServerCPUSeconds float64 `json:"apiserver_cpu_seconds"`
	// Unmeasured wait after a write phase until every watcher had seen its events.
	WatchCatchupSeconds float64 `json:"watch_catchup_seconds,omitempty"`
}

// One backend with its kube-apiserver.
type stack struct {
	name string
	cfg  *rest.Config
	cs   *kubernetes.Clientset
	pid  int // the backend's
	apid int // the kube-apiserver's
}

// One backend's round, in the shape tests/k8s/bench_report.py reads.
type roundResult struct {
	Name               string        `json:"name"`
	Round              int           `json:"round"`
	Phases             []phaseResult `json:"phases"`
	Watchers           int           `json:"watchers"`
	WatchEventsWanted  int64         `json:"watch_events_wanted"`
	WatchEventsMinSeen int64         `json:"watch_events_min_seen"`
	WatchesReopened    int64         `json:"watches_reopened"`
	WatchErrors        int64         `json:"watch_errors"`
	// The backend's CPU during this round's measured phases on it.
	BackendCPUSeconds float64 `json:"backend_cpu_seconds"`
	OK                bool    `json:"ok"`
}

func main() {
	kubeconfigs := flag.String("kubeconfig", "", "kubeconfigs of the apiservers, comma-separated (one per backend)")
	names := flag.String("names", "", "the backends' names, comma-separated, in --kubeconfig's order (default: the kubeconfigs' folder names)")
	pids := flag.String("backend-pids", "", "the backends' process ids, comma-separated, for their CPU time per phase (optional)")
	apids := flag.String("apiserver-pids", "", "the apiservers' process ids, comma-separated, for their CPU time per phase (optional)")
	rounds := flag.Int("rounds", 1, "rounds; each runs every phase on every backend")
	n := flag.Int("objects", 10000, "configmaps to create per round (>= 10000 for list10k)")
	workers := flag.Int("workers", 16, "concurrent clients per phase")
	watchers := flag.Int("watchers", 100, "watches kept open on the round's namespace, per backend")
	lists := flag.Int("lists", 1000, "lists of 1,000 objects (lists of 10,000: a fifth of it); about 5 s each on this machine")
	flag.Parse()

	var stacks []*stack
	nameList, pidList, apidList := strings.Split(*names, ","), strings.Split(*pids, ","), strings.Split(*apids, ",")
	for i, kc := range strings.Split(*kubeconfigs, ",") {
		cfg, err := clientcmd.BuildConfigFromFlags("", kc)
		must(err)
		cfg.QPS, cfg.Burst = 1e6, 1e6
		cfg.ContentType = "application/vnd.kubernetes.protobuf"
		cs, err := kubernetes.NewForConfig(cfg)
		must(err)
		s := &stack{name: filepath.Base(filepath.Dir(kc)), cfg: cfg, cs: cs}
		if i < len(nameList) && nameList[i] != "" {
			s.name = nameList[i]
		}
		s.pid, s.apid = pidAt(pidList, i), pidAt(apidList, i)
		stacks = append(stacks, s)
	}
	ctx := context.Background()
	for _, s := range stacks {
		warmUp(ctx, s)
	}
	time.Sleep(2 * time.Second)

	out := map[string][]roundResult{}
	failed := false
	pad := strings.Repeat("x", 512)
	for r := 1; r <= *rounds; r++ {
		order := append([]*stack(nil), stacks...)
		if r%2 == 0 {
			for i, j := 0, len(order)-1; i < j; i, j = i+1, j-1 {
				order[i], order[j] = order[j], order[i]
			}
		}
		ns, ns1k := fmt.Sprintf("load-%d", r), fmt.Sprintf("load1k-%d", r)
		res := map[*stack]*roundResult{}
		ws := map[*stack]*watchSet{}
		objs := map[*stack][]*corev1.ConfigMap{}
		for _, s := range stacks {
			for _, name := range []string{ns, ns1k} {
				_, err := s.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
				must(err)
			}
			res[s] = &roundResult{Name: s.name, Round: r, Watchers: *watchers, WatchEventsWanted: int64(2 * *n)}
			ws[s] = openWatchers(ctx, s.cs, ns, *watchers)
			objs[s] = make([]*corev1.ConfigMap, *n)
		}
		// each runs one phase on every backend in this round's order; wantSeen > 0: then waits
		// (unmeasured) until that backend's watchers have each seen wantSeen events.
		each := func(name string, ops int, verb string, wantSeen int64, op func(s *stack, i int) error) {
			for _, s := range order {
				p := phase(s, name, ops, *workers, func(i int) error { return op(s, i) }, verb)
				if wantSeen > 0 {
					t := time.Now()
					ws[s].waitSeen(wantSeen, 60*time.Second)
					p.WatchCatchupSeconds = time.Since(t).Seconds()
				}
				res[s].Phases = append(res[s].Phases, p)
				res[s].BackendCPUSeconds += p.BackendCPUSeconds
			}
		}
		each("create", *n, "POST", int64(*n), func(s *stack, i int) error {
			cm, err := s.cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("cm-%06d", i), Labels: map[string]string{"g": strconv.Itoa(i % 10)}},
				Data:       map[string]string{"i": strconv.Itoa(i), "pad": pad}}, metav1.CreateOptions{})
			if err == nil {
				objs[s][i] = cm
			}
			return err
		})
		each("update", *n, "PUT", int64(2**n), func(s *stack, i int) error {
			if objs[s][i] == nil {
				return fmt.Errorf("object %d was not created", i)
			}
			cm := objs[s][i].DeepCopy()
			cm.Data["u"] = "1"
			_, err := s.cs.CoreV1().ConfigMaps(ns).Update(ctx, cm, metav1.UpdateOptions{})
			return err
		})
		each("get", *n, "GET", 0, func(s *stack, i int) error {
			_, err := s.cs.CoreV1().ConfigMaps(ns).Get(ctx, fmt.Sprintf("cm-%06d", i), metav1.GetOptions{})
			return err
		})
		// 1,000 objects in their own namespace for list1k (unmeasured).
		for _, s := range order {
			for i := 0; i < 1000; i++ {
				_, err := s.cs.CoreV1().ConfigMaps(ns1k).Create(ctx, &corev1.ConfigMap{
					ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("cm-%06d", i)}, Data: map[string]string{"pad": pad}}, metav1.CreateOptions{})
				must(err)
			}
		}
		listOp := func(ns string, want int) func(s *stack, i int) error {
			return func(s *stack, i int) error {
				l, err := s.cs.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{})
				if err != nil {
					return err
				}
				got := 0
				for _, it := range l.Items {
					if it.Name != "kube-root-ca.crt" {
						got++
					}
				}
				if got != want {
					return fmt.Errorf("%s listed %d objects, want %d", ns, got, want)
				}
				return nil
			}
		}
		each("list1k", *lists, "LIST", 0, listOp(ns1k, 1000))
		each("list10k", max(1, *lists/5), "LIST", 0, listOp(ns, *n))

		// Every watcher must have seen every create and update.
		for _, s := range stacks {
			w, rr := ws[s], res[s]
			rr.WatchEventsMinSeen = w.waitSeen(rr.WatchEventsWanted, 60*time.Second)
			w.close()
			rr.WatchesReopened, rr.WatchErrors = atomic.LoadInt64(&w.reopened), atomic.LoadInt64(&w.errors)
			rr.OK = rr.WatchEventsMinSeen >= rr.WatchEventsWanted && rr.WatchErrors == 0
			if !rr.OK {
				fmt.Fprintf(os.Stderr, "%s round %d: a watcher saw %d of %d events; %d watch errors\n",
					s.name, r, rr.WatchEventsMinSeen, rr.WatchEventsWanted, rr.WatchErrors)
			}
			for _, p := range rr.Phases {
				if p.Errors > 0 {
					rr.OK = false
					fmt.Fprintf(os.Stderr, "%s round %d: phase %s had %d errors\n", s.name, r, p.Name, p.Errors)
				}
			}
			failed = failed || !rr.OK
			out[s.name] = append(out[s.name], *rr)
		}
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", " ")
	must(enc.Encode(map[string]any{"runs": out}))
	if failed {
		os.Exit(1)
	}
}

// warmUp: unmeasured, the apiserver's caches, connections and the backend's first
// allocations, so the first measured phase does not pay for them.
func warmUp(ctx context.Context, s *stack) {
	_, err := s.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "warm"}}, metav1.CreateOptions{})
	must(err)
	for i := 0; i < 1000; i++ {
		name := fmt.Sprintf("w-%06d", i)
		cm, err := s.cs.CoreV1().ConfigMaps("warm").Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"pad": strings.Repeat("x", 512)}}, metav1.CreateOptions{})
		must(err)
		cm.Data["u"] = "1"
		_, err = s.cs.CoreV1().ConfigMaps("warm").Update(ctx, cm, metav1.UpdateOptions{})
		must(err)
		_, err = s.cs.CoreV1().ConfigMaps("warm").Get(ctx, name, metav1.GetOptions{})
		must(err)
	}
	_, err = s.cs.CoreV1().ConfigMaps("warm").List(ctx, metav1.ListOptions{})
	must(err)
}

// watchSet: watches on one namespace, each counting the creates and updates it receives. A watch
// the apiserver closes (it drops watchers that fall behind) is reopened from the last
// resourceVersion seen, as an informer does, so no event is missed or counted twice.
type watchSet struct {
	seen             []int64
	reopened, errors int64
	cancel           context.CancelFunc
	wg               sync.WaitGroup
}

func openWatchers(ctx context.Context, cs *kubernetes.Clientset, ns string, n int) *watchSet {
	ws := &watchSet{seen: make([]int64, n)}
	wctx, cancel := context.WithCancel(ctx)
	ws.cancel = cancel
	for i := 0; i < n; i++ {
		w, err := cs.CoreV1().ConfigMaps(ns).Watch(wctx, metav1.ListOptions{AllowWatchBookmarks: true})
		must(err)
		ws.wg.Add(1)
		go func(i int, w watch.Interface) {
			defer ws.wg.Done()
			lastRV := ""
			for {
				for ev := range w.ResultChan() {
					switch ev.Type {
					case watch.Added, watch.Modified:
						atomic.AddInt64(&ws.seen[i], 1)
						lastRV = ev.Object.(*corev1.ConfigMap).ResourceVersion
					case watch.Bookmark:
						lastRV = ev.Object.(*corev1.ConfigMap).ResourceVersion
					case watch.Error:
						if wctx.Err() == nil {
							atomic.AddInt64(&ws.errors, 1)
							fmt.Fprintf(os.Stderr, "watch error: %v\n", ev.Object)
						}
					}
				}
				if wctx.Err() != nil {
					return
				}
				if lastRV == "" {
					atomic.AddInt64(&ws.errors, 1)
					return
				}
				atomic.AddInt64(&ws.reopened, 1)
				var err error
				for {
					w, err = cs.CoreV1().ConfigMaps(ns).Watch(wctx, metav1.ListOptions{ResourceVersion: lastRV, AllowWatchBookmarks: true})
					if err == nil || wctx.Err() != nil {
						break
					}
					time.Sleep(100 * time.Millisecond)
				}
				if err != nil {
					return
				}
			}
		}(i, w)
	}
	return ws
}

// waitSeen waits up to timeout until every watcher has seen want events; returns the least seen.
func (ws *watchSet) waitSeen(want int64, timeout time.Duration) int64 {
	deadline := time.Now().Add(timeout)
	for {
		least := want
		for i := range ws.seen {
			least = min(least, atomic.LoadInt64(&ws.seen[i]))
		}
		if least >= want || time.Now().After(deadline) {
			return least
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (ws *watchSet) close() {
	ws.cancel()
	ws.wg.Wait()
}

// pidAt: the process id at position i of a comma-separated flag's values; 0 when absent.
func pidAt(list []string, i int) int {
	if i >= len(list) || list[i] == "" {
		return 0
	}
	pid, err := strconv.Atoi(list[i])
	must(err)
	return pid
}

// cpuSeconds: user + system CPU time of a process (0 when pid is 0 or gone).
func cpuSeconds(pid int) float64 {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	k, _ := strconv.ParseFloat(f[12], 64)
	return (u + k) / 100 // USER_HZ, 100 on Linux
}

func phase(s *stack, name string, ops, workers int, op func(i int) error, verb string) phaseResult {
	before := scrape(s.cfg)
	cpu0, acpu0 := cpuSeconds(s.pid), cpuSeconds(s.apid)
	lat := make([]time.Duration, ops)
	var next, errs, retries int64 = -1, 0, 0
	idempotent := verb == "GET" || verb == "LIST"
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(atomic.AddInt64(&next, 1))
				if i >= ops {
					return
				}
				t := time.Now()
				err := op(i)
				var status apierrors.APIStatus
				if err != nil && idempotent && !errors.As(err, &status) {
					fmt.Fprintf(os.Stderr, "%s %s: retrying once after: %v\n", s.name, name, err)
					atomic.AddInt64(&retries, 1)
					err = op(i)
				}
				if err != nil {
					atomic.AddInt64(&errs, 1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
				lat[i] = time.Since(t)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu, acpu := cpuSeconds(s.pid)-cpu0, cpuSeconds(s.apid)-acpu0
	after := scrape(s.cfg)
	if e := firstErr.Load(); e != nil {
		fmt.Fprintf(os.Stderr, "%s %s: first error: %v\n", s.name, name, e)
	}
	sort.Slice(lat, func(a, b int) bool { return lat[a] < lat[b] })
	backendMean, backendOps := map[string]float64{}, map[string]float64{}
	for op, c := range after.etcdCount {
		if d := c - before.etcdCount[op]; d > 0 {
			backendOps[op] = d
			backendMean[op] = (after.etcdSum[op] - before.etcdSum[op]) / d * 1000
		}
	}
	pct := func(p float64) float64 {
		return float64(lat[int(math.Min(float64(len(lat)-1), p*float64(len(lat))))].Microseconds()) / 1000
	}
	return phaseResult{Name: name, Ops: ops, Seconds: elapsed.Seconds(), Rate: float64(ops) / elapsed.Seconds(),
		ClientP50ms: pct(0.50), ClientP99ms: pct(0.99), Errors: errs, Retries: retries, BackendMeanMs: backendMean, BackendOps: backendOps, BackendCPUSeconds: cpu, APIServerCPUSeconds: acpu,
		Server: map[string]float64{"p50": histQuantile(before, after, verb, 0.50), "p99": histQuantile(before, after, verb, 0.99)}}
}

// scrape returns apiserver_request_duration_seconds_bucket for configmaps, summed by (verb, le).
type scraped struct {
	hist      map[string]map[float64]float64 // apiserver_request_duration_seconds buckets by verb
	etcdSum   map[string]float64             // etcd_request_duration_seconds_sum by operation
	etcdCount map[string]float64
}

func scrape(cfg *rest.Config) scraped {
	rt, err := rest.TransportFor(cfg)
	must(err)
	req, _ := http.NewRequest("GET", cfg.Host+"/metrics", nil)
	resp, err := (&http.Client{Transport: rt}).Do(req)
	must(err)
	defer resp.Body.Close()
	out := map[string]map[float64]float64{}
	res := scraped{hist: out, etcdSum: map[string]float64{}, etcdCount: map[string]float64{}}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "etcd_request_duration_seconds_") && strings.Contains(line, `resource="configmaps"`) {
			v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			if err == nil && strings.HasPrefix(line, "etcd_request_duration_seconds_sum{") {
				res.etcdSum[label(line, "operation")] += v
			} else if err == nil && strings.HasPrefix(line, "etcd_request_duration_seconds_count{") {
				res.etcdCount[label(line, "operation")] += v
			}
			continue
		}
		if !strings.HasPrefix(line, "apiserver_request_duration_seconds_bucket{") || !strings.Contains(line, `resource="configmaps"`) {
			continue
		}
		verb, le := label(line, "verb"), label(line, "le")
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			continue
		}
		b, err := strconv.ParseFloat(le, 64)
		if le == "+Inf" {
			b, err = math.Inf(1), nil
		}
		if err != nil {
			continue
		}
		if out[verb] == nil {
			out[verb] = map[float64]float64{}
		}
		out[verb][b] += v
	}
	return res
}

func label(line, name string) string {
	i := strings.Index(line, name+`="`)
	if i < 0 {
		return ""
	}
	rest := line[i+len(name)+2:]
	return rest[:strings.IndexByte(rest, '"')]
}

// histQuantile: Prometheus' histogram_quantile over the bucket increase between two scrapes, in ms.
func histQuantile(b0, a0 scraped, verb string, q float64) float64 {
	before, after := b0.hist, a0.hist
	var bounds []float64
	for b := range after[verb] {
		bounds = append(bounds, b)
	}
	sort.Float64s(bounds)
	if len(bounds) == 0 {
		return -1
	}
	inc := make([]float64, len(bounds))
	for i, b := range bounds {
		inc[i] = after[verb][b] - before[verb][b]
	}
	total := inc[len(inc)-1]
	if total <= 0 {
		return -1
	}
	rank := q * total
	prevBound, prevCount := 0.0, 0.0
	for i, b := range bounds {
		if inc[i] >= rank {
			if math.IsInf(b, 1) {
				return prevBound * 1000
			}
			return (prevBound + (b-prevBound)*(rank-prevCount)/(inc[i]-prevCount)) * 1000
		}
		prevBound, prevCount = b, inc[i]
	}
	return bounds[len(bounds)-1] * 1000
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
