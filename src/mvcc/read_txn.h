// Store::ReadTxn: a pooled LMDB read transaction held under the store's
// shared env lock (store.cc, hash.cc). Internal to src/mvcc.
#pragma once

#include "src/mvcc/store.h"

namespace engram::mvcc {

class Store::ReadTxn {
 public:
  explicit ReadTxn(const Store* s) : s_(s) {}
  ~ReadTxn() {
    if (t_) {
      s_->ReleaseReadTxn(t_);
      s_->UnlockEnvShared(env_token_);
    }
  }
  ReadTxn(const ReadTxn&) = delete;
  ReadTxn& operator=(const ReadTxn&) = delete;
  Status Acquire() {
    int token = s_->LockEnvShared();
    Result<MDB_txn*> r = s_->AcquireReadTxn();
    if (!r.ok()) {
      s_->UnlockEnvShared(token);
      return r.status();
    }
    t_ = r.value();
    env_token_ = token;
    return Status::OK();
  }
  MDB_txn* get() const { return t_; }

 private:
  const Store* s_;
  MDB_txn* t_ = nullptr;
  int env_token_ = 0;
};

}  // namespace engram::mvcc
