// concprobe drives etcd's v3lock (Lock, Unlock), v3election (Campaign,
// Proclaim, Leader, Observe, Resign) and the Maintenance Hash, HashKV,
// MoveLeader and Status RPCs over plain gRPC (the generated v3lockpb /
// v3electionpb / etcdserverpb clients of etcd 3.4 from Debian's
// golang-etcd-server-dev; no clientv3 error rewriting), against one endpoint of
// a fresh, single-member server, and prints one JSON line per case:
//
//	{"case":"lock/uncontended","code":"OK","message":"","detail":{...}}
//
// code is the gRPC status code name the server answered, message its status
// message. Lease IDs, member and cluster IDs are replaced by placeholders
// (<L1>, <member>, ...) so that the output of two servers given the same fresh
// start can be diffed (run.sh does that for etcd and Engram). Revisions are
// absolute: every case runs in a fixed order on the fresh server.
//
// It also checks HashKV against a model (the algorithm of etcd 3.4.23's
// mvcc.store.HashByRev, recomputed here from the full watch history): cases
// "hashkv/model@..." report "model_matches":true when the server's hash is the
// model's. See docs/design/maintenance.md.
//
//	concprobe --endpoint 127.0.0.1:2379 [--only maint,lock,election]
//	concprobe freeports N
//
// Takes about 25 s (lease expiry cases wait for real TTLs). Exit status 0
// whatever the server answered; 2 if it cannot be reached.
//
// Built in GOPATH mode, offline (see run.sh):
//
//	GO111MODULE=off GOPATH=/tmp/lg-gopath:/usr/share/gocode /usr/lib/go/bin/go build
package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"hash/crc32"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/etcdserver/api/v3election/v3electionpb"
	"go.etcd.io/etcd/etcdserver/api/v3lock/v3lockpb"
	pb "go.etcd.io/etcd/etcdserver/etcdserverpb"
	"go.etcd.io/etcd/mvcc/mvccpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

var (
	conn  *grpc.ClientConn
	kvc   pb.KVClient
	lc    pb.LeaseClient
	mc    pb.MaintenanceClient
	wc    pb.WatchClient
	lockc v3lockpb.LockClient
	elc   v3electionpb.ElectionClient

	mu     sync.Mutex
	leases = map[int64]string{}  // lease ID -> placeholder
	ids    = map[uint64]string{} // member / cluster IDs -> placeholder
	out    = json.NewEncoder(os.Stdout)
)

type D = map[string]interface{}

// ---- placeholders ----------------------------------------------------------

func lname(id int64) string {
	if id == 0 {
		return "0"
	}
	mu.Lock()
	defer mu.Unlock()
	if n, ok := leases[id]; ok {
		return n
	}
	n := fmt.Sprintf("<L%d>", len(leases)+1)
	leases[id] = n
	return n
}

// nkey replaces a lease ID in hex (as in lock/election keys) by its placeholder.
func nkey(k []byte) string {
	s := string(k)
	if i := strings.LastIndexByte(s, '/'); i >= 0 {
		if id, err := strconv.ParseUint(s[i+1:], 16, 64); err == nil {
			mu.Lock()
			_, known := leases[int64(id)]
			mu.Unlock()
			if known {
				return s[:i+1] + lname(int64(id))
			}
		}
	}
	return s
}

// leaseOfKey is the lease ID encoded in a lock / election key.
func leaseOfKey(k []byte) int64 {
	s := string(k)
	i := strings.LastIndexByte(s, '/')
	id, err := strconv.ParseUint(s[i+1:], 16, 64)
	if err != nil {
		return 0
	}
	return int64(id)
}

func hdr(h *pb.ResponseHeader) D {
	if h == nil {
		return nil
	}
	mu.Lock()
	defer mu.Unlock()
	idn := func(id uint64, what string) string {
		if id == 0 {
			return "0"
		}
		if n, ok := ids[id]; ok {
			return n
		}
		n := fmt.Sprintf("<%s%d>", what, len(ids)+1)
		ids[id] = n
		return n
	}
	return D{"cluster_id": idn(h.ClusterId, "cluster"), "member_id": idn(h.MemberId, "member"),
		"revision": h.Revision, "raft_term_set": h.RaftTerm != 0}
}

func kvd(kv *mvccpb.KeyValue) D {
	if kv == nil {
		return nil
	}
	return D{"key": nkey(kv.Key), "value": string(kv.Value), "create_revision": kv.CreateRevision,
		"mod_revision": kv.ModRevision, "version": kv.Version, "lease": lname(kv.Lease)}
}

