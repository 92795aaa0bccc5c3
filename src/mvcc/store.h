// Engram's MVCC key-value store: etcd's mvcc semantics on LMDB.
//
// Model (etcd's mvcc is the spec). Every write request (a Put, a DeleteRange
// that deletes something, a Txn that writes) gets one new main revision =
// current + 1; its changes get sub revisions 0, 1, 2... A request that writes
// nothing does not advance the revision. The store starts at revision 1,
// empty. A delete writes a tombstone and ends the key's generation; the next
// put starts a new one (version 1, new create_revision). Compact(rev) drops
// every revision not needed to read at revisions >= rev.
//
// Disk format (full description: src/mvcc/FORMAT.md). One LMDB environment,
// the file <dir>/db (+ <dir>/db-lock), two named databases:
//   "key":  17-byte key = big-endian main | big-endian sub | 'p' (put) or
//           't' (tombstone) -> record = u8 format 1 | create | mod | version |
//           lease (fixed64 LE each) | fixed32 LE key length | key | value.
//   "meta": name -> bytes. The store's own names start with "mvcc.":
//           mvcc.format = "engram-mvcc-1", mvcc.consistent_index and
//           mvcc.compact_rev (8 bytes big-endian). Other names are the server's.
// The consistent (applied raft) index is written in the same LMDB transaction
// as the data it covers. With Options::no_sync the environment is opened with
// MDB_NOSYNC: a commit survives a process crash but not an OS crash until the
// next Sync(); the raft WAL is the durability point and replays entries after
// the durable consistent index. The key index is rebuilt at Open by scanning
// "key" in revision order.
//
// Threads and locks:
//   - Reads (Range, Scan, ScanEvents, Rev, CompactRev, ConsistentIndex, GetMeta, Size,
//     CopyTo) may run on any thread, concurrently with each other and with the
//     writer. A read sees the last committed batch: the revision R published
//     after the LMDB commit. Readers hold mu_ shared only while they pick the
//     revisions they need at R and open their LMDB read transaction, then read
//     values without the lock.
//   - Writes (BeginBatch and everything on a Batch) come from ONE writer
//     thread (the apply loop): LMDB ties its write lock to the thread that
//     began the write transaction. The writer changes the key index in place
//     under mu_ exclusive, one short critical section per change (per
//     DeleteRange, per 10k keys of a compaction), never across an LMDB commit
//     or fsync; revisions above R stay invisible to readers. Sync() may be
//     called from any thread.
//   - Compaction: the batch commits first, then the compact revision is
//     published; the index compaction and the removal of old revisions from
//     LMDB run later, in bounded steps the writer interleaves with its batches
//     (CompactStep: 10k index keys under mu_, or compaction_batch_limit
//     revisions per LMDB write transaction), so writes wait at most one step,
//     as etcd's scheduled compaction yields between batches. A reader that
//     picked its revisions before holds an LMDB read transaction opened before
//     the removal, so it still finds them. A crash mid-way is finished at the
//     next Open.
//   - mu_ prefers writers, so a stream of readers cannot starve the apply loop.
//   - Defragmentation (Defrag, writer thread, no batch open) swaps the LMDB
//     environment. Every use of it outside the writer thread (a read
//     transaction for its whole life, Sync, CopyTo) holds env_mu_ shared;
//     Defrag copies the file while readers go on, then holds env_mu_ exclusive
//     only to close the environment, rename the copy over the file and reopen.
//     env_mu_ prefers writers too; a thread already holding it shared (e.g. a
//     read inside a Scan callback) re-enters without waiting. FORMAT.md has the
//     crash-safety argument.
//   - Inside a batch, requests see the batch's uncommitted writes (the writer
//     reads the index without the lock and values through its write txn).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <pthread.h>

#include "src/common/probe.h"
#include "src/common/status.h"
#include "src/mvcc/key_index.h"
#include "src/mvcc/prefix_stats.h"

struct MDB_env;
struct MDB_txn;

