// Request validation before anything is proposed: etcd's checks in
// v3rpc/key.go (empty key, value/lease provided with ignore_*, too many txn
// operations, duplicate keys in a txn branch), with etcd's error texts.
#pragma once

#include "etcdserverpb/rpc.pb.h"
#include "src/common/status.h"

namespace engram::kv {

Status CheckRange(const etcdserverpb::RangeRequest& r);
Status CheckPut(const etcdserverpb::PutRequest& r);
Status CheckDelete(const etcdserverpb::DeleteRangeRequest& r);
// Includes the duplicate-key interval check of both branches.
Status CheckTxn(const etcdserverpb::TxnRequest& r, int max_txn_ops);

// A txn whose operations (in both branches, recursively) are all ranges.
bool IsTxnReadOnly(const etcdserverpb::TxnRequest& r);
// A read-only txn whose ranges are all serializable.
bool IsTxnSerializable(const etcdserverpb::TxnRequest& r);

}  // namespace engram::kv