func leaderKey(l *v3electionpb.LeaderKey) D {
	if l == nil {
		return nil
	}
	return D{"name": string(l.Name), "key": nkey(l.Key), "rev": l.Rev, "lease": lname(l.Lease)}
}

// ---- output ----------------------------------------------------------------

func emit(name string, err error, detail D) {
	rec := D{"case": name, "code": "OK", "message": ""}
	if err != nil {
		st, _ := status.FromError(err)
		rec["code"] = st.Code().String()
		rec["message"] = st.Message()
	}
	if len(detail) > 0 {
		rec["detail"] = detail
	}
	out.Encode(rec)
}

func ctxT(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

// ---- small helpers ---------------------------------------------------------

func grant(ttl int64) int64 {
	ctx, cancel := ctxT(5 * time.Second)
	defer cancel()
	r, err := lc.LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: ttl})
	if err != nil {
		fatal("LeaseGrant: %v", err)
	}
	lname(r.ID)
	return r.ID
}

func ttlOf(id int64) D {
	ctx, cancel := ctxT(5 * time.Second)
	defer cancel()
	r, err := lc.LeaseTimeToLive(ctx, &pb.LeaseTimeToLiveRequest{ID: id})
	if err != nil {
		return D{"error": err.Error()}
	}
	return D{"granted_ttl": r.GrantedTTL, "ttl": r.TTL}
}

func get(key string) *mvccpb.KeyValue {
	ctx, cancel := ctxT(5 * time.Second)
	defer cancel()
	r, err := kvc.Range(ctx, &pb.RangeRequest{Key: []byte(key)})
	if err != nil {
		fatal("Range: %v", err)
	}
	if len(r.Kvs) == 0 {
		return nil
	}
	return r.Kvs[0]
}

func put(key, val string, lease int64) int64 {
	ctx, cancel := ctxT(5 * time.Second)
	defer cancel()
	r, err := kvc.Put(ctx, &pb.PutRequest{Key: []byte(key), Value: []byte(val), Lease: lease})
	if err != nil {
		fatal("Put: %v", err)
	}
	return r.Header.Revision
}

func curRev() int64 {
	ctx, cancel := ctxT(5 * time.Second)
	defer cancel()
	r, err := kvc.Range(ctx, &pb.RangeRequest{Key: []byte{0}, CountOnly: true})
	if err != nil {
		fatal("Range: %v", err)
	}
	return r.Header.Revision
}

func fatal(f string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "concprobe: "+f+"\n", a...)
	os.Exit(2)
}

type lockResult struct {
	resp *v3lockpb.LockResponse
	err  error
	at   time.Time
}

func lockAsync(ctx context.Context, name string, lease int64) <-chan lockResult {
	ch := make(chan lockResult, 1)
	go func() {
		r, err := lockc.Lock(ctx, &v3lockpb.LockRequest{Name: []byte(name), Lease: lease})
		ch <- lockResult{r, err, time.Now()}
	}()
	return ch
}

func returnedWithin(ch <-chan lockResult, d time.Duration) (lockResult, bool) {
	select {
	case r := <-ch:
		return r, true
	case <-time.After(d):
		return lockResult{}, false
	}
}

func lockDetail(r *v3lockpb.LockResponse) D {
	if r == nil {
		return D{}
	}
	return D{"key": nkey(r.Key), "header": hdr(r.Header)}
}

// ---- v3lock ----------------------------------------------------------------