namespace engram::mvcc {

struct KeyValue {
  std::string key, value;
  int64_t create_revision = 0, mod_revision = 0, version = 0, lease = 0;
  bool operator==(const KeyValue&) const = default;
};

// A key-value pair read in place from an LMDB page: valid only inside the
// Scan callback that received it.
struct KeyValueRef {
  std::string_view key, value;
  int64_t create_revision = 0, mod_revision = 0, version = 0, lease = 0;
  KeyValue ToKeyValue(bool keys_only = false) const {
    return KeyValue{std::string(key), keys_only ? std::string() : std::string(value), create_revision,
                    mod_revision, version, lease};
// mvccpb.KeyValue bytes as etcd marshals them (HashKV); a delete is the key alone.
std::string EtcdKeyValueBytes(const KeyValueRef& kv, bool tombstone);
  }
};
// Return false to stop the scan.
using ScanFn = std::function<bool(const KeyValueRef&)>;

// One change written by a request (etcd's mvccpb.Event), for watchers. A
// delete's kv is the tombstone: key and mod_revision only.
struct Event {
  bool tombstone = false;
  KeyValue kv;
};
// Visits one change of the history (ref valid only inside the call); return
// false to stop.
using EventScanFn = std::function<bool(const KeyValueRef& kv, bool tombstone)>;

struct RangeOptions {
  int64_t limit = 0;  // 0: no limit (count still counts every key)
  int64_t rev = 0;    // 0 (or negative): current
  bool keys_only = false;
  bool count_only = false;
};

struct RangeResult {
  std::vector<KeyValue> kvs;  // sorted by key
  int64_t count = 0;          // keys in range at that revision, ignoring limit
  int64_t rev = 0;            // the store's current revision (not the requested one)
};

// Read by the exporter (etcd's metric names in parentheses).
struct MvccProbe {
  Histogram commit_seconds{BucketsB1()};  // each Sync(): the commit that reaches the disk
                                          // (etcd_disk_backend_commit_duration_seconds)
  Counter range_total, put_total, delete_total, txn_total;  // etcd_mvcc_{range,put,delete,txn}_total
  Gauge keys_total;                       // live keys (etcd_debugging_mvcc_keys_total)
  Gauge current_revision, compact_revision;
  Gauge db_total_size_bytes, db_total_size_in_use_bytes;  // updated by Size() (and so by each commit)
  Counter total_put_size_bytes;           // key+value bytes put (etcd_debugging_mvcc_total_put_size_in_bytes)
  Counter compaction_keys_total;          // revisions removed (etcd_debugging_mvcc_db_compaction_keys_total)
  // Compaction timings (etcd_debugging_mvcc_{index_compaction_pause,db_compaction_pause,
  // db_compaction_total}_duration_milliseconds) and the unix time of the last one.
  Histogram index_compaction_pause_ms{Histogram::Exponential(0.5, 2, 14)};  // B7
  Histogram db_compaction_pause_ms{Histogram::Exponential(1, 2, 13)};       // B8: each removal chunk
  Histogram db_compaction_total_ms{Histogram::Exponential(100, 2, 14)};     // B9
  Gauge db_compaction_last;               // unix seconds (etcd_debugging_mvcc_db_compaction_last)
  Gauge open_read_txns;                   // LMDB read txns in use (etcd_mvcc_db_open_read_transactions)
};

struct Options {
  std::string dir;  // <data-dir>/member/snap; the LMDB file is <dir>/db (created with the dir if absent)
  size_t map_size = 64ull << 30;  // LMDB map size: the largest the file may grow
  MvccProbe* probe = nullptr;     // optional; must outlive the store
  bool no_sync = true;            // MDB_NOSYNC: commits are durable only after Sync()
  int prefix_depth = 0;           // per-prefix live key/byte stats (prefix_stats.h); 0: off
  unsigned max_readers = 512;     // LMDB reader slots (concurrent read transactions)
  // Revisions removed per LMDB write transaction by a compaction step
  // (etcd's --experimental-compaction-batch-limit, 1000).
  size_t compaction_batch_limit = 1000;
};

class Store {
 public:
  class Batch;

  // Opens (creating if absent) the store in options.dir and rebuilds the key
  // index. Finishes a compaction interrupted by a crash.
  static Result<std::unique_ptr<Store>> Open(const Options& options);
  // Every Batch must be gone before the store is destroyed.
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // ---- reads: any thread, concurrently with the writer ----

  // Errors: OutOfRange "mvcc: required revision is a future revision" /
  // "mvcc: required revision has been compacted"; Unavailable if LMDB has no
  // free reader slot.
  Result<RangeResult> Range(std::string_view key, std::string_view end, const RangeOptions& opts) const;
  // Visits every kv in the range at rev (0 = current) in key order without
  // materializing a result (for callers that sort or filter everything).
  // Returns the store's current revision, as RangeResult::rev. Same errors.
  Result<int64_t> Scan(std::string_view key, std::string_view end, int64_t rev, const ScanFn& fn) const;
  // History by revision (for watchers): visits every change whose main
  // revision is in [from_rev, to_rev] (to_rev <= 0: current) in revision
  // order, puts and tombstones alike, by a cursor walk of the "key" DB.
  // Returns the last revision covered, min(to_rev, current). Error: OutOfRange
  // "mvcc: required revision has been compacted" if from_rev < CompactRev()
  // (revisions from the compact revision on are complete, as in etcd, except
  // tombstones at exactly the compact revision); Unavailable as Range.
  Result<int64_t> ScanEvents(int64_t from_rev, int64_t to_rev, const EventScanFn& fn) const;

