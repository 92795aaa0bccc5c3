// etcd's client-visible error texts (etcdserver/api/v3rpc/rpctypes), as
// Status values. The core returns these; server/ maps Code -> gRPC code
// (see server/grpc_status.cc) and passes the message through unchanged.
#pragma once

#include "src/common/status.h"

namespace engram::kv::errors {

inline Status EmptyKey() { return Status::InvalidArgument("etcdserver: key is not provided"); }
inline Status KeyNotFound() { return Status::InvalidArgument("etcdserver: key not found"); }
inline Status ValueProvided() { return Status::InvalidArgument("etcdserver: value is provided"); }
inline Status LeaseProvided() { return Status::InvalidArgument("etcdserver: lease is provided"); }
inline Status TooManyOps() { return Status::InvalidArgument("etcdserver: too many operations in txn request"); }
inline Status DuplicateKey() { return Status::InvalidArgument("etcdserver: duplicate key given in txn request"); }
inline Status Compacted() { return Status::OutOfRange("etcdserver: mvcc: required revision has been compacted"); }
inline Status FutureRev() { return Status::OutOfRange("etcdserver: mvcc: required revision is a future revision"); }
inline Status NoSpace() { return Status::ResourceExhausted("etcdserver: mvcc: database space exceeded"); }
inline Status Corrupt() { return Status(Code::kDataLoss, "etcdserver: corrupt cluster"); }
inline Status LeaseNotFound() { return Status::NotFound("etcdserver: requested lease not found"); }
inline Status RequestTooLarge() { return Status::InvalidArgument("etcdserver: request is too large"); }
inline Status TooManyRequests() { return Status::ResourceExhausted("etcdserver: too many requests"); }
inline Status NoLeader() { return Status::Unavailable("etcdserver: no leader"); }
inline Status Stopped() { return Status::Unavailable("etcdserver: server stopped"); }
inline Status Timeout() { return Status::Unavailable("etcdserver: request timed out"); }
inline Status InvalidSortOption() { return Status::InvalidArgument("etcdserver: invalid sort option"); }

// mvcc returns "mvcc: ..." texts; the API adds etcd's "etcdserver: " prefix.
Status FromMvcc(const Status& s);

}  // namespace engram::kv::errors