func lockCases() {
	bg := context.Background()

	// Uncontended: key = name + "/" + lease in hex; header = the put's txn header.
	a := grant(30)
	r, err := lockc.Lock(bg, &v3lockpb.LockRequest{Name: []byte("lk1"), Lease: a})
	d := lockDetail(r)
	if r != nil {
		d["key_exact"] = string(r.Key) == fmt.Sprintf("lk1/%x", a)
		if kv := get(string(r.Key)); kv != nil {
			d["stored"] = kvd(kv)
		}
	}
	emit("lock/uncontended", err, d)
	aKey := []byte(fmt.Sprintf("lk1/%x", a))

	// Same lease again: re-entrant, no new revision.
	r, err = lockc.Lock(bg, &v3lockpb.LockRequest{Name: []byte("lk1"), Lease: a})
	emit("lock/same-lease-again", err, lockDetail(r))

	// Contended: B waits until A's key is deleted.
	b := grant(30)
	bch := lockAsync(bg, "lk1", b)
	_, early := returnedWithin(bch, 700*time.Millisecond)
	bKeyWhileWaiting := get(fmt.Sprintf("lk1/%x", b))
	ur, uerr := lockc.Unlock(bg, &v3lockpb.UnlockRequest{Key: aKey})
	d = D{"returned_before_unlock": early, "waiter_key_while_waiting": kvd(bKeyWhileWaiting)}
	if ur != nil {
		d["unlock_header"] = hdr(ur.Header)
	}
	emit("lock/unlock-holder", uerr, d)
	br, ok := returnedWithin(bch, 5*time.Second)
	d = D{"returned_after_unlock": ok}
	if ok {
		for k, v := range lockDetail(br.resp) {
			d[k] = v
		}
	}
	emit("lock/contended-waiter", br.err, d)
	bKey := []byte(fmt.Sprintf("lk1/%x", b))

	// Unlock of a key that does not exist / empty key.
	ur, uerr = lockc.Unlock(bg, &v3lockpb.UnlockRequest{Key: []byte("lk-none/1")})
	d = D{}
	if ur != nil {
		d["header"] = hdr(ur.Header)
	}
	emit("lock/unlock-missing-key", uerr, d)
	ur, uerr = lockc.Unlock(bg, &v3lockpb.UnlockRequest{})
	d = D{}
	if ur != nil {
		d["header"] = hdr(ur.Header)
	}
	emit("lock/unlock-empty-key", uerr, d)

	// Lease 0: the server grants a lease itself (60 s session TTL).
	r, err = lockc.Lock(bg, &v3lockpb.LockRequest{Name: []byte("lk2")})
	d = lockDetail(r)
	if r != nil {
		id := leaseOfKey(r.Key)
		d["key"] = nkey(r.Key)
		if id != 0 {
			lname(id)
			d["key"] = nkey(r.Key)
			d["server_granted_lease"] = ttlOf(id)
			if kv := get(string(r.Key)); kv != nil {
				d["stored"] = kvd(kv)
			}
		}
	}
	emit("lock/lease-zero", err, d)

	// A lease that does not exist.
	r, err = lockc.Lock(bg, &v3lockpb.LockRequest{Name: []byte("lk3"), Lease: 0x1234})
	emit("lock/lease-not-found", err, D{"key_exists_after": get("lk3/1234") != nil, "resp": lockDetail(r)})

	// Does Lock refresh (keep alive) the lease once? TTL 20, wait 3 s, lock, look.
	c := grant(20)
	time.Sleep(3 * time.Second)
	r, err = lockc.Lock(bg, &v3lockpb.LockRequest{Name: []byte("lk4"), Lease: c})
	time.Sleep(200 * time.Millisecond)
	tl := ttlOf(c)
	refreshed := false
	if t, ok := tl["ttl"].(int64); ok {
		refreshed = t > 17
	}
	emit("lock/keepalive-once", err, D{"ttl_after_lock_over_17": refreshed})

	// Caller gives up while waiting (deadline): is the waiter's key deleted?
	e := grant(30)
	ctx, cancel := ctxT(1 * time.Second)
	_, err = lockc.Lock(ctx, &v3lockpb.LockRequest{Name: []byte("lk1"), Lease: e})
	cancel()
	time.Sleep(500 * time.Millisecond)
	emit("lock/deadline-while-waiting", err, D{"waiter_key_exists_after": get(fmt.Sprintf("lk1/%x", e)) != nil})

	// The waiter's lease expires while it waits; then the holder unlocks.
	f := grant(2)
	fch := lockAsync(bg, "lk1", f)
	time.Sleep(5 * time.Second)
	fKey := fmt.Sprintf("lk1/%x", f)
	_, early = returnedWithin(fch, 10*time.Millisecond)
	waiterKeyGone := get(fKey) == nil
	ur, uerr = lockc.Unlock(bg, &v3lockpb.UnlockRequest{Key: bKey})
	fr, ok := returnedWithin(fch, 5*time.Second)
	d = D{"returned_before_unlock": early, "waiter_key_gone_before_unlock": waiterKeyGone,
		"returned_after_unlock": ok, "key_exists_after": get(fKey) != nil}
	if ok {
		for k, v := range lockDetail(fr.resp) {
			d[k] = v
		}
	}
	emit("lock/waiter-lease-expired", fr.err, d)

	// Any key under "<name>/" counts as a holder (here one without a lease).
	put("lk5/other", "x", 0)
	g := grant(30)
	ctx, cancel = ctxT(1 * time.Second)
	_, err = lockc.Lock(ctx, &v3lockpb.LockRequest{Name: []byte("lk5"), Lease: g})
	cancel()
	emit("lock/foreign-key-under-prefix-blocks", err, nil)

	// Empty name: key "/<lease hex>".
	h := grant(30)
	r, err = lockc.Lock(bg, &v3lockpb.LockRequest{Lease: h})
	emit("lock/empty-name", err, lockDetail(r))

	// Lock with the holder's lease revoked while a waiter waits.
	i := grant(30)
	j := grant(30)
	if _, err := lockc.Lock(bg, &v3lockpb.LockRequest{Name: []byte("lk6"), Lease: i}); err != nil {
		emit("lock/holder-lease-revoked", err, D{"step": "first Lock"})
		return
	}
	jch := lockAsync(bg, "lk6", j)
	time.Sleep(300 * time.Millisecond)
	rctx, rcancel := ctxT(5 * time.Second)
	rv, rerr := lc.LeaseRevoke(rctx, &pb.LeaseRevokeRequest{ID: i})
	rcancel()
	if rerr != nil {
		fatal("revoke: %v", rerr)
	}
	jr, ok := returnedWithin(jch, 5*time.Second)
	d = D{"returned": ok, "revoke_header_revision": rv.Header.Revision}
	if ok {
		for k, v := range lockDetail(jr.resp) {
			d[k] = v
		}
	}
	emit("lock/holder-lease-revoked", jr.err, d)
}

