// Lessor: the leases of one member, as etcd's lease/lessor.go keeps them,
// without I/O, threads or a clock (STYLE practice 1): time comes in as a
// steady_clock time point, persistence and proposals are the caller's.
//
// Model (etcd's):
//   - A lease has an ID (> 0), a granted TTL in seconds (raised to the
//     member's minimum TTL, etcd's 3 x election timeout / 2 rounded up) and
//     an expiry time, plus the keys attached to it. A key is attached to at
//     most one lease.
//   - Grant, Revoke, Attach and Detach change the replicated state: they run
//     in the apply stage (kv/server.h), in log order, inside an apply batch (BeginBatch /
//     EndBatch): if the batch's backend commit fails, Rollback undoes them.
//   - Renew (keepalive), TimeToLive and Leases are local reads of the
//     leader's state; expiry is local too: Expired lists leases past their
//     expiry for the server to propose revokes (never a local delete), at
//     most `limit` at a time, each once until Unmark or its revoke.
//   - Promote (at start; with clustering also when this member becomes
//     leader, which is not wired yet) gives every lease its full TTL again,
//     as etcd does, so leases do not expire en masse at boot, or, with
//     checkpointing, the remaining TTL last checkpointed.
//   - Checkpointing (etcd's --experimental-enable-lease-checkpoint, with
//     persistence as etcd 3.6 always does): a lease whose TTL is longer than
//     the checkpoint interval is scheduled for a checkpoint every interval;
//     DueCheckpoints lists the due ones with their remaining TTL (rounded
//     up) for the server to propose, and the applied Checkpoint records the
//     remaining TTL (replicated, persisted by the caller), which the next
//     Promote uses. A keepalive of a lease with a recorded remaining TTL
//     must first have a checkpoint of 0 applied (NeedsCheckpointReset), or a
//     restart after it would bring the old remaining TTL back.
//
// Thread-safety: every method is thread-safe (one mutex; never held across a
// callback).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "src/common/probe.h"
#include "src/common/status.h"

namespace engram::lease {

using Clock = std::chrono::steady_clock;

// etcd's MaxLeaseTTL (9,000,000,000 s).
inline constexpr int64_t kMaxLeaseTTL = 9000000000LL;

// etcd's lease errors, as clients see them.
inline Status LeaseNotFound() { return Status::NotFound("etcdserver: requested lease not found"); }
inline Status LeaseExists() { return Status::FailedPrecondition("etcdserver: lease already exists"); }
inline Status LeaseTTLTooLarge() { return Status::OutOfRange("etcdserver: too large lease TTL"); }

// etcd's lease metric families (exporter/ publishes them).
struct LeaseProbe {
  Counter granted;   // etcd_debugging_lease_granted_total
  Counter revoked;   // etcd_debugging_lease_revoked_total
  Counter renewed;   // etcd_debugging_lease_renewed_total
  Counter expired;   // etcd_debugging_server_lease_expired_total: expiry revokes that succeeded (the server counts)
  Histogram ttl_seconds{Histogram::Exponential(1, 2, 24)};  // etcd_debugging_lease_ttl_total (B10)
};

struct LeaseInfo {
  int64_t id = 0;
  int64_t granted_ttl = 0;    // seconds
  int64_t remaining_ttl = 0;  // seconds, truncated toward zero (etcd); <= 0 once expired
  std::vector<std::string> keys;  // sorted
};

class Lessor {
 public:
  // checkpoint_interval zero: checkpointing off.
  explicit Lessor(int64_t min_ttl_seconds, LeaseProbe* probe = nullptr,
                  Clock::duration checkpoint_interval = Clock::duration::zero());

  // ---- replicated state (apply thread) ----
  void BeginBatch();
  void EndBatch();    // the batch committed: forget the undo log
  void Rollback();    // the batch did not commit: undo its changes