  // etcd's HashKV (mvcc HashByRev, docs/design/maintenance.md): CRC-32C over
  // "key" and, in revision order, every record with main revision <= rev in
  // etcd's encoding (17-byte revision key + 't' for a delete; the marshalled
  // mvccpb.KeyValue), records at or below the compact revision only if a
  // compaction at rev would keep them. So members with the same history hash
  // the same, and equal to etcd for that history. rev 0 = current.
  // compact_revision is -1 if the store was never compacted. Errors as
  // Range (3.4.23: rev <= compact revision is "compacted").
  struct HashKVResult {
    uint32_t hash = 0;
    int64_t compact_revision = -1;
    int64_t revision = 0;       // the store's revision (header)
    int64_t hash_revision = 0;  // the revision hashed
  };
  Result<HashKVResult> HashKV(int64_t rev) const;
  // Maintenance.Hash: CRC-32C of the whole backend's contents (every record
  // of the key db and every meta entry but the consistent index, in key
  // order). Engram's own encoding, so only Engram members compare equal.
  Result<uint32_t> HashAll() const;

  // A read-only Txn of `ranges` range calls (each counted by Range/Scan) is
  // one mvcc transaction: etcd_mvcc_txn_total counts it when ranges > 1.
  void CountReadTxn(int ranges) const {
    if (ranges > 1) probe_->txn_total.Inc();
  }

  int64_t Rev() const;         // last committed revision
  int64_t CompactRev() const;  // 0 until the first compaction
  uint64_t ConsistentIndex() const;  // of the last committed batch
  // Last committed value of a meta name ("mvcc.*" names are readable too).
  std::optional<std::string> GetMeta(std::string_view name) const;
  // Every meta value whose name starts with prefix, in name order.
  Result<std::vector<std::pair<std::string, std::string>>> ScanMeta(std::string_view prefix) const;

  struct SizeInfo {
    int64_t total_bytes;   // file high-water mark: (last page + 1) * page size
    int64_t in_use_bytes;  // pages in the B-trees (incl. the free list's own tree) + 2 meta pages
  };
  // O(1) (reads LMDB's tree statistics). Also sets the probe's size gauges.
  SizeInfo Size() const;
  // Free pages by walking LMDB's free list (slow; for tests and diagnostics).
  int64_t FreePagesForTesting() const;

  // Live keys and bytes per key prefix (Options::prefix_depth). Any thread.
  const PrefixStats& prefix_stats() const { return prefix_stats_; }

  // Writes a consistent copy of the last committed state to path (a new file),
  // with MDB_CP_COMPACT when compact. Any thread; for snapshots.
  Status CopyTo(const std::string& path, bool compact) const;

  // The file size (SizeInfo::total_bytes) as of the last commit, without
  // locks or LMDB calls: for the backend quota check on every write request.
  int64_t FileBytes() const { return file_bytes_.load(std::memory_order_acquire); }

  // Defragments the file (etcd's backend.Defrag): writes a compacted copy of
  // the last committed state (MDB_CP_COMPACT: no free pages, pages renumbered)
  // to <dir>/db.defrag.tmp, fsyncs it, then closes the environment, renames the
  // copy over <dir>/db, fsyncs the directory and reopens. Readers keep going
  // during the copy and wait only for the swap; the key index, revisions,
  // consistent index and meta values are unchanged. Writer thread only, with
  // no batch open (the apply loop is paused while it runs). A failure before
  // the rename leaves the store as it was; failing to reopen panics.
  Status Defrag();

  // ---- writes: ONE writer thread (the apply loop) ----

  // Starts an LMDB write transaction covering several requests (group apply).
  // At most one batch at a time. Panics if LMDB cannot start a transaction.
  std::unique_ptr<Batch> BeginBatch();
  // Makes everything committed so far durable (mdb_env_sync force). Read
  // ConsistentIndex() before calling: entries up to it are durable afterwards.
  // Any thread. Observed in probe->commit_seconds.
  Status Sync();

