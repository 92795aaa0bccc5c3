// readsnap measures whether a read's header revision is the revision its data
// was read at (Engram issue 15), over the real gRPC path with etcd's own Go
// client (go.etcd.io/etcd/clientv3, etcd 3.4 from Debian's
// golang-etcd-server-dev), against one endpoint of any etcd v3 compatible
// server.
//
// For --duration, three writers Put the single key "k" in a loop (every value
// distinct) and three readers read it concurrently:
//
//	get_linearizable  Get("k")
//	get_serializable  Get("k", WithSerializable())
//	txn_2get          Txn().Then(OpGet("k"), OpGet("k")), no compares
//
// Only "k" is written after startup, so every reply must satisfy
// header.revision == kvs[0].mod_revision, and in the Txn every inner
// ResponseRange must have header.revision == kvs[0].mod_revision == the Txn's
// header.revision. Each violation counts as one mismatch (per reply, not per
// inner op). One JSON line goes to stdout per run; a "MISMATCH" line per read
// kind with mismatches goes to stderr. The exit status is 0 whatever was
// measured; 2 only when the server could not be reached or "k" not written.
//
// Helpers: "readsnap freeports N" prints N free loopback TCP ports;
// "readsnap summarize < lines.jsonl" prints a markdown table of the medians
// per server and read kind.
//
// Built in GOPATH mode, offline, like ../shared/tools/loadgen (see run.sh):
//
//	GO111MODULE=off GOPATH=/tmp/lg-gopath:/usr/share/gocode /usr/lib/go/bin/go build
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/ioutil"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/clientv3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

const key = "k"

var kindNames = []string{"get_linearizable", "get_serializable", "txn_2get"}

type inner struct {
	HeaderRevision int64  `json:"header_revision"`
	ModRevision    int64  `json:"mod_revision"`
	Value          string `json:"value,omitempty"`
	Kvs            int    `json:"kvs"`
}

type example struct {
	Kind           string  `json:"kind"`
	AtMs           int64   `json:"at_ms"`
	Reason         string  `json:"reason"`
	HeaderRevision int64   `json:"header_revision"`
	ModRevision    int64   `json:"mod_revision,omitempty"`
	Value          string  `json:"value,omitempty"`
	Inner          []inner `json:"inner,omitempty"`
}

type kindStats struct {
	Replies    int64 `json:"replies"`
	Mismatches int64 `json:"mismatches"`
	Errors     int64 `json:"errors"`
	// breakdown of mismatches (one reply may count in several)
	HdrGtMod      int64    `json:"hdr_gt_mod"`             // header.revision > mod_revision (some inner op, for txn)
	HdrLtMod      int64    `json:"hdr_lt_mod"`             // header.revision < mod_revision
	NoKv          int64    `json:"no_kv"`                  // no kv returned although "k" exists
	InnerHdr      int64    `json:"inner_hdr_ne,omitempty"` // txn: inner header.revision != txn header.revision
	InnerDisagree int64    `json:"inner_disagree,omitempty"`
	FirstError    string   `json:"first_error,omitempty"`
	FirstMismatch *example `json:"first_mismatch,omitempty"`
}

type result struct {
	Tool          string                `json:"tool"`
	Server        string                `json:"server"`
	Tag           string                `json:"tag,omitempty"`
	Rep           int                   `json:"rep,omitempty"`
	Endpoint      string                `json:"endpoint"`
	Binary        string                `json:"binary,omitempty"`
	BinarySHA256  string                `json:"binary_sha256,omitempty"`
	ServerVersion string                `json:"server_version,omitempty"`
	Time          string                `json:"time"`
	DurationS     float64               `json:"duration_s"`
	ElapsedS      float64               `json:"elapsed_s"`
	Conns         int                   `json:"conns"`
	Writes        int64                 `json:"writes"`
	WriteErrors   int64                 `json:"write_errors"`
	StartRevision int64                 `json:"start_revision"`
	EndRevision   int64                 `json:"end_revision"`
	Reads         map[string]*kindStats `json:"reads"`
	Replies       int64                 `json:"replies_total"`
	Mismatches    int64                 `json:"mismatches_total"`
	FirstMismatch *example              `json:"first_mismatch"`
	LoadStart     string                `json:"loadavg_start,omitempty"`
	LoadEnd       string                `json:"loadavg_end,omitempty"`
	Error         string                `json:"error,omitempty"`
}

