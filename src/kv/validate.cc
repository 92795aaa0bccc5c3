#include "src/kv/validate.h"

#include <set>
#include <string>
#include <vector>

#include "src/kv/errors.h"

namespace engram::kv {
namespace {

using etcdserverpb::RequestOp;

Status CheckRequestOp(const RequestOp& op, int max_txn_ops) {
  switch (op.request_case()) {
    case RequestOp::kRequestRange: return CheckRange(op.request_range());
    case RequestOp::kRequestPut: return CheckPut(op.request_put());
    case RequestOp::kRequestDeleteRange: return CheckDelete(op.request_delete_range());
    case RequestOp::kRequestTxn: return CheckTxn(op.request_txn(), max_txn_ops);
    default: return errors::KeyNotFound();  // an empty op, as etcd answers it
  }
}

// Deletes as intervals [begin, end) where an empty end means +infinity (etcd's
// "affine" string intervals); a single-key delete is the point [k, k+"\0").
struct Interval {
  std::string begin, end;
  bool Contains(const std::string& k) const { return begin <= k && (end.empty() || k < end); }
};

struct Sets {
  std::set<std::string> puts;
  std::vector<Interval> dels;
  bool DelsContain(const std::string& k) const {
    for (const auto& iv : dels)
      if (iv.Contains(k)) return true;
    return false;
  }
};

Status CheckIntervals(const google::protobuf::RepeatedPtrField<RequestOp>& reqs, Sets* out) {
  Sets s;
  for (const auto& req : reqs) {
    if (req.request_case() != RequestOp::kRequestDeleteRange) continue;
    const auto& d = req.request_delete_range();
    if (!d.range_end().empty()) {
      s.dels.push_back({d.key(), d.range_end()});
    } else {
      s.dels.push_back({d.key(), d.key() + std::string(1, '\0')});
    }
  }
  for (const auto& req : reqs) {
    if (req.request_case() != RequestOp::kRequestTxn) continue;
    Sets then_s, else_s;
    ENGRAM_RETURN_IF_ERROR(CheckIntervals(req.request_txn().success(), &then_s));
    ENGRAM_RETURN_IF_ERROR(CheckIntervals(req.request_txn().failure(), &else_s));
    for (const auto& k : then_s.puts) {
      if (s.puts.count(k) || s.DelsContain(k)) return errors::DuplicateKey();
      s.puts.insert(k);
    }
    for (const auto& k : else_s.puts) {
      // A key put in both branches of the same nested txn is fine: they exclude each other.
      if (s.puts.count(k) && !then_s.puts.count(k)) return errors::DuplicateKey();
      if (s.DelsContain(k)) return errors::DuplicateKey();
      s.puts.insert(k);
    }
    // The union of the children's deletes is clipped to ["\0", +inf) in etcd, i.e. kept whole.
    s.dels.insert(s.dels.end(), then_s.dels.begin(), then_s.dels.end());
    s.dels.insert(s.dels.end(), else_s.dels.begin(), else_s.dels.end());
  }
  for (const auto& req : reqs) {
    if (req.request_case() != RequestOp::kRequestPut) continue;
    const std::string& k = req.request_put().key();
    if (s.puts.count(k) || s.DelsContain(k)) return errors::DuplicateKey();
    s.puts.insert(k);
  }
  *out = std::move(s);
  return Status::OK();
}

Status CheckTxnOps(const etcdserverpb::TxnRequest& r, int max_txn_ops) {
  int opc = r.compare_size();
  if (opc < r.success_size()) opc = r.success_size();
  if (opc < r.failure_size()) opc = r.failure_size();
  if (opc > max_txn_ops) return errors::TooManyOps();
  for (const auto& c : r.compare())
    if (c.key().empty()) return errors::EmptyKey();
  for (const auto& u : r.success()) ENGRAM_RETURN_IF_ERROR(CheckRequestOp(u, max_txn_ops - opc));
  for (const auto& u : r.failure()) ENGRAM_RETURN_IF_ERROR(CheckRequestOp(u, max_txn_ops - opc));
  return Status::OK();
}

bool AllRanges(const google::protobuf::RepeatedPtrField<RequestOp>& ops, bool need_serializable) {
  for (const auto& op : ops) {
    switch (op.request_case()) {
      case RequestOp::kRequestRange:
        if (need_serializable && !op.request_range().serializable()) return false;
        break;
      case RequestOp::kRequestTxn:
        if (!AllRanges(op.request_txn().success(), need_serializable) ||
            !AllRanges(op.request_txn().failure(), need_serializable))
          return false;
        break;
      case RequestOp::kRequestPut:
      case RequestOp::kRequestDeleteRange:
        return false;
      default:
        break;
    }
  }
  return true;
}

}  // namespace

Status CheckRange(const etcdserverpb::RangeRequest& r) {
  if (r.key().empty()) return errors::EmptyKey();
  return Status::OK();
}

Status CheckPut(const etcdserverpb::PutRequest& r) {
  if (r.key().empty()) return errors::EmptyKey();
  if (r.ignore_value() && !r.value().empty()) return errors::ValueProvided();
  if (r.ignore_lease() && r.lease() != 0) return errors::LeaseProvided();
  return Status::OK();
}

Status CheckDelete(const etcdserverpb::DeleteRangeRequest& r) {
  if (r.key().empty()) return errors::EmptyKey();
  return Status::OK();
}

Status CheckTxn(const etcdserverpb::TxnRequest& r, int max_txn_ops) {
  ENGRAM_RETURN_IF_ERROR(CheckTxnOps(r, max_txn_ops));
  Sets s;
  ENGRAM_RETURN_IF_ERROR(CheckIntervals(r.success(), &s));
  ENGRAM_RETURN_IF_ERROR(CheckIntervals(r.failure(), &s));
  return Status::OK();
}

bool IsTxnReadOnly(const etcdserverpb::TxnRequest& r) {
  return AllRanges(r.success(), false) && AllRanges(r.failure(), false);
}

bool IsTxnSerializable(const etcdserverpb::TxnRequest& r) {
  return AllRanges(r.success(), true) && AllRanges(r.failure(), true);
}

}  // namespace engram::kv
