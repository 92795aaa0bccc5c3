// loaddriver runs one fixed request mix through a kube-apiserver with client-go and reports,
// per phase, the client's throughput and latency and the apiserver's own request latency
// (apiserver_request_duration_seconds, p50/p99 from its histogram buckets over the phase).
// `tests/k8s/run.sh bench` runs it against kube-apiserver on Engram and on etcd 3.7 in one run.
//
// After an unmeasured warm-up (1,000 creates, updates and gets in namespace "warm"),
// phases (in order, in namespace "load"):
//
//	create   N configmaps, W workers
//	update   every configmap once (Update with the last resourceVersion), W workers
//	get      N gets, W workers
//	list1k   lists of a 1,000-object namespace, W workers, `lists` times
//	list10k  lists of the 10,000-object namespace (N objects), `lists`/5 times
//
// while `watchers` watches on the namespace stay open and count what they receive (every
// watcher must see every create and update). Output: one JSON object on stdout.
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
}

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the apiserver")
	n := flag.Int("objects", 10000, "configmaps to create (>= 10000 for list10k)")
	workers := flag.Int("workers", 16, "concurrent clients per phase")
	watchers := flag.Int("watchers", 100, "watches kept open on the namespace")
	lists := flag.Int("lists", 1000, "lists of 1,000 objects (lists of 10,000: a fifth of it); about 5 s each on this machine")
	flag.Parse()

	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	must(err)
	cfg.QPS, cfg.Burst = 1e6, 1e6
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	cs, err := kubernetes.NewForConfig(cfg)
	must(err)
	ctx := context.Background()

	for _, ns := range []string{"load", "load1k", "warm"} {
		_, err = cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		must(err)
	}

	// Watchers: each counts the events it receives; all must see every create and update.
	// A watch the apiserver closes (it drops watchers that fall behind) is reopened from the
	// last resourceVersion seen, as an informer does, so no event is missed or counted twice.
	seen := make([]int64, *watchers)
	var reopened, watchErrors int64
	wctx, wcancel := context.WithCancel(ctx)
	var wwg sync.WaitGroup
	for i := 0; i < *watchers; i++ {
		w, err := cs.CoreV1().ConfigMaps("load").Watch(wctx, metav1.ListOptions{AllowWatchBookmarks: true})
		must(err)
		wwg.Add(1)
		go func(i int, w watch.Interface) {
			defer wwg.Done()
			lastRV := ""
			for {
				for ev := range w.ResultChan() {
					switch ev.Type {
					case watch.Added, watch.Modified:
						atomic.AddInt64(&seen[i], 1)
						lastRV = ev.Object.(*corev1.ConfigMap).ResourceVersion
					case watch.Bookmark:
						lastRV = ev.Object.(*corev1.ConfigMap).ResourceVersion
					case watch.Error:
						if wctx.Err() == nil {
							atomic.AddInt64(&watchErrors, 1)
							fmt.Fprintf(os.Stderr, "watch error: %v\n", ev.Object)
						}
					}
				}
				if wctx.Err() != nil {
					return
				}
				if lastRV == "" {
					atomic.AddInt64(&watchErrors, 1)
					return
				}
				atomic.AddInt64(&reopened, 1)
				var err error
				for {
					w, err = cs.CoreV1().ConfigMaps("load").Watch(wctx, metav1.ListOptions{ResourceVersion: lastRV, AllowWatchBookmarks: true})
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

	// Warm-up, not measured: the apiserver's caches, connections and the backend's first
	// allocations, so the first measured phase does not pay for them.
	warmCount := 1000
	for i := 0; i < warmCount; i++ {
		name := fmt.Sprintf("w-%06d", i)
		cm, err := cs.CoreV1().ConfigMaps("warm").Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"pad": strings.Repeat("x", 512)}}, metav1.CreateOptions{})
		must(err)
		cm.Data["u"] = "1"
		_, err = cs.CoreV1().ConfigMaps("warm").Update(ctx, cm, metav1.UpdateOptions{})
		must(err)
		_, err = cs.CoreV1().ConfigMaps("warm").Get(ctx, name, metav1.GetOptions{})
		must(err)
	}
	_, err = cs.CoreV1().ConfigMaps("warm").List(ctx, metav1.ListOptions{})
	must(err)
	time.Sleep(2 * time.Second)

	var results []phaseResult
	objs := make([]*corev1.ConfigMap, *n)
	pad := strings.Repeat("x", 512)

	results = append(results, phase(cfg, "create", *n, *workers, func(i int) error {
		cm, err := cs.CoreV1().ConfigMaps("load").Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("cm-%06d", i), Labels: map[string]string{"g": strconv.Itoa(i % 10)}},
			Data:       map[string]string{"i": strconv.Itoa(i), "pad": pad}}, metav1.CreateOptions{})
		if err == nil {
			objs[i] = cm
		}
		return err
	}, "POST"))
	results = append(results, phase(cfg, "update", *n, *workers, func(i int) error {
		if objs[i] == nil {
			return fmt.Errorf("object %d was not created", i)
		}
		cm := objs[i].DeepCopy()
		cm.Data["u"] = "1"
		_, err := cs.CoreV1().ConfigMaps("load").Update(ctx, cm, metav1.UpdateOptions{})
		return err
	}, "PUT"))
	results = append(results, phase(cfg, "get", *n, *workers, func(i int) error {
		_, err := cs.CoreV1().ConfigMaps("load").Get(ctx, fmt.Sprintf("cm-%06d", i), metav1.GetOptions{})
		return err
	}, "GET"))
	// 1,000 objects in their own namespace for list1k.
	for i := 0; i < 1000; i++ {
		_, err := cs.CoreV1().ConfigMaps("load1k").Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("cm-%06d", i)}, Data: map[string]string{"pad": pad}}, metav1.CreateOptions{})
		must(err)
	}
	listPhase := func(name, ns string, want, count int) phaseResult {
		return phase(cfg, name, count, *workers, func(i int) error {
			l, err := cs.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{})
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
		}, "LIST")
	}
	results = append(results, listPhase("list1k", "load1k", 1000, *lists))
	results = append(results, listPhase("list10k", "load", *n, max(1, *lists/5)))

	// Every watcher must have seen every create and update.
	want := int64(2 * *n)
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		ok := true
		for i := range seen {
			if atomic.LoadInt64(&seen[i]) < want {
				ok = false
			}
		}
		if ok {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	minSeen := want
	for i := range seen {
		if v := atomic.LoadInt64(&seen[i]); v < minSeen {
			minSeen = v
		}
	}
	wcancel()
	wwg.Wait()

	out := map[string]any{"phases": results, "watchers": *watchers, "watch_events_wanted": want,
		"watch_events_min_seen": minSeen, "watches_reopened": atomic.LoadInt64(&reopened),
		"watch_errors": atomic.LoadInt64(&watchErrors)}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", " ")
	must(enc.Encode(out))
	if minSeen < want || atomic.LoadInt64(&watchErrors) > 0 {
		fmt.Fprintf(os.Stderr, "a watcher saw %d of %d events; %d watch errors\n", minSeen, want, atomic.LoadInt64(&watchErrors))
		os.Exit(1)
	}
	for _, r := range results {
		if r.Errors > 0 {
			fmt.Fprintf(os.Stderr, "phase %s had %d errors\n", r.Name, r.Errors)
			os.Exit(1)
		}
	}
}

func phase(cfg *rest.Config, name string, ops, workers int, op func(i int) error, verb string) phaseResult {
	before := scrape(cfg)
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
					fmt.Fprintf(os.Stderr, "%s: retrying once after: %v\n", name, err)
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
	after := scrape(cfg)
	if e := firstErr.Load(); e != nil {
		fmt.Fprintf(os.Stderr, "%s: first error: %v\n", name, e)
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
		ClientP50ms: pct(0.50), ClientP99ms: pct(0.99), Errors: errs, Retries: retries, BackendMeanMs: backendMean, BackendOps: backendOps,
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