// ---- v3election ------------------------------------------------------------

type obsMsg struct {
	resp *v3electionpb.LeaderResponse
	err  error
}

func observe(ctx context.Context, name string) <-chan obsMsg {
	ch := make(chan obsMsg, 100)
	go func() {
		defer close(ch)
		s, err := elc.Observe(ctx, &v3electionpb.LeaderRequest{Name: []byte(name)})
		if err != nil {
			ch <- obsMsg{nil, err}
			return
		}
		for {
			r, err := s.Recv()
			ch <- obsMsg{r, err}
			if err != nil {
				return
			}
		}
	}()
	return ch
}

func drain(ch <-chan obsMsg, wait time.Duration) []D {
	var msgs []D
	deadline := time.After(wait)
	for {
		select {
		case m, ok := <-ch:
			if !ok {
				return msgs
			}
			if m.err != nil {
				st, _ := status.FromError(m.err)
				msgs = append(msgs, D{"end_code": st.Code().String(), "end_message": st.Message()})
				continue
			}
			msgs = append(msgs, D{"header": hdr(m.resp.Header), "kv": kvd(m.resp.Kv)})
		case <-deadline:
			return msgs
		}
	}
}

type campResult struct {
	resp *v3electionpb.CampaignResponse
	err  error
}

func campaignAsync(ctx context.Context, name string, lease int64, val string) <-chan campResult {
	ch := make(chan campResult, 1)
	go func() {
		r, err := elc.Campaign(ctx, &v3electionpb.CampaignRequest{Name: []byte(name), Lease: lease, Value: []byte(val)})
		ch <- campResult{r, err}
	}()
	return ch
}

func campDetail(r *v3electionpb.CampaignResponse) D {
	if r == nil {
		return D{}
	}
	return D{"header": hdr(r.Header), "leader": leaderKey(r.Leader)}
}