  // ---- compaction steps: writer thread, with no batch open ----
  // Whether a committed compaction still has index keys to compact or
  // revisions to remove.
  bool CompactionPending() const { return job_ != nullptr; }
  // Runs one bounded step of the pending compaction. Returns whether more
  // remains.
  bool CompactStep();
  // Runs every remaining step now (before a defragmentation, or a newer
  // compaction).
  void FinishCompaction();

 private:
  explicit Store(const Options& options);
  Status OpenEnv();
  Status CreateEnv();             // mdb_env_create + settings + mdb_env_open
  Status ReopenEnvAfterDefrag();  // CreateEnv + DBI handles (read-only txn)
  Status Rebuild();
  void UpdateFileBytes();  // writer thread (or env_mu_ exclusive)
  // env_mu_ shared, re-entrant per thread; the token tells Unlock what to undo.
  int LockEnvShared() const;
  void UnlockEnvShared(int token) const;
  Status RebuildPrefixStats(int64_t rev);  // metrics (prefix_stats.h)
  // Compacts the index at rev, then removes the dropped revisions from LMDB in
  // ascending order, in steps (compaction.cc). Writer thread.
  void CompactIndexAndDelete(int64_t rev, bool at_open);
  // Publishes rev as the compact revision and queues its steps.
  void StartCompaction(int64_t rev, bool at_open);
  struct CompactJob;
  std::unique_ptr<CompactJob> job_;  // writer thread only
  int64_t queued_compact_ = 0;       // writer thread only: the next job's revision (published already)
  void UpdateSizeGauges(const SizeInfo& s) const;

  // Read transactions: a pool of reset handles, renewed on use.
  Result<MDB_txn*> AcquireReadTxn() const;
  void ReleaseReadTxn(MDB_txn* txn) const;
  class ReadTxn;

  // Collects the visible revisions in the range at rev (caller holds what
  // is needed to read index_). Returns the count of keys in range.
  int64_t Collect(std::string_view key, std::string_view end, int64_t rev, int64_t limit, bool count_only,
                  std::vector<Revision>* out) const;
  // Reads the records of revs (puts) from txn into out.
  void Fetch(MDB_txn* txn, const std::vector<Revision>& revs, bool keys_only, std::vector<KeyValue>* out) const;
  bool FetchEach(MDB_txn* txn, const std::vector<Revision>& revs, const ScanFn& fn) const;
  // Reads one put record; panics if the index points at a missing record.
  void ReadRecord(MDB_txn* txn, const Revision& r, KeyValueRef* out) const;

  // Writer-preferring reader-writer lock over index_ and compact_rev_ changes.
  class RwLock {
   public:
    RwLock();
    ~RwLock();
    void lock() { pthread_rwlock_wrlock(&l_); }
    void unlock() { pthread_rwlock_unlock(&l_); }
    void lock_shared() { pthread_rwlock_rdlock(&l_); }
    void unlock_shared() { pthread_rwlock_unlock(&l_); }

   private:
    pthread_rwlock_t l_;
  };

  const Options opts_;
  MvccProbe own_probe_;
  MvccProbe* const probe_;
  MDB_env* env_ = nullptr;
  unsigned int key_dbi_ = 0;   // MDB_dbi of "key"
  unsigned int meta_dbi_ = 0;  // MDB_dbi of "meta"

  mutable RwLock mu_;
  // Guards env_ (and the DBI handles) against Defrag's swap: see "Threads and
  // locks" above.
  mutable RwLock env_mu_;
  std::atomic<int64_t> file_bytes_{0};
  // GUARDED_BY(mu_): readers hold mu_ shared; the writer thread changes it
  // holding mu_ exclusive and reads it without the lock (it is the only writer).
  KeyIndex index_;
  std::atomic<int64_t> rev_{1};            // published after each commit (release)
  std::atomic<int64_t> compact_rev_{0};    // changed under mu_ exclusive
  // False until the first compaction is recorded: etcd starts with compact
  // revision -1, so the very first Compact(0) succeeds.
  std::atomic<bool> compacted_once_{false};
  std::atomic<uint64_t> consistent_index_{0};

  mutable std::mutex pool_mu_;
  mutable std::vector<MDB_txn*> pool_;  // GUARDED_BY(pool_mu_): reset read txns

  PrefixStats prefix_stats_;  // own lock; updated by the writer at commit

  // Writer thread only.
  Batch* active_batch_ = nullptr;
  int64_t live_keys_ = 0;
};

// One LMDB write transaction covering several write requests. Writer thread
// only. Destroying an uncommitted batch aborts it. After any error from Put,
// DeleteRange, Compact or Commit the batch must be aborted (LMDB refuses to
// go on after a failed write, e.g. MDB_MAP_FULL).
class Store::Batch {
 public:
  // One write request. Reads inside it see its own earlier writes and those of
  // earlier requests in the batch. End() finishes it (the destructor ends it
  // too); if it wrote anything the batch's revision advanced by one. One Txn
  // at a time per batch.
  class Txn {
   public:
    Txn(Txn&& o) noexcept;
    Txn& operator=(Txn&&) = delete;
    ~Txn();