func quietLog() *zap.Config {
	lc := zap.NewProductionConfig()
	lc.Level = zap.NewAtomicLevelAt(zap.ErrorLevel)
	lc.OutputPaths = []string{"stderr"}
	lc.ErrorOutputPaths = []string{"stderr"}
	return &lc
}

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

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "summarize":
			summarize()
			return
		case "freeports":
			freeports()
			return
		}
	}
	var (
		endpoint    = flag.String("endpoint", "127.0.0.1:2379", "one client endpoint host:port")
		server      = flag.String("server", "unknown", "server name for the JSON line (etcd, engram, ...)")
		tag         = flag.String("tag", "", "free-form tag for the JSON line")
		rep         = flag.Int("rep", 0, "repetition number for the JSON line")
		binary      = flag.String("binary", "", "server binary path, recorded only")
		binarySHA   = flag.String("binary-sha256", "", "server binary sha256, recorded only")
		serverVer   = flag.String("server-version", "", "server version text, recorded only")
		duration    = flag.Duration("duration", 8*time.Second, "how long writers and readers run")
		conns       = flag.Int("conns", 1, "gRPC connections (clients); goroutine i uses connection i%conns")
		timeout     = flag.Duration("timeout", 5*time.Second, "per-request timeout")
		wait        = flag.Duration("wait", 30*time.Second, "how long to wait for the server to answer a Put of \"k\" first")
		dialTimeout = flag.Duration("dial-timeout", 2*time.Second, "dial timeout per attempt")
	)
	flag.Parse()
	if *conns < 1 {
		*conns = 1
	}

	res := &result{Tool: "readsnap", Server: *server, Tag: *tag, Rep: *rep, Endpoint: *endpoint,
		Binary: *binary, BinarySHA256: *binarySHA, ServerVersion: *serverVer,
		Time: time.Now().UTC().Format(time.RFC3339), DurationS: duration.Seconds(), Conns: *conns,
		Reads: map[string]*kindStats{}}
	for _, k := range kindNames {
		res.Reads[k] = &kindStats{}
	}
	emit := func() {
		b, _ := json.Marshal(res)
		fmt.Println(string(b))
	}

	// Connect and write "k" once (waiting for the server to come up).
	clients := make([]*clientv3.Client, 0, *conns)
	deadline := time.Now().Add(*wait)
	var lastErr error
	for len(clients) < *conns && time.Now().Before(deadline) {
		c, err := clientv3.New(clientv3.Config{
			Endpoints:   []string{*endpoint},
			DialTimeout: *dialTimeout,
			DialOptions: []grpc.DialOption{grpc.WithBlock()},
			LogConfig:   quietLog(),
		})
		if err != nil {
			lastErr = err
			time.Sleep(100 * time.Millisecond)
			continue
		}
		clients = append(clients, c)
	}
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	for len(clients) == *conns && time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		pr, err := clients[0].Put(ctx, key, "init")
		cancel()
		if err == nil {
			res.StartRevision = pr.Header.Revision
			lastErr = nil
			break
		}
		lastErr = err
		time.Sleep(100 * time.Millisecond)
	}
	if len(clients) < *conns || res.StartRevision == 0 {
		if lastErr == nil {
			lastErr = fmt.Errorf("timed out after %v", *wait)
		}
		res.Error = "setup: " + lastErr.Error()
		emit()
		fmt.Fprintf(os.Stderr, "readsnap: %s: %s\n", *server, res.Error)
		os.Exit(2)
	}

	var (
		stop     int32
		mu       sync.Mutex // guards first-example fields and FirstError
		writes   int64
		werrs    int64
		firstErr string
		wg       sync.WaitGroup
	)
	start := time.Now()
	record := func(st *kindStats, ex *example) {
		atomic.AddInt64(&st.Mismatches, 1)
		mu.Lock()
		ex.AtMs = time.Since(start).Milliseconds()
		if st.FirstMismatch == nil {
			st.FirstMismatch = ex
		}
		if res.FirstMismatch == nil {
			res.FirstMismatch = ex
		}
		mu.Unlock()
	}
	failed := func(st *kindStats, err error) {
		atomic.AddInt64(&st.Errors, 1)
		mu.Lock()
		if st.FirstError == "" {
			st.FirstError = err.Error()
		}
		mu.Unlock()
	}
	cli := func(i int) *clientv3.Client { return clients[i%len(clients)] }

	for w := 0; w < 3; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			c := cli(w)
			for n := 0; atomic.LoadInt32(&stop) == 0; n++ {
				ctx, cancel := context.WithTimeout(context.Background(), *timeout)
				_, err := c.Put(ctx, key, fmt.Sprintf("w%d-%d", w, n))
				cancel()
				if err != nil {
					atomic.AddInt64(&werrs, 1)
					mu.Lock()
					if firstErr == "" {
						firstErr = err.Error()
					}
					mu.Unlock()
					continue
				}
				atomic.AddInt64(&writes, 1)
			}
		}(w)
	}

	checkGet := func(kind string, st *kindStats, r *clientv3.GetResponse) {
		atomic.AddInt64(&st.Replies, 1)
		hdr := r.Header.GetRevision()
		if len(r.Kvs) == 0 {
			atomic.AddInt64(&st.NoKv, 1)
			record(st, &example{Kind: kind, Reason: "no kv for \"k\"", HeaderRevision: hdr})
			return
		}
		mod := r.Kvs[0].ModRevision
		if hdr == mod {
			return
		}
		reason := "header.revision > kvs[0].mod_revision"
		if hdr > mod {
			atomic.AddInt64(&st.HdrGtMod, 1)
		} else {
			atomic.AddInt64(&st.HdrLtMod, 1)
			reason = "header.revision < kvs[0].mod_revision"
		}
		record(st, &example{Kind: kind, Reason: reason, HeaderRevision: hdr, ModRevision: mod, Value: string(r.Kvs[0].Value)})
	}

	getReader := func(i int, kind string, opts ...clientv3.OpOption) {
		defer wg.Done()
		c, st := cli(3+i), res.Reads[kind]
		for atomic.LoadInt32(&stop) == 0 {
			ctx, cancel := context.WithTimeout(context.Background(), *timeout)
			r, err := c.Get(ctx, key, opts...)
			cancel()
			if err != nil {
				failed(st, err)
				continue
			}
			checkGet(kind, st, r)
		}
	}
	wg.Add(3)
	go getReader(0, "get_linearizable")
	go getReader(1, "get_serializable", clientv3.WithSerializable())
	go func() {
		defer wg.Done()
		kind := "txn_2get"
		c, st := cli(5), res.Reads[kind]
		for atomic.LoadInt32(&stop) == 0 {
			ctx, cancel := context.WithTimeout(context.Background(), *timeout)
			r, err := c.Txn(ctx).Then(clientv3.OpGet(key), clientv3.OpGet(key)).Commit()
			cancel()
			if err != nil {
				failed(st, err)
				continue
			}
			atomic.AddInt64(&st.Replies, 1)
			hdr := r.Header.GetRevision()
			ex := &example{Kind: kind, HeaderRevision: hdr}
			var reasons []string
			add := func(s string) {
				for _, x := range reasons {
					if x == s {
						return
					}
				}
				reasons = append(reasons, s)
			}
			var gt, lt, nokv, ihdr bool
			if !r.Succeeded {
				add("txn without compares did not succeed")
			}
			if len(r.Responses) != 2 {
				add(fmt.Sprintf("%d responses, want 2", len(r.Responses)))
			}
			for _, op := range r.Responses {
				rr := op.GetResponseRange()
				if rr == nil {
					add("response is not a ResponseRange")
					continue
				}
				in := inner{HeaderRevision: rr.Header.GetRevision(), Kvs: len(rr.Kvs)}
				if in.HeaderRevision != hdr {
					ihdr = true
					add("inner header.revision != txn header.revision")
				}
				if len(rr.Kvs) == 0 {
					nokv = true
					add("no kv for \"k\"")
				} else {
					in.ModRevision, in.Value = rr.Kvs[0].ModRevision, string(rr.Kvs[0].Value)
					if in.ModRevision < hdr {
						gt = true
						add("txn header.revision > kvs[0].mod_revision")
					} else if in.ModRevision > hdr {
						lt = true
						add("txn header.revision < kvs[0].mod_revision")
					}
				}
				ex.Inner = append(ex.Inner, in)
			}
			if len(ex.Inner) == 2 && (ex.Inner[0].ModRevision != ex.Inner[1].ModRevision || ex.Inner[0].Kvs != ex.Inner[1].Kvs) {
				atomic.AddInt64(&st.InnerDisagree, 1)
				add("the two Gets saw different data")
			}
			if len(reasons) == 0 {
				continue
			}
			if gt {
				atomic.AddInt64(&st.HdrGtMod, 1)
			}
			if lt {
				atomic.AddInt64(&st.HdrLtMod, 1)
			}
			if nokv {
				atomic.AddInt64(&st.NoKv, 1)
			}
			if ihdr {
				atomic.AddInt64(&st.InnerHdr, 1)
			}
			ex.Reason = strings.Join(reasons, "; ")
			record(st, ex)
		}
	}()

	res.LoadStart = loadavg()
	time.Sleep(*duration)
	atomic.StoreInt32(&stop, 1)
	wg.Wait()
	res.ElapsedS = time.Since(start).Seconds()
	res.LoadEnd = loadavg()
	res.Writes, res.WriteErrors = writes, werrs

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	if r, err := clients[0].Get(ctx, key); err == nil {
		res.EndRevision = r.Header.GetRevision()
	}
	cancel()

	for _, k := range kindNames {
		st := res.Reads[k]
		res.Replies += st.Replies
		res.Mismatches += st.Mismatches
		if st.Mismatches > 0 {
			ex, _ := json.Marshal(st.FirstMismatch)
			fmt.Fprintf(os.Stderr, "MISMATCH server=%s kind=%s mismatches=%d/%d first=%s\n", *server, k, st.Mismatches, st.Replies, ex)
		}
	}
	if werrs > 0 {
		fmt.Fprintf(os.Stderr, "readsnap: %s: %d write errors, first: %s\n", *server, werrs, firstErr)
	}
	emit()
}