func electionCases() {
	bg := context.Background()

	_, err := elc.Leader(bg, &v3electionpb.LeaderRequest{Name: []byte("e1")})
	emit("election/leader-none", err, nil)

	octx, ocancel := context.WithCancel(bg)
	obs := observe(octx, "e1")
	time.Sleep(300 * time.Millisecond)
	emit("election/observe-no-leader-sends-nothing", nil, D{"messages": drain(obs, 500*time.Millisecond)})

	a := grant(30)
	cr, err := elc.Campaign(bg, &v3electionpb.CampaignRequest{Name: []byte("e1"), Lease: a, Value: []byte("a1")})
	d := campDetail(cr)
	if cr != nil && cr.Leader != nil {
		d["key_exact"] = string(cr.Leader.Key) == fmt.Sprintf("e1/%x", a)
	}
	emit("election/campaign-uncontended", err, d)
	aLeader := cr.GetLeader()
	if aLeader == nil {
		aLeader = &v3electionpb.LeaderKey{Name: []byte("e1"), Key: []byte(fmt.Sprintf("e1/%x", a)), Rev: 1, Lease: a}
	}
	emit("election/observe-after-first-campaign", nil, D{"messages": drain(obs, 500*time.Millisecond)})

	lr, err := elc.Leader(bg, &v3electionpb.LeaderRequest{Name: []byte("e1")})
	d = D{}
	if lr != nil {
		d = D{"header": hdr(lr.Header), "kv": kvd(lr.Kv)}
	}
	emit("election/leader", err, d)

	// Campaign again with the same lease, another value: no wait, value proclaimed.
	cr, err = elc.Campaign(bg, &v3electionpb.CampaignRequest{Name: []byte("e1"), Lease: a, Value: []byte("a2")})
	d = campDetail(cr)
	d["stored"] = kvd(get(fmt.Sprintf("e1/%x", a)))
	emit("election/campaign-same-lease-new-value", err, d)

	pr, err := elc.Proclaim(bg, &v3electionpb.ProclaimRequest{Leader: aLeader, Value: []byte("a3")})
	d = D{}
	if pr != nil {
		d["header"] = hdr(pr.Header)
	}
	d["stored"] = kvd(get(fmt.Sprintf("e1/%x", a)))
	emit("election/proclaim", err, d)
	emit("election/observe-after-proclaims", nil, D{"messages": drain(obs, 500*time.Millisecond)})

	bad := *aLeader
	bad.Rev += 1000
	_, err = elc.Proclaim(bg, &v3electionpb.ProclaimRequest{Leader: &bad, Value: []byte("x")})
	emit("election/proclaim-wrong-rev", err, nil)
	_, err = elc.Proclaim(bg, &v3electionpb.ProclaimRequest{Value: []byte("x")})
	emit("election/proclaim-no-leader-field", err, nil)
	_, err = elc.Proclaim(bg, &v3electionpb.ProclaimRequest{Leader: &v3electionpb.LeaderKey{Name: []byte("e1"), Key: []byte("e1/nope"), Rev: 5, Lease: a}, Value: []byte("x")})
	emit("election/proclaim-missing-key", err, D{"created": get("e1/nope") != nil})

	// A second campaigner waits.
	b := grant(30)
	bch := campaignAsync(bg, "e1", b, "b1")
	var early bool
	select {
	case <-bch:
		early = true
	case <-time.After(700 * time.Millisecond):
	}
	bStored := get(fmt.Sprintf("e1/%x", b))
	emit("election/campaign-contended-waits", nil, D{"returned_early": early, "waiter_key": kvd(bStored)})

	// Resign with a wrong rev: no error, nothing deleted.
	rr, err := elc.Resign(bg, &v3electionpb.ResignRequest{Leader: &bad})
	d = D{"leader_key_still_there": get(string(aLeader.Key)) != nil}
	if rr != nil {
		d["header"] = hdr(rr.Header)
	}
	emit("election/resign-wrong-rev", err, d)
	_, err = elc.Resign(bg, &v3electionpb.ResignRequest{})
	emit("election/resign-no-leader-field", err, nil)

	rr, err = elc.Resign(bg, &v3electionpb.ResignRequest{Leader: aLeader})
	d = D{"leader_key_gone": get(string(aLeader.Key)) == nil}
	if rr != nil {
		d["header"] = hdr(rr.Header)
	}
	emit("election/resign", err, d)
	var bLeader *v3electionpb.LeaderKey
	select {
	case res := <-bch:
		d = campDetail(res.resp)
		bLeader = res.resp.GetLeader()
		emit("election/campaign-contended-wins", res.err, d)
	case <-time.After(5 * time.Second):
		emit("election/campaign-contended-wins", nil, D{"returned": false})
	}
	emit("election/observe-after-resign", nil, D{"messages": drain(obs, 500*time.Millisecond)})

	// Resign again with the old (no longer held) key: OK.
	rr, err = elc.Resign(bg, &v3electionpb.ResignRequest{Leader: aLeader})
	d = D{}
	if rr != nil {
		d["header"] = hdr(rr.Header)
	}
	emit("election/resign-not-leader", err, d)

	// Caller gives up while waiting: its key is deleted (Resign).
	c := grant(30)
	ctx, cancel := ctxT(1 * time.Second)
	_, err = elc.Campaign(ctx, &v3electionpb.CampaignRequest{Name: []byte("e1"), Lease: c, Value: []byte("c1")})
	cancel()
	time.Sleep(500 * time.Millisecond)
	emit("election/campaign-deadline-while-waiting", err, D{"waiter_key_exists_after": get(fmt.Sprintf("e1/%x", c)) != nil})

	// Waiter's lease expires while waiting, then the leader resigns.
	f := grant(2)
	fch := campaignAsync(bg, "e1", f, "f1")
	time.Sleep(5 * time.Second)
	fGone := get(fmt.Sprintf("e1/%x", f)) == nil
	if bLeader != nil {
		elc.Resign(bg, &v3electionpb.ResignRequest{Leader: bLeader})
	}
	select {
	case res := <-fch:
		d = campDetail(res.resp)
		d["waiter_key_gone_before_resign"] = fGone
		emit("election/campaign-waiter-lease-expired", res.err, d)
	case <-time.After(5 * time.Second):
		emit("election/campaign-waiter-lease-expired", nil, D{"returned": false, "waiter_key_gone_before_resign": fGone})
	}
	emit("election/observe-after-last-resign", nil, D{"messages": drain(obs, 500*time.Millisecond)})
	_, err = elc.Leader(bg, &v3electionpb.LeaderRequest{Name: []byte("e1")})
	emit("election/leader-after-all-resigned", err, nil)
	ocancel()
	emit("election/observe-cancelled", nil, D{"messages": drain(obs, 1*time.Second)})

	// Lease 0: the server grants a 60 s lease.
	cr, err = elc.Campaign(bg, &v3electionpb.CampaignRequest{Name: []byte("e2"), Value: []byte("z")})
	d = campDetail(cr)
	if cr != nil && cr.Leader != nil {
		lname(cr.Leader.Lease)
		d = campDetail(cr)
		d["server_granted_lease"] = ttlOf(cr.Leader.Lease)
	}
	emit("election/campaign-lease-zero", err, d)
	e2 := cr.GetLeader()

	// Proclaim with lease 0 in the LeaderKey: the server grants another lease
	// and the put moves the key onto it.
	if e2 != nil {
		l0 := *e2
		l0.Lease = 0
		_, err = elc.Proclaim(bg, &v3electionpb.ProclaimRequest{Leader: &l0, Value: []byte("z2")})
		kv := get(string(e2.Key))
		if kv != nil {
			lname(kv.Lease)
		}
		emit("election/proclaim-lease-zero", err, D{"stored": kvd(kv), "lease_changed": kv != nil && kv.Lease != e2.Lease})
	}

	_, err = elc.Campaign(bg, &v3electionpb.CampaignRequest{Name: []byte("e3"), Lease: 0x1234, Value: []byte("z")})
	emit("election/campaign-lease-not-found", err, D{"key_exists_after": get("e3/1234") != nil})

	// Observe on an election whose leader exists: the first message is the
	// current leader with the Get's header.
	octx, ocancel = context.WithCancel(bg)
	obs = observe(octx, "e2")
	emit("election/observe-existing-leader", nil, D{"messages": drain(obs, 500*time.Millisecond)})
	ocancel()

	// Leader's key deleted by a plain Delete (not Resign) with a waiter: waiter wins.
	g := grant(30)
	h := grant(30)
	if _, err := elc.Campaign(bg, &v3electionpb.CampaignRequest{Name: []byte("e4"), Lease: g, Value: []byte("g")}); err != nil {
		emit("election/leader-lease-revoked-waiter-wins", err, D{"step": "first Campaign"})
		return
	}
	octx, ocancel = context.WithCancel(bg)
	obs = observe(octx, "e4")
	hch := campaignAsync(bg, "e4", h, "h")
	time.Sleep(300 * time.Millisecond)
	rctx, rcancel := ctxT(5 * time.Second)
	lc.LeaseRevoke(rctx, &pb.LeaseRevokeRequest{ID: g})
	rcancel()
	select {
	case res := <-hch:
		emit("election/leader-lease-revoked-waiter-wins", res.err, campDetail(res.resp))
	case <-time.After(5 * time.Second):
		emit("election/leader-lease-revoked-waiter-wins", nil, D{"returned": false})
	}
	emit("election/observe-leader-lease-revoked", nil, D{"messages": drain(obs, 500*time.Millisecond)})
	ocancel()
}

