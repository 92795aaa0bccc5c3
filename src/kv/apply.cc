#include "src/kv/apply.h"

#include <algorithm>
#include <optional>
#include <vector>

#include "src/common/log.h"
#include "src/kv/errors.h"

namespace engram::kv {
namespace {

using etcdserverpb::Compare;
using etcdserverpb::RangeRequest;
using etcdserverpb::RequestOp;
using etcdserverpb::ResponseOp;

void ToProto(mvcc::KeyValue&& kv, mvccpb::KeyValue* out, bool keys_only) {
  out->set_key(std::move(kv.key));
  if (!keys_only) out->set_value(std::move(kv.value));
  out->set_create_revision(kv.create_revision);
  out->set_mod_revision(kv.mod_revision);
  out->set_version(kv.version);
  out->set_lease(kv.lease);
}

// Range over any reader with Range(key, end, RangeOptions): a StoreView or a
// write txn (whose reads see its own earlier writes).
template <class Reader>
Status RangeImpl(Reader& rd, const RangeRequest& r, etcdserverpb::RangeResponse* resp) {
  const bool filtered = r.min_mod_revision() != 0 || r.max_mod_revision() != 0 || r.min_create_revision() != 0 ||
                        r.max_create_revision() != 0;
  int64_t limit = r.limit();
  if (r.sort_order() != RangeRequest::NONE || filtered) limit = 0;  // fetch all; sort and cut after
  if (limit > 0) limit++;                                            // one extra tells "more"
  mvcc::RangeOptions ro;
  ro.limit = limit;
  ro.rev = r.revision();
  ro.count_only = r.count_only();
  // Values are needed to sort by value even when keys_only.
  ro.keys_only = r.keys_only() && r.sort_target() != RangeRequest::VALUE;
  auto rr = rd.Range(r.key(), r.range_end(), ro);
  if (!rr.ok()) return errors::FromMvcc(rr.status());
  auto& kvs = rr->kvs;
  if (filtered) {
    kvs.erase(std::remove_if(kvs.begin(), kvs.end(),
                             [&](const mvcc::KeyValue& kv) {
                               return (r.max_mod_revision() != 0 && kv.mod_revision > r.max_mod_revision()) ||
                                      (r.min_mod_revision() != 0 && kv.mod_revision < r.min_mod_revision()) ||
                                      (r.max_create_revision() != 0 && kv.create_revision > r.max_create_revision()) ||
                                      (r.min_create_revision() != 0 && kv.create_revision < r.min_create_revision());
                             }),
              kvs.end());
  }
  auto order = r.sort_order();
  if (r.sort_target() != RangeRequest::KEY && order == RangeRequest::NONE) order = RangeRequest::ASCEND;
  if (order != RangeRequest::NONE) {
    auto less = [&](const mvcc::KeyValue& a, const mvcc::KeyValue& b) {
      switch (r.sort_target()) {
        case RangeRequest::VERSION: return a.version < b.version;
        case RangeRequest::CREATE: return a.create_revision < b.create_revision;
        case RangeRequest::MOD: return a.mod_revision < b.mod_revision;
        case RangeRequest::VALUE: return a.value < b.value;
        default: return a.key < b.key;
      }
    };
    if (order == RangeRequest::ASCEND) {
      std::stable_sort(kvs.begin(), kvs.end(), less);
    } else {
      std::stable_sort(kvs.begin(), kvs.end(), [&](const auto& a, const auto& b) { return less(b, a); });
    }
  }
  if (r.limit() > 0 && static_cast<int64_t>(kvs.size()) > r.limit()) {
    kvs.resize(static_cast<size_t>(r.limit()));
    resp->set_more(true);
  }
  resp->mutable_header()->set_revision(rr->rev);
  resp->set_count(rr->count);
  resp->mutable_kvs()->Reserve(static_cast<int>(kvs.size()));
  for (auto& kv : kvs) ToProto(std::move(kv), resp->add_kvs(), r.keys_only());
  return Status::OK();
}

int CompareInt(int64_t a, int64_t b) { return a < b ? -1 : (a > b ? 1 : 0); }

bool CompareKV(const Compare& c, const mvcc::KeyValue& kv) {
  int result = 0;
  switch (c.target()) {
    case Compare::VALUE: {
      const std::string& v = c.target_union_case() == Compare::kValue ? c.value() : std::string();
      int cmp = kv.value.compare(v);
      result = cmp < 0 ? -1 : (cmp > 0 ? 1 : 0);
      break;
    }
    case Compare::CREATE:
      result = CompareInt(kv.create_revision, c.target_union_case() == Compare::kCreateRevision ? c.create_revision() : 0);
      break;
    case Compare::MOD:
      result = CompareInt(kv.mod_revision, c.target_union_case() == Compare::kModRevision ? c.mod_revision() : 0);
      break;
    case Compare::VERSION:
      result = CompareInt(kv.version, c.target_union_case() == Compare::kVersion ? c.version() : 0);
      break;
    case Compare::LEASE:
      result = CompareInt(kv.lease, c.target_union_case() == Compare::kLease ? c.lease() : 0);
      break;
    default:
      break;
  }
  switch (c.result()) {
    case Compare::EQUAL: return result == 0;
    case Compare::NOT_EQUAL: return result != 0;
    case Compare::GREATER: return result > 0;
    case Compare::LESS: return result < 0;
    default: return true;
  }
}

template <class Reader>
bool ApplyCompare(Reader& rd, const Compare& c) {
  auto rr = rd.Range(c.key(), c.range_end(), mvcc::RangeOptions{});
  if (!rr.ok()) return false;
  if (rr->kvs.empty()) {
    // A missing key has no value to compare: value compares fail; the others
    // compare against zero (create/mod/version/lease of a missing key are 0).
    if (c.target() == Compare::VALUE) return false;
    return CompareKV(c, mvcc::KeyValue{});
  }
  for (const auto& kv : rr->kvs)
    if (!CompareKV(c, kv)) return false;
  return true;
}

// The branch taken by the txn and, depth-first, by every nested txn on that
// branch (etcd's compareToPath).
template <class Reader>
void CompareToPath(Reader& rd, const etcdserverpb::TxnRequest& t, std::vector<bool>* path) {
  bool ok = true;
  for (const auto& c : t.compare()) {
    if (!ApplyCompare(rd, c)) {
      ok = false;
      break;
    }
  }
  path->push_back(ok);
  const auto& ops = ok ? t.success() : t.failure();
  for (const auto& op : ops)
    if (op.request_case() == RequestOp::kRequestTxn) CompareToPath(rd, op.request_txn(), path);
}

// Checks done before a txn writes anything (etcd's checkRequests): puts that
// need a previous kv or a lease, ranges at a future or compacted revision.
template <class Reader>
Status CheckTxnRequests(Reader& rd, const etcdserverpb::TxnRequest& t, const std::vector<bool>& path, size_t* pos,
                        int64_t rev, int64_t compact_rev, bool is_write, const lease::Lessor* lessor) {
  bool ok = path[(*pos)++];
  const auto& ops = ok ? t.success() : t.failure();
  for (const auto& op : ops) {
    switch (op.request_case()) {
      case RequestOp::kRequestTxn:
        ENGRAM_RETURN_IF_ERROR(CheckTxnRequests(rd, op.request_txn(), path, pos, rev, compact_rev, is_write, lessor));
        break;
      case RequestOp::kRequestPut: {
        if (!is_write) break;
        const auto& p = op.request_put();
        if (p.ignore_value() || p.ignore_lease()) {
          auto rr = rd.Range(p.key(), "", mvcc::RangeOptions{});
          if (!rr.ok()) return errors::FromMvcc(rr.status());
          if (rr->kvs.empty()) return errors::KeyNotFound();
        }
        if (p.lease() != 0 && !(lessor && lessor->Exists(p.lease()))) return errors::LeaseNotFound();
        break;
      }
      case RequestOp::kRequestRange: {
        int64_t want = op.request_range().revision();
        if (want == 0) break;
        if (want > rev) return errors::FutureRev();
        if (want < compact_rev) return errors::Compacted();
        break;
      }
      default:
        break;
    }
  }
  return Status::OK();
}

// Executes the chosen branches. Ctx provides Range, and for writes Put/Delete.
template <class Ctx>
Status ExecTxnOps(Ctx& ctx, const etcdserverpb::TxnRequest& t, const std::vector<bool>& path, size_t* pos,
                  etcdserverpb::TxnResponse* resp) {
  bool ok = path[(*pos)++];
  resp->set_succeeded(ok);
  const auto& ops = ok ? t.success() : t.failure();
  resp->mutable_responses()->Reserve(ops.size());
  for (const auto& op : ops) {
    ResponseOp* ro = resp->add_responses();
    switch (op.request_case()) {
      case RequestOp::kRequestRange:
        ENGRAM_RETURN_IF_ERROR(RangeImpl(ctx, op.request_range(), ro->mutable_response_range()));
        break;
      case RequestOp::kRequestPut:
        ENGRAM_RETURN_IF_ERROR(ctx.Put(op.request_put(), ro->mutable_response_put()));
        break;
      case RequestOp::kRequestDeleteRange:
        ENGRAM_RETURN_IF_ERROR(ctx.Delete(op.request_delete_range(), ro->mutable_response_delete_range()));
        break;
      case RequestOp::kRequestTxn:
        // etcd gives a nested txn response an empty header (no revision).
        ro->mutable_response_txn()->mutable_header();
        ENGRAM_RETURN_IF_ERROR(ExecTxnOps(ctx, op.request_txn(), path, pos, ro->mutable_response_txn()));
        break;
      default:
        break;  // an empty op has an empty response, as in etcd
    }
  }
  return Status::OK();
}

Status PutInTxn(mvcc::Store::Batch::Txn& txn, const etcdserverpb::PutRequest& p, etcdserverpb::PutResponse* resp,
                lease::Lessor* lessor) {
  std::string_view value = p.value();
  int64_t lease = p.lease();
  if (lease != 0 && !(lessor && lessor->Exists(lease))) return errors::LeaseNotFound();
  std::optional<mvcc::KeyValue> prev;
  if (p.ignore_value() || p.ignore_lease()) {
    auto rr = txn.Range(p.key(), "", mvcc::RangeOptions{});
    if (!rr.ok()) return errors::FromMvcc(rr.status());
    if (rr->kvs.empty()) return errors::KeyNotFound();
    prev = std::move(rr->kvs[0]);
    if (p.ignore_value()) value = prev->value;
    if (p.ignore_lease()) lease = prev->lease;
  }
  // etcd reads the previous kv with one range (counted once) when prev_kv,
  // ignore_value or ignore_lease is set.
  if (p.prev_kv() && !(p.ignore_value() || p.ignore_lease())) txn.CountRange();
  std::optional<mvcc::KeyValue> replaced;
  ENGRAM_RETURN_IF_ERROR(txn.Put(p.key(), value, lease, p.prev_kv() ? &replaced : nullptr));
  if (lessor) lessor->Attach(p.key(), lease);  // 0 detaches it from any earlier lease
  if (p.prev_kv() && replaced) ToProto(std::move(*replaced), resp->mutable_prev_kv(), false);
  resp->mutable_header()->set_revision(txn.Rev());
  return Status::OK();
}

Status DeleteInTxn(mvcc::Store::Batch::Txn& txn, const etcdserverpb::DeleteRangeRequest& d,
                   etcdserverpb::DeleteRangeResponse* resp, lease::Lessor* lessor) {
  std::vector<mvcc::KeyValue> prev;
  if (d.prev_kv()) txn.CountRange();  // etcd reads the deleted kvs with one range
  auto n = txn.DeleteRange(d.key(), d.range_end(), d.prev_kv() ? &prev : nullptr);
  if (!n.ok()) return errors::FromMvcc(n.status());
  if (lessor && *n > 0) lessor->DetachRange(d.key(), d.range_end());
  resp->set_deleted(*n);
  for (auto& kv : prev) ToProto(std::move(kv), resp->add_prev_kvs(), false);
  resp->mutable_header()->set_revision(txn.Rev());
  return Status::OK();
}

// Adapts a write txn to the Ctx shape ExecTxnOps wants.
struct WriteCtx {
  mvcc::Store::Batch::Txn& txn;
  lease::Lessor* lessor;
  Result<mvcc::RangeResult> Range(std::string_view k, std::string_view e, const mvcc::RangeOptions& o) {
    return txn.Range(k, e, o);
  }
  Status Put(const etcdserverpb::PutRequest& p, etcdserverpb::PutResponse* r) { return PutInTxn(txn, p, r, lessor); }
  Status Delete(const etcdserverpb::DeleteRangeRequest& d, etcdserverpb::DeleteRangeResponse* r) {
    return DeleteInTxn(txn, d, r, lessor);
  }
};

struct ReadCtx {
  StoreView& view;
  int ranges = 0;  // range calls (each one counted by the store)
  Result<mvcc::RangeResult> Range(std::string_view k, std::string_view e, const mvcc::RangeOptions& o) {
    ranges++;
    return view.Range(k, e, o);
  }
  Status Put(const etcdserverpb::PutRequest&, etcdserverpb::PutResponse*) {
    ENGRAM_PANIC("put in a read-only txn");
  }
  Status Delete(const etcdserverpb::DeleteRangeRequest&, etcdserverpb::DeleteRangeResponse*) {
    ENGRAM_PANIC("delete in a read-only txn");
  }
};

}  // namespace

Status ExecRange(StoreView& view, const RangeRequest& r, etcdserverpb::RangeResponse* resp) {
  return RangeImpl(view, r, resp);
}

Status ExecReadTxn(StoreView& view, const etcdserverpb::TxnRequest& t, etcdserverpb::TxnResponse* resp) {
  ReadCtx ctx{view};
  std::vector<bool> path;
  CompareToPath(ctx, t, &path);
  size_t pos = 0;
  ENGRAM_RETURN_IF_ERROR(CheckTxnRequests(ctx, t, path, &pos, view.Rev(), view.CompactRev(), false, nullptr));
  pos = 0;
  ENGRAM_RETURN_IF_ERROR(ExecTxnOps(ctx, t, path, &pos, resp));
  view.CountReadTxn(ctx.ranges);  // one mvcc read transaction (etcd_mvcc_txn_total)
  resp->mutable_header()->set_revision(view.Rev());
  return Status::OK();
}

Status ApplyPut(mvcc::Store::Batch& b, const etcdserverpb::PutRequest& p, etcdserverpb::PutResponse* resp,
                lease::Lessor* lessor) {
  auto txn = b.Begin();
  Status s = PutInTxn(txn, p, resp, lessor);
  txn.End();
  return s;
}

Status ApplyDeleteRange(mvcc::Store::Batch& b, const etcdserverpb::DeleteRangeRequest& d,
                        etcdserverpb::DeleteRangeResponse* resp, lease::Lessor* lessor) {
  auto txn = b.Begin();
  Status s = DeleteInTxn(txn, d, resp, lessor);
  txn.End();
  return s;
}

Status ApplyTxn(mvcc::Store::Batch& b, const etcdserverpb::TxnRequest& t, etcdserverpb::TxnResponse* resp,
                lease::Lessor* lessor) {
  auto txn = b.Begin();
  WriteCtx ctx{txn, lessor};
  std::vector<bool> path;
  CompareToPath(ctx, t, &path);
  size_t pos = 0;
  Status s = CheckTxnRequests(ctx, t, path, &pos, txn.Rev(), b.CompactRev(), true, lessor);
  // etcd evaluates the compares and checks in a read transaction of their
  // own, then writes in another: counted as two (etcd_mvcc_txn_total).
  txn.EndReadPhase();
  if (s.ok()) {
    pos = 0;
    s = ExecTxnOps(ctx, t, path, &pos, resp);
    // Checks above make op failures impossible, except the backend refusing
    // a write (a full LMDB map: the caller raises NOSPACE and applies the
    // batch again); anything else is a broken invariant (etcd panics too:
    // "unexpected error during txn").
    if (!s.ok() && s.code() != Code::kResourceExhausted) {
      ENGRAM_PANIC("unexpected error during txn", {{"error", s.ToString()}});
    }
  }
  txn.End();
  if (s.ok()) resp->mutable_header()->set_revision(txn.Rev());
  return s;
}

Status ApplyCompaction(mvcc::Store::Batch& b, const mvcc::Store& store, const etcdserverpb::CompactionRequest& r,
                       etcdserverpb::CompactionResponse* resp) {
  Status s = b.Compact(r.revision());
  if (!s.ok()) return errors::FromMvcc(s);
  {
    auto t = b.Begin();  // etcd reads the header revision with one range
    t.CountRange();
  }
  resp->mutable_header()->set_revision(b.Rev());
  return Status::OK();
}

}  // namespace engram::kv