// freeports prints N distinct loopback TCP ports that were free a moment ago.
func freeports() {
	n := 1
	if len(os.Args) > 2 {
		n, _ = strconv.Atoi(os.Args[2])
	}
	var ls []net.Listener
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Fprintln(os.Stderr, "readsnap freeports:", err)
			os.Exit(2)
		}
		ls = append(ls, l)
		fmt.Println(l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
}

func median(v []int64) (med, lo, hi int64) {
	if len(v) == 0 {
		return 0, 0, 0
	}
	s := append([]int64(nil), v...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s)%2 == 1 {
		med = s[len(s)/2]
	} else {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return med, s[0], s[len(s)-1]
}

// summarize reads readsnap JSON lines on stdin and prints, per server (in
// order of first appearance) and read kind, the median (min-max) of replies
// and mismatches over the runs.
func summarize() {
	dec := json.NewDecoder(os.Stdin)
	var order []string
	runs := map[string][]*result{}
	for {
		var r result
		if err := dec.Decode(&r); err != nil {
			if err != io.EOF {
				fmt.Fprintln(os.Stderr, "readsnap summarize:", err)
			}
			break
		}
		if r.Tool != "readsnap" || r.Error != "" {
			continue
		}
		if _, ok := runs[r.Server]; !ok {
			order = append(order, r.Server)
		}
		rr := r
		runs[r.Server] = append(runs[r.Server], &rr)
	}
	cell := func(v []int64) string {
		m, lo, hi := median(v)
		if len(v) < 2 {
			return strconv.FormatInt(m, 10)
		}
		return fmt.Sprintf("%d (%d-%d)", m, lo, hi)
	}
	fmt.Println("| server | runs | read | replies | mismatches | mismatch % | errors |")
	fmt.Println("|---|---|---|---|---|---|---|")
	for _, s := range order {
		rs := runs[s]
		for _, k := range kindNames {
			var rep, mis, errs []int64
			var pct []int64 // basis points, for the median
			for _, r := range rs {
				st := r.Reads[k]
				if st == nil {
					st = &kindStats{}
				}
				rep = append(rep, st.Replies)
				mis = append(mis, st.Mismatches)
				errs = append(errs, st.Errors)
				if st.Replies > 0 {
					pct = append(pct, st.Mismatches*10000/st.Replies)
				}
			}
			pm, _, _ := median(pct)
			fmt.Printf("| %s | %d | %s | %s | %s | %.2f | %s |\n", s, len(rs), k, cell(rep), cell(mis), float64(pm)/100, cell(errs))
		}
		var w []int64
		for _, r := range rs {
			w = append(w, r.Writes)
		}
		fmt.Printf("| %s | %d | (puts) | %s | | | |\n", s, len(rs), cell(w))
	}
}