  // Grants id with ttl (raised to the minimum), expiring ttl seconds after
  // now. Errors: LeaseExists, LeaseTTLTooLarge. *granted gets the TTL used.
  Status Grant(int64_t id, int64_t ttl, Clock::time_point now, int64_t* granted);
  // Removes the lease; *keys gets the keys that were attached (sorted), for
  // the caller to delete in one revision. Error: LeaseNotFound.
  Status Revoke(int64_t id, std::vector<std::string>* keys);
  bool Exists(int64_t id) const;
  // Attaches key to lease id (detaching it from any other lease); id 0
  // detaches. The lease must exist (checked by the caller with Exists).
  void Attach(const std::string& key, int64_t id);
  // Detaches every key in [key, end) (etcd's range rules: end "" = key
  // alone, "\0" = every key >= key): the keys a DeleteRange removed.
  void DetachRange(const std::string& key, const std::string& end);
  // The lease a key is attached to (0 if none).
  int64_t LeaseOf(const std::string& key) const;

  // ---- local state ----
  // Keepalive: the lease expires ttl seconds from now again; returns the
  // granted TTL. Error: LeaseNotFound.
  Result<int64_t> Renew(int64_t id, Clock::time_point now);
  Result<LeaseInfo> TimeToLive(int64_t id, Clock::time_point now, bool with_keys) const;
  std::vector<int64_t> Leases() const;  // the soonest to expire first (etcd's order)
  // Up to limit leases whose expiry is at or before now and that are not
  // already marked; marks them (their revoke is being proposed).
  std::vector<int64_t> Expired(Clock::time_point now, size_t limit);
  // The revoke proposal of a marked lease failed: it may be listed again
  // from retry_at on (etcd retries after the request timeout).
  void Unmark(int64_t id, Clock::time_point retry_at);
  // A lease loaded from the store at start (no metrics counted): its TTL
  // (raised to the minimum, as etcd) and remaining TTL of the last applied
  // checkpoint (0: none).
  void Restore(int64_t id, int64_t ttl, int64_t remaining, Clock::time_point now);
  // Every lease expires after now plus its remaining TTL if one was
  // checkpointed, else its full TTL (start, promotion).
  void Promote(Clock::time_point now);

  // ---- checkpoints ----
  bool checkpointing() const { return checkpoint_interval_ > Clock::duration::zero(); }
  // Up to limit leases whose checkpoint is due at now, with their remaining
  // TTL in seconds rounded up (etcd); leases expired or with remaining >=
  // TTL are skipped. Each is listed once until its checkpoint is applied.
  std::vector<std::pair<int64_t, int64_t>> DueCheckpoints(Clock::time_point now, size_t limit);
  // Applied (replicated): records id's remaining TTL (0 clears it) and
  // schedules its next checkpoint. Returns false for an unknown lease
  // (ignored, as etcd).
  bool Checkpoint(int64_t id, int64_t remaining, Clock::time_point now);
  // The lease has a recorded remaining TTL: a renew must first apply a
  // checkpoint of 0.
  bool NeedsCheckpointReset(int64_t id) const;
  // The granted TTL and the recorded remaining TTL (for persisting).
  std::pair<int64_t, int64_t> Persisted(int64_t id) const;
  int64_t min_ttl() const { return min_ttl_; }
  size_t size() const;

 private:
  struct Lease {
    int64_t ttl = 0;
    Clock::time_point expiry;
    std::set<std::string> keys;
    bool revoking = false;  // listed by Expired, revoke in flight
    Clock::time_point retry_at;  // not listed again before this (a failed revoke)
    int64_t remaining = 0;       // seconds, from the last applied checkpoint (0: none)
    Clock::time_point checkpoint_at = Clock::time_point::max();  // next due checkpoint (max: none)
  };
  void AttachLocked(const std::string& key, int64_t id);
  void ScheduleCheckpointLocked(Lease& l, Clock::time_point now);

  const int64_t min_ttl_;
  const Clock::duration checkpoint_interval_;
  LeaseProbe own_probe_;
  LeaseProbe* const probe_;
  mutable std::mutex mu_;
  std::unordered_map<int64_t, Lease> leases_;  // guarded by mu_
  std::map<std::string, int64_t> key_lease_;  // guarded by mu_: key -> lease (sorted for ranges)
  bool in_batch_ = false;                      // guarded by mu_
  std::vector<std::function<void()>> undo_;    // guarded by mu_: run in reverse by Rollback
};

}  // namespace engram::lease