// ---- maintenance -----------------------------------------------------------

// event is one record of etcd's "key" bucket, rebuilt from the watch history.
type event struct {
	main, sub int64
	tomb      bool
	key       string
	kv        mvccpb.KeyValue // as stored: full kv for a put, {Key} for a delete
}

func revBytes(e event) []byte {
	b := make([]byte, 17, 18)
	binary.BigEndian.PutUint64(b, uint64(e.main))
	b[8] = '_'
	binary.BigEndian.PutUint64(b[9:], uint64(e.sub))
	if e.tomb {
		b = append(b, 't')
	}
	return b
}

// history reads every event from revision from through rev with a watch.
func history(from, rev int64) []event {
	ctx, cancel := ctxT(10 * time.Second)
	defer cancel()
	w, err := wc.Watch(ctx)
	if err != nil {
		fatal("watch: %v", err)
	}
	err = w.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{
		Key: []byte{0}, RangeEnd: []byte{0}, StartRevision: from}}})
	if err != nil {
		fatal("watch send: %v", err)
	}
	var evs []event
	var last, sub int64
	for {
		r, err := w.Recv()
		if err != nil {
			fatal("watch recv: %v", err)
		}
		if r.Canceled {
			fatal("watch canceled: %s (compact %d)", r.CancelReason, r.CompactRevision)
		}
		for _, ev := range r.Events {
			m := ev.Kv.ModRevision
			if m != last {
				last, sub = m, 0
			} else {
				sub++
			}
			e := event{main: m, sub: sub, key: string(ev.Kv.Key)}
			if ev.Type == mvccpb.DELETE {
				e.tomb = true
				e.kv = mvccpb.KeyValue{Key: ev.Kv.Key}
			} else {
				e.kv = *ev.Kv
			}
			evs = append(evs, e)
		}
		if last >= rev {
			return evs
		}
	}
}

