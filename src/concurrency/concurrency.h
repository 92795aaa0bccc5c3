// Locks and elections served by the server: etcd's v3lock and v3election
// (etcdserver/api/v3lock, v3election), which run clientv3/concurrency's
// Mutex and Election over the member's own KV, lease and watch. Here the same
// algorithms run over KvServer's asynchronous calls and an internal watch
// stream, without gRPC (server/concurrency_service.cc puts the services on
// top). docs/design/concurrency.md has etcd's behaviour this follows.
//
// Keys (etcd's):
//   - a lock waiter or election candidate is the key "<name>/<lease hex>"
//     (lower-case hex, no padding) attached to its lease; the holder/leader is
//     the key with the smallest create revision under "<name>/";
//   - Lock/Campaign put the key if it does not exist (or reuse it: same
//     lease, same name), then wait until every key under the prefix created
//     before theirs is deleted (waitDeletes: the newest older key, watched
//     for its delete, over and over).
//   - The request's lease is used as is; lease 0 gets a new lease of 60 s
//     granted by the server and never kept alive by it (etcd's session is
//     orphaned at once).
//   - A Lock whose wait fails (cancelled, server stopping) deletes its key
//     again; a cancelled Campaign resigns (deletes its key if it is still the
//     one it created).
//
// Thread-safety: every method may be called from any thread; callbacks run
// on KvServer's threads (apply, reader) or the watch notifier thread, never
// under a lock of this class. Stop() cancels every wait and returns once none
// is running (before KvServer is stopped).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "etcdserverpb/rpc.pb.h"
#include "mvccpb/kv.pb.h"
#include "src/common/status.h"
#include "src/kv/server.h"

namespace engram::concurrency {

// etcd's errors (clientv3/concurrency and the v3election server).
inline Status ErrElectionNotLeader() { return Status::Unknown("election: not leader"); }
inline Status ErrElectionNoLeader() { return Status::Unknown("election: no leader"); }
inline Status ErrMissingLeaderKey() { return Status::Unknown("\"leader\" field must be provided"); }
inline Status ErrLostWatcher() { return Status::Unknown("lost watcher waiting for delete"); }
inline Status ErrCanceled() { return Status::Cancelled("context canceled"); }

// A running wait (Lock, Campaign, Observe); Cancel ends it (its callback then
// reports Cancelled). Safe to call at any time, more than once.
class Handle {
 public:
  virtual ~Handle() = default;
  virtual void Cancel() = 0;
};

struct LeaderKey {
  std::string name, key;
  int64_t rev = 0, lease = 0;
};

class Service {
 public:
  explicit Service(kv::KvServer* kv);
  ~Service();  // Stop()s

  using HeaderDone = std::function<void(const Status&, const etcdserverpb::ResponseHeader&)>;
  using LockDone = std::function<void(const Status&, const etcdserverpb::ResponseHeader&, const std::string& key)>;
  using CampaignDone =
      std::function<void(const Status&, const etcdserverpb::ResponseHeader&, const LeaderKey& leader)>;
  using LeaderDone =
      std::function<void(const Status&, const etcdserverpb::ResponseHeader&, const mvccpb::KeyValue& kv)>;
  // One observation: the leader's key-value (every change of it, then the
  // next leader's). Runs on one thread at a time, in order.
  using OnLeader = std::function<void(const etcdserverpb::ResponseHeader&, const mvccpb::KeyValue& kv)>;

  std::shared_ptr<Handle> Lock(const std::string& name, int64_t lease, LockDone done);
  void Unlock(const std::string& key, HeaderDone done);
  std::shared_ptr<Handle> Campaign(const std::string& name, int64_t lease, const std::string& value,
                                   CampaignDone done);
  void Proclaim(const LeaderKey& leader, const std::string& value, HeaderDone done);
  void Leader(const std::string& name, LeaderDone done);
  // done runs once when the observation ends (cancelled, or an error).
  std::shared_ptr<Handle> Observe(const std::string& name, OnLeader on_leader, std::function<void(const Status&)> done);
  void Resign(const LeaderKey& leader, HeaderDone done);

  // Cancels every running wait and waits (up to a few seconds) until they
  // all ended. Later calls fail with "etcdserver: server stopped".
  void Stop();

  kv::KvServer* kv() const { return kv_; }
  void ProclaimWithLease(const LeaderKey& leader, const std::string& value, HeaderDone done);

  // Bookkeeping of running waits (internal; public for the .cc's classes).
  struct Op;
  bool Track(const std::shared_ptr<Op>& op);
  void Untrack(const Op* op);

 private:
  kv::KvServer* const kv_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::unordered_map<const Op*, std::weak_ptr<Op>> live_;  // guarded by mu_
  bool stopped_ = false;                                    // guarded by mu_
};

// "<prefix>" -> the end of the range of every key starting with it (etcd's
// clientv3.GetPrefixRangeEnd).
std::string PrefixEnd(const std::string& prefix);

}  // namespace engram::concurrency
