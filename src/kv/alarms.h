// Alarms (etcd's v3alarm.AlarmStore): member id + alarm type pairs that change
// the member's behaviour until disarmed.
//
//   NOSPACE  raised when a write request would take the backend past
//            --quota-backend-bytes; while active, Put, Txns containing a Put
//            (and later LeaseGrant) fail at apply with "etcdserver: mvcc:
//            database space exceeded" (etcd's applierV3Capped); reads,
//            deletes and compaction keep working.
//   CORRUPT  while active, every write request and compaction fails at apply
//            with "etcdserver: corrupt cluster" (etcd's applierV3Corrupt).
//
// Alarms change only through raft (an engrampb.InternalRequest `alarm` entry),
// in log order, in the apply stage (server.h); the set is stored in the MVCC meta under
// kAlarmsMetaName in the same LMDB transaction as the entry's apply, and
// loaded at open. Reads (Get, Active, Has) may come from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "etcdserverpb/rpc.pb.h"
#include "src/common/status.h"
#include "src/mvcc/store.h"

namespace engram::kv {

// Meta name of the alarm set: an etcdserverpb.AlarmResponse holding only
// `alarms` (src/mvcc/FORMAT.md). Absent = no alarms.
inline constexpr const char* kAlarmsMetaName = "alarms";

struct AlarmInfo {
  uint64_t member_id = 0;
  etcdserverpb::AlarmType type = etcdserverpb::NONE;
  bool operator==(const AlarmInfo&) const = default;
};

// etcd's enum names: "NONE", "NOSPACE", "CORRUPT" (another value: its number).
std::string AlarmTypeName(etcdserverpb::AlarmType t);
// An AlarmMember as gogoproto's String() prints it, e.g. in Status.errors and
// etcdctl's output: "memberID:13668033151171901709 alarm:NOSPACE " (zero
// fields left out, a space after each field).
std::string AlarmText(const AlarmInfo& a);

class AlarmStore {
 public:
  // Loads the persisted set (Corruption if it does not decode).
  Status Load(const mvcc::Store& store);

  // ---- apply thread, inside the apply batch ----
  // Adds (member, type) unless present. Returns the stored alarm and whether
  // it was added.
  AlarmInfo Activate(mvcc::Store::Batch& b, uint64_t member, etcdserverpb::AlarmType t, bool* added);
  // The active alarms, to put back with Restore when the batch that changed
  // them is aborted (apply thread).
  std::vector<AlarmInfo> Snapshot() const;
  void Restore(std::vector<AlarmInfo> active);
  // Removes (member, type); nullopt if it was not active.
  std::optional<AlarmInfo> Deactivate(mvcc::Store::Batch& b, uint64_t member, etcdserverpb::AlarmType t);

  // ---- any thread ----
  // Alarms of type t, all of them for NONE, in activation order.
  std::vector<AlarmInfo> Get(etcdserverpb::AlarmType t = etcdserverpb::NONE) const;
  // Lock-free checks for the write path.
  bool NoSpace() const { return nospace_.load(std::memory_order_acquire); }
  bool Corrupt() const { return corrupt_.load(std::memory_order_acquire); }
  // Every (member, type) pair active at some point since open, with whether
  // it is active now (etcd_debugging_server_alarms keeps such series at 0).
  struct Seen {
    AlarmInfo alarm;
    bool active = false;
  };
  std::vector<Seen> SeenAlarms() const;

 private:
  void Persist(mvcc::Store::Batch& b);  // mu_ held
  void Refresh();                       // mu_ held

  mutable std::mutex mu_;
  std::vector<AlarmInfo> alarms_;  // guarded by mu_, activation order
  std::vector<AlarmInfo> seen_;    // guarded by mu_
  std::atomic<bool> nospace_{false}, corrupt_{false};
};

// etcd's quota cost of a request (etcdserver/quota.go): 256 bytes of key
// overhead + key + value per put; a txn costs its larger branch's puts; a
// request that puts nothing costs 0 (and always passes the quota).
inline constexpr int64_t kQuotaKvOverhead = 256;
inline constexpr int64_t kQuotaLeaseOverhead = 64;
int64_t QuotaCost(const etcdserverpb::PutRequest& r);
int64_t QuotaCost(const etcdserverpb::TxnRequest& r);

}  // namespace engram::kv