// keep is etcd's treeIndex.Keep(at): per key, its newest revision <= at if that is a put.
func keep(evs []event, at int64) map[[2]int64]bool {
	latest := map[string]event{}
	for _, e := range evs {
		if e.main <= at {
			latest[e.key] = e
		}
	}
	k := map[[2]int64]bool{}
	for _, e := range latest {
		if !e.tomb {
			k[[2]int64{e.main, e.sub}] = true
		}
	}
	return k
}

// modelHashKV is etcd 3.4.23's HashByRev over the key bucket that a member has
// once a compaction at compactRev (-1: none) has finished.
func modelHashKV(evs []event, rev, compactRev int64) uint32 {
	var present []event
	kc := keep(evs, compactRev)
	for _, e := range evs {
		if e.main > compactRev || kc[[2]int64{e.main, e.sub}] {
			present = append(present, e)
		}
	}
	sort.Slice(present, func(i, j int) bool {
		if present[i].main != present[j].main {
			return present[i].main < present[j].main
		}
		return present[i].sub < present[j].sub
	})
	kr := keep(evs, rev)
	h := crc32.New(crc32.MakeTable(crc32.Castagnoli))
	h.Write([]byte("key"))
	for _, e := range present {
		if e.main > rev {
			continue
		}
		if e.main <= compactRev && len(kr) > 0 && !kr[[2]int64{e.main, e.sub}] {
			continue
		}
		v, err := e.kv.Marshal()
		if err != nil {
			fatal("marshal: %v", err)
		}
		h.Write(revBytes(e))
		h.Write(v)
	}
	return h.Sum32()
}

func hashKV(name string, rev int64, evs []event, compactRev int64, wantModel bool) {
	ctx, cancel := ctxT(5 * time.Second)
	defer cancel()
	r, err := mc.HashKV(ctx, &pb.HashKVRequest{Revision: rev})
	d := D{}
	if r != nil {
		d["header"] = hdr(r.Header)
		d["hash"] = r.Hash
		d["compact_revision"] = r.CompactRevision
		if wantModel {
			at := rev
			if at == 0 {
				at = r.Header.Revision
			}
			m := modelHashKV(evs, at, compactRev)
			d["model_hash"] = m
			d["model_matches"] = m == r.Hash
		}
	}
	emit(name, err, d)
}

