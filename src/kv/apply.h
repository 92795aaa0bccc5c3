// The state machine: how committed requests change the MVCC store, and how
// ranges and transactions are evaluated (etcd's applierV3backend semantics:
// range filtering/sorting/limit, txn compares and branch selection, nested
// txns, put with prev_kv/ignore_value/ignore_lease, delete with prev_kv).
//
// Threading: ApplyWrite runs in the apply stage only (server.h: the apply
// thread, or a writer applying inline; one at a time). ExecRange/ExecReadTxn
// run on any thread against a fixed-revision read view of the store.
#pragma once

#include <cstdint>
#include <string_view>

#include "etcdserverpb/rpc.pb.h"
#include "src/common/status.h"
#include "src/lease/lessor.h"
#include "src/mvcc/store.h"

namespace engram::kv {

// Read view of the store: every read through one view sees one revision, and
// every response built from it carries that revision in its header (etcd's
// read txn: data and header.revision come from the same snapshot).
//   rev > 0: pinned at rev (a read-only Txn: all its ranges at one revision).
//   rev = 0: a single read at the store's revision when it runs; the store
//            picks that revision under its lock and reports it (RangeResult.rev).
// A read at an explicit older revision reports the view's revision, as etcd's
// header does. A pinned view whose revision a compaction passed fails with
// "compacted"; callers that did not ask for that revision read again with a
// new view (KvServer::Txn).
class StoreView {
 public:
  StoreView(const mvcc::Store* store, int64_t rev) : store_(store), rev_(rev) {}
  Result<mvcc::RangeResult> Range(std::string_view key, std::string_view end, mvcc::RangeOptions o) {
    if (rev_ == 0) return store_->Range(key, end, o);
    if (o.rev > rev_) return Status::OutOfRange("mvcc: required revision is a future revision");
    if (o.rev <= 0) o.rev = rev_;
    auto r = store_->Range(key, end, o);
    if (r.ok()) r->rev = rev_;
    return r;
  }
  int64_t Rev() const { return rev_; }
  int64_t CompactRev() const { return store_->CompactRev(); }
  void CountReadTxn(int ranges) const { store_->CountReadTxn(ranges); }

 private:
  const mvcc::Store* store_;
  int64_t rev_;
};

// Serves a Range request from a read view. Fills everything but the header's
// cluster/member/term (the caller's), including header.revision.
Status ExecRange(StoreView& view, const etcdserverpb::RangeRequest& r, etcdserverpb::RangeResponse* resp);
// Serves a read-only Txn from a read view.
Status ExecReadTxn(StoreView& view, const etcdserverpb::TxnRequest& r, etcdserverpb::TxnResponse* resp);

// Applies one write request inside the apply batch. Returns the request's
// outcome (an apply-time error such as "requested lease not found" is a value,
// not a crash); response fields are filled only on success.
// lessor: the member's leases (puts attach keys, deletes detach them, a put
// with an unknown lease fails with "requested lease not found"); may be null
// (no lease exists).
Status ApplyPut(mvcc::Store::Batch& b, const etcdserverpb::PutRequest& r, etcdserverpb::PutResponse* resp,
                lease::Lessor* lessor = nullptr);
Status ApplyDeleteRange(mvcc::Store::Batch& b, const etcdserverpb::DeleteRangeRequest& r,
                        etcdserverpb::DeleteRangeResponse* resp, lease::Lessor* lessor = nullptr);
Status ApplyTxn(mvcc::Store::Batch& b, const etcdserverpb::TxnRequest& r, etcdserverpb::TxnResponse* resp,
                lease::Lessor* lessor = nullptr);
Status ApplyCompaction(mvcc::Store::Batch& b, const mvcc::Store& store, const etcdserverpb::CompactionRequest& r,
                       etcdserverpb::CompactionResponse* resp);

}  // namespace engram::kv