    // rev 0 = this request's view: the batch's revision, or Rev() once this
    // request wrote. RangeResult::rev is that view revision.
    Result<RangeResult> Range(std::string_view key, std::string_view end, const RangeOptions& opts);
    Result<int64_t> Scan(std::string_view key, std::string_view end, int64_t rev, const ScanFn& fn);
    // Returns the previous kv if any (when prev is not null).
    Status Put(std::string_view key, std::string_view value, int64_t lease, std::optional<KeyValue>* prev);
    // Deletes keys in range; returns how many were deleted and fills prev kvs
    // (in key order) if asked.
    Result<int64_t> DeleteRange(std::string_view key, std::string_view end, std::vector<KeyValue>* prev);
    // Revision this request's writes get / got (the current one if it wrote
    // nothing). Still valid after End().
    int64_t Rev() const;
    void End();
    // etcd's mvcc counters (etcd_mvcc_*_total) count per mvcc transaction:
    // CountRange counts a range etcd's applier makes where Engram needs none
    // (a prev_kv lookup); EndReadPhase closes the counted transaction so far
    // (a write Txn's compares and checks are their own mvcc transaction in
    // etcd) and starts a new one.
    void CountRange() { ranges_++; }
    void EndReadPhase();

   private:
    friend class Batch;
    explicit Txn(Batch* b);
    void FlushCounters();
    Batch* b_;
    int64_t main_;
    uint32_t sub_ = 0;
    uint32_t ranges_ = 0, puts_ = 0, deletes_ = 0;
    uint64_t put_bytes_ = 0;
  };

  ~Batch();
  Batch(const Batch&) = delete;
  Batch& operator=(const Batch&) = delete;

  Txn Begin();
  // The first write error of this batch (OK if none): once set, LMDB refuses
  // every further read and write in the batch, so the caller must stop and
  // abort (Commit returns it).
  const Status& status() const { return sticky_; }
  // Compacts at rev (not a write request: the revision does not move).
  // Errors: OutOfRange "mvcc: required revision has been compacted" if
  // rev <= the compact revision, "...is a future revision" if rev > the
  // batch's revision. The new compact revision is written in this batch; the
  // index compaction and the removal of old revisions run in Commit, after the
  // batch's data is committed, in bounded LMDB transactions.
  Status Compact(int64_t rev);
  // Small named values stored with the batch ("mvcc." prefix reserved).
  void PutMeta(std::string_view name, std::string_view value);
  void DeleteMeta(std::string_view name);
  // Reads a meta value as this batch sees it (including its own PutMeta).
  std::optional<std::string> GetMeta(std::string_view name) const;
  // The batch's revision (last revision written in it, or the store's).
  int64_t Rev() const { return rev_; }
  // The compact revision as this batch sees it (including its own Compact).
  int64_t CompactRev() const;
  // Records every change the batch's requests make, in revision order, as
  // Events (for watchers; off by default). Take them after Commit.
  void RecordEvents(bool on) { record_events_ = on; }
  std::vector<Event> TakeEvents() { return std::move(events_); }

  // Stores the consistent index, commits the LMDB transaction, then publishes
  // the new revision to readers (release ordering), then runs a pending
  // compaction. On a commit error the batch is rolled back (index included).
  Status Commit(uint64_t consistent_index);
  // Drops every change of the batch, in LMDB and in the key index.
  void Abort();

 private:
  friend class Store;
  Batch(Store* s, MDB_txn* txn);
  void Undo();
  void Finish();

  struct UndoEntry {
    KeyIndex::Map::iterator it;
    int64_t create, version;
    bool inserted;  // the batch inserted the key into the index
  };

  Store* const s_;
  MDB_txn* txn_;
  int64_t rev_;               // revision after the requests ended so far
  bool in_txn_ = false;
  int64_t pending_compact_ = 0;
  bool compact_pending_set_ = false;
  int64_t live_delta_ = 0;
  PrefixStats::Delta prefix_delta_;  // applied to the store's PrefixStats at commit
  Status sticky_;             // first write error: Commit refuses and aborts
  bool record_events_ = false;
  std::vector<Event> events_;  // when record_events_
  std::vector<UndoEntry> undo_;
};

}  // namespace engram::mvcc