func maintCases() {
	bg := context.Background()
	ctx, cancel := ctxT(5 * time.Second)
	defer cancel()

	st, err := mc.Status(ctx, &pb.StatusRequest{})
	var self uint64
	d := D{}
	if st != nil {
		self = st.Header.MemberId
		d = D{"header": hdr(st.Header), "version": st.Version, "dbSize_set": st.DbSize > 0,
			"leader_is_self": st.Leader == st.Header.MemberId, "raftIndex": st.RaftIndex,
			"raftTerm": st.RaftTerm, "raftAppliedIndex": st.RaftAppliedIndex, "errors": st.Errors,
			"dbSizeInUse_set": st.DbSizeInUse > 0, "isLearner": st.IsLearner}
	}
	emit("status", err, d)

	// A history with several subs per revision, deletes, re-creates, explicit lease IDs.
	const leaseID = 0x7e57
	if _, err := lc.LeaseGrant(ctx, &pb.LeaseGrantRequest{ID: leaseID, TTL: 3600}); err != nil {
		fatal("grant: %v", err)
	}
	lname(leaseID)
	base := curRev()
	put("h/a", "1", 0)
	put("h/b", "2", leaseID)
	put("h/a", "3", 0)
	_, err = kvc.Txn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{
		{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("h/c"), Value: []byte("4")}}},
		{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("h/d"), Value: []byte("5")}}},
		{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte("h/a")}}},
	}})
	if err != nil {
		fatal("txn: %v", err)
	}
	kvc.DeleteRange(ctx, &pb.DeleteRangeRequest{Key: []byte("h/b"), RangeEnd: []byte("h/d")})
	put("h/a", "6", 0)
	put("h/e", "", 0)
	kvc.DeleteRange(ctx, &pb.DeleteRangeRequest{Key: []byte("h/e")})
	cur := curRev()

	evs := history(1, cur)
	hashKV("hashkv/rev-0", 0, evs, -1, true)
	hashKV("hashkv/rev-current", cur, evs, -1, true)
	for r := base; r < cur; r++ {
		hashKV(fmt.Sprintf("hashkv/model@current-%d", cur-r), r, evs, -1, true)
	}
	hashKV("hashkv/rev-future", cur+1, evs, -1, false)
	hashKV("hashkv/rev-negative", -1, evs, -1, false)

	hr, err := mc.Hash(ctx, &pb.HashRequest{})
	d = D{}
	if hr != nil {
		d = D{"header": hdr(hr.Header), "hash_set": hr.Hash != 0}
	}
	emit("hash", err, d)

	// Compaction (physical: wait until it has finished).
	compactAt := cur - 3
	if _, err := kvc.Compact(ctx, &pb.CompactionRequest{Revision: compactAt, Physical: true}); err != nil {
		fatal("compact: %v", err)
	}
	hashKV("hashkv/after-compact/rev-0", 0, evs, compactAt, true)
	hashKV("hashkv/after-compact/below-compact", compactAt-1, evs, compactAt, false)
	hashKV("hashkv/after-compact/at-compact", compactAt, evs, compactAt, true)
	hashKV("hashkv/after-compact/compact+1", compactAt+1, evs, compactAt, true)

	// The "keep is empty" quirk: no key alive at the hashed revision.
	ctx2, cancel2 := ctxT(5 * time.Second)
	defer cancel2()
	prev := cur
	kvc.DeleteRange(ctx2, &pb.DeleteRangeRequest{Key: []byte{0}, RangeEnd: []byte{0}})
	cur = curRev()
	evs = append(evs, history(prev+1, cur)...)
	if _, err := kvc.Compact(ctx2, &pb.CompactionRequest{Revision: cur - 1, Physical: true}); err != nil {
		fatal("compact: %v", err)
	}
	hashKV("hashkv/nothing-alive/rev-0", 0, evs, cur-1, true)

	// MoveLeader.
	for _, c := range []struct {
		name   string
		target uint64
	}{{"moveleader/self", self}, {"moveleader/unknown-id", 0x1234}, {"moveleader/zero", 0}} {
		mctx, mcancel := ctxT(5 * time.Second)
		start := time.Now()
		_, err := mc.MoveLeader(mctx, &pb.MoveLeaderRequest{TargetID: c.target})
		mcancel()
		emit(c.name, err, D{"took_over_1s": time.Since(start) > time.Second})
	}
	_ = bg
}

// ---- main ------------------------------------------------------------------

func main() {
	if len(os.Args) == 3 && os.Args[1] == "freeports" {
		n, _ := strconv.Atoi(os.Args[2])
		var ls []net.Listener
		for i := 0; i < n; i++ {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				fatal("listen: %v", err)
			}
			ls = append(ls, l)
			fmt.Println(l.Addr().(*net.TCPAddr).Port)
		}
		for _, l := range ls {
			l.Close()
		}
		return
	}
	endpoint := flag.String("endpoint", "127.0.0.1:2379", "host:port of the server (fresh, single member)")
	only := flag.String("only", "maint,lock,election", "comma-separated groups to run, in this order")
	flag.Parse()

	ctx, cancel := ctxT(10 * time.Second)
	var err error
	conn, err = grpc.DialContext(ctx, *endpoint, grpc.WithInsecure(), grpc.WithBlock())
	cancel()
	if err != nil {
		fatal("dial %s: %v", *endpoint, err)
	}
	kvc, lc, mc, wc = pb.NewKVClient(conn), pb.NewLeaseClient(conn), pb.NewMaintenanceClient(conn), pb.NewWatchClient(conn)
	lockc, elc = v3lockpb.NewLockClient(conn), v3electionpb.NewElectionClient(conn)

	for _, g := range strings.Split(*only, ",") {
		switch g {
		case "lock":
			lockCases()
		case "election":
			electionCases()
		case "maint":
			maintCases()
		default:
			fatal("unknown group %q", g)
		}
	}
}
