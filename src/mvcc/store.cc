#include "src/mvcc/store.h"
#include "src/mvcc/read_txn.h"

#include <fcntl.h>
#include <lmdb.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <mutex>
#include <shared_mutex>

#include "src/common/failpoint.h"
#include "src/common/log.h"
#include "src/mvcc/compaction_job.h"
#include "src/mvcc/format.h"

namespace engram::mvcc {
namespace {

constexpr size_t kReadPoolMax = 64;       // reset read txns kept for reuse
constexpr const char* kFutureRev = "mvcc: required revision is a future revision";
constexpr const char* kCompacted = "mvcc: required revision has been compacted";

Status MdbError(const char* what, int rc) {
  std::string m = std::string("mvcc: ") + what + ": " + mdb_strerror(rc);
  switch (rc) {
    case MDB_MAP_FULL:
      return Status::ResourceExhausted(std::move(m));
    case MDB_READERS_FULL:
      return Status::Unavailable(std::move(m));
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID:
    case MDB_VERSION_MISMATCH:
      return Status::Corruption(std::move(m));
    default:
      return Status::IOError(std::move(m));
  }
}

MDB_val Val(std::string_view s) { return MDB_val{s.size(), const_cast<char*>(s.data())}; }

// Reads an 8-byte big-endian meta number; false if the size is wrong.
bool DecodeMetaU64(const MDB_val& v, uint64_t* out) {
  if (v.mv_size != 8) return false;
  *out = DecodeBig64(static_cast<const char*>(v.mv_data));
  return true;
}

}  // namespace

// ---------------------------------------------------------------------------
// Locks and read transactions

Store::RwLock::RwLock() {
  pthread_rwlockattr_t a;
  pthread_rwlockattr_init(&a);
  // glibc's default prefers readers; a steady stream of Range calls would then
  // starve the apply loop.
  pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  pthread_rwlock_init(&l_, &a);
  pthread_rwlockattr_destroy(&a);
}

Store::RwLock::~RwLock() { pthread_rwlock_destroy(&l_); }

// env_mu_ held shared by this thread: for which store, and how many times
// (a read inside a Scan callback re-enters instead of queueing behind a
// waiting Defrag, which would deadlock).
namespace {
thread_local const void* tl_env_store = nullptr;
thread_local int tl_env_depth = 0;
constexpr int kEnvCounted = 1;    // counted in tl_env_depth (the last one out unlocks)
constexpr int kEnvUntracked = 2;  // this thread tracks another store: plain lock
}  // namespace

int Store::LockEnvShared() const {
  if (tl_env_depth > 0 && tl_env_store == this) {
    tl_env_depth++;
    return kEnvCounted;
  }
  env_mu_.lock_shared();
  if (tl_env_depth > 0) return kEnvUntracked;
  tl_env_store = this;
  tl_env_depth = 1;
  return kEnvCounted;
}

void Store::UnlockEnvShared(int token) const {
  if (token == kEnvUntracked) {
    env_mu_.unlock_shared();
  } else if (token == kEnvCounted && --tl_env_depth == 0) {
    tl_env_store = nullptr;
    env_mu_.unlock_shared();
  }
}

// RAII handle on a pooled read transaction. Holds env_mu_ shared while it has
// a transaction (Defrag must not close the environment under it).

Result<MDB_txn*> Store::AcquireReadTxn() const {
  MDB_txn* t = nullptr;
  {
    std::lock_guard<std::mutex> g(pool_mu_);
    if (!pool_.empty()) {
      t = pool_.back();
      pool_.pop_back();
    }
  }
  if (t != nullptr) {
    if (mdb_txn_renew(t) == 0) {
      probe_->open_read_txns.Add(1);  // metrics
      return t;
    }
    mdb_txn_abort(t);
    t = nullptr;
  }
  int rc = mdb_txn_begin(env_, nullptr, MDB_RDONLY, &t);
  if (rc != 0) return MdbError("begin read transaction", rc);
  probe_->open_read_txns.Add(1);  // metrics
  return t;
}

void Store::ReleaseReadTxn(MDB_txn* t) const {
  probe_->open_read_txns.Add(-1);  // metrics
  mdb_txn_reset(t);
  {
    std::lock_guard<std::mutex> g(pool_mu_);
    if (pool_.size() < kReadPoolMax) {
      pool_.push_back(t);
      return;
    }
  }
  mdb_txn_abort(t);  // frees its reader slot
}

// ---------------------------------------------------------------------------
// Open / close

Store::Store(const Options& options)
    : opts_(options), probe_(options.probe ? options.probe : &own_probe_), prefix_stats_(options.prefix_depth) {}

Store::~Store() {
  if (active_batch_ != nullptr) ENGRAM_PANIC("mvcc: store destroyed with an open batch");
  for (MDB_txn* t : pool_) mdb_txn_abort(t);
  pool_.clear();
  if (env_ != nullptr) mdb_env_close(env_);
}

Result<std::unique_ptr<Store>> Store::Open(const Options& options) {
  std::unique_ptr<Store> s(new Store(options));
  // A defragmentation interrupted before its rename leaves its copy behind;
  // the file itself is whole (the rename is the commit point).
  const std::string tmp = options.dir + "/" + std::string(format::kDefragTmpFile);
  if (::access(tmp.c_str(), F_OK) == 0) {
    LOG_WARN("mvcc: removing the copy of an interrupted defragmentation", {{"path", tmp}});
    if (::unlink(tmp.c_str()) != 0) return Status::Errno("mvcc: unlink", tmp, errno);
  }
  ENGRAM_RETURN_IF_ERROR(s->OpenEnv());
  ENGRAM_RETURN_IF_ERROR(s->Rebuild());
  return Result<std::unique_ptr<Store>>(std::move(s));
}

Status Store::CreateEnv() {
  int rc = mdb_env_create(&env_);
  if (rc != 0) {
    env_ = nullptr;
    return MdbError("mdb_env_create", rc);
  }
  if ((rc = mdb_env_set_mapsize(env_, opts_.map_size)) != 0) return MdbError("set map size", rc);
  if ((rc = mdb_env_set_maxdbs(env_, 4)) != 0) return MdbError("set max dbs", rc);
  if ((rc = mdb_env_set_maxreaders(env_, opts_.max_readers)) != 0) return MdbError("set max readers", rc);
  unsigned flags = MDB_NOSUBDIR | MDB_NOTLS | (opts_.no_sync ? MDB_NOSYNC : 0);
  std::string path = opts_.dir + "/db";
  if ((rc = mdb_env_open(env_, path.c_str(), flags, 0600)) != 0) {
    return MdbError(("open " + path).c_str(), rc);
  }
  int dead = 0;
  mdb_reader_check(env_, &dead);  // slots left by a crashed process
  return Status::OK();
}

Status Store::ReopenEnvAfterDefrag() {
  ENGRAM_RETURN_IF_ERROR(CreateEnv());
  // The copy has both databases and every meta value: a read-only
  // transaction opens the handles (no write lock taken under env_mu_).
  MDB_txn* t = nullptr;
  int rc = mdb_txn_begin(env_, nullptr, MDB_RDONLY, &t);
  if (rc != 0) return MdbError("begin", rc);
  if ((rc = mdb_dbi_open(t, format::kKeyDb, 0, &key_dbi_)) != 0 ||
      (rc = mdb_dbi_open(t, format::kMetaDb, 0, &meta_dbi_)) != 0) {
    mdb_txn_abort(t);
    return MdbError("open databases", rc);
  }
  if ((rc = mdb_txn_commit(t)) != 0) return MdbError("commit", rc);
  return Status::OK();
}

Status Store::OpenEnv() {
  std::error_code ec;
  std::filesystem::create_directories(opts_.dir, ec);
  if (ec) return Status::IOError("mvcc: create " + opts_.dir + ": " + ec.message());
  ENGRAM_RETURN_IF_ERROR(CreateEnv());
  int rc;
  std::string path = opts_.dir + "/db";

  MDB_txn* t = nullptr;
  if ((rc = mdb_txn_begin(env_, nullptr, 0, &t)) != 0) return MdbError("begin", rc);
  auto fail = [&](Status st) {
    mdb_txn_abort(t);
    return st;
  };
  if ((rc = mdb_dbi_open(t, format::kKeyDb, MDB_CREATE, &key_dbi_)) != 0) return fail(MdbError("open key db", rc));
  if ((rc = mdb_dbi_open(t, format::kMetaDb, MDB_CREATE, &meta_dbi_)) != 0) {
    return fail(MdbError("open meta db", rc));
  }
  MDB_val k = Val(format::kMetaFormat), v;
  rc = mdb_get(t, meta_dbi_, &k, &v);
  if (rc == MDB_NOTFOUND) {
    MDB_stat st;
    mdb_stat(t, key_dbi_, &st);
    if (st.ms_entries != 0) return fail(Status::Corruption("mvcc: " + path + " has revisions but no format mark"));
    MDB_val fv = Val(format::kMetaFormatValue);
    if ((rc = mdb_put(t, meta_dbi_, &k, &fv, 0)) != 0) return fail(MdbError("put format", rc));
  } else if (rc != 0) {
    return fail(MdbError("get format", rc));
  } else if (std::string_view(static_cast<const char*>(v.mv_data), v.mv_size) != format::kMetaFormatValue) {
    return fail(Status::Corruption("mvcc: " + path + ": unknown format " +
                                   std::string(static_cast<const char*>(v.mv_data), v.mv_size)));
  }
  uint64_t n = 0;
  k = Val(format::kMetaCompactRev);
  if ((rc = mdb_get(t, meta_dbi_, &k, &v)) == 0) {
    if (!DecodeMetaU64(v, &n)) return fail(Status::Corruption("mvcc: bad " + std::string(format::kMetaCompactRev)));
    compact_rev_.store(static_cast<int64_t>(n));
    compacted_once_.store(true);
  } else if (rc != MDB_NOTFOUND) {
    return fail(MdbError("get compact revision", rc));
  }
  k = Val(format::kMetaConsistentIndex);
  if ((rc = mdb_get(t, meta_dbi_, &k, &v)) == 0) {
    if (!DecodeMetaU64(v, &n)) {
      return fail(Status::Corruption("mvcc: bad " + std::string(format::kMetaConsistentIndex)));
    }
    consistent_index_.store(n);
  } else if (rc != MDB_NOTFOUND) {
    return fail(MdbError("get consistent index", rc));
  }
  rc = mdb_txn_commit(t);
  if (rc != 0) return MdbError("commit", rc);
  return Status::OK();
}

Status Store::Rebuild() {
  int64_t max_main = 0;
  size_t records = 0;
  {
    ReadTxn txn(this);
    ENGRAM_RETURN_IF_ERROR(txn.Acquire());
    MDB_cursor* c = nullptr;
    int rc = mdb_cursor_open(txn.get(), key_dbi_, &c);
    if (rc != 0) return MdbError("open cursor", rc);
    MDB_val k, v;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
      format::DecodedRevKey rk;
      format::RecordView rec;
      if (!format::DecodeRevKey(static_cast<const char*>(k.mv_data), k.mv_size, &rk) ||
          !format::DecodeRecord(static_cast<const char*>(v.mv_data), v.mv_size, &rec) || rk.sub > UINT32_MAX ||
          rec.mod_revision != rk.main) {
        mdb_cursor_close(c);
        return Status::Corruption("mvcc: bad record in key db after revision " + std::to_string(max_main));
      }
      bool inserted = false;
      auto it = index_.FindOrInsert(rec.key, &inserted);
      KeyEntry& e = it->second;
      Revision r{rk.main, static_cast<uint32_t>(rk.sub), rk.tombstone ? 1u : 0u};
      e.revs.push_back(r);
      if (rk.tombstone) {
        e.create = e.version = 0;
      } else {
        e.create = rec.create_revision;
        e.version = rec.version;
      }
      max_main = rk.main;
      records++;
    }
    mdb_cursor_close(c);
    if (rc != MDB_NOTFOUND) return MdbError("scan key db", rc);
  }
  // The newest revision may have been only tombstones that a compaction at
  // that very revision removed: the compact revision is then the current one.
  int64_t rev = std::max<int64_t>({max_main, compact_rev_.load(), 1});
  rev_.store(rev, std::memory_order_release);
  if (compact_rev_.load() > 0) CompactIndexAndDelete(compact_rev_.load(), true);  // finishes a crashed compaction
  live_keys_ = 0;
  index_.Visit("", std::string_view("\0", 1), rev, [&](KeyIndex::Map::const_iterator, const Revision&) {
    live_keys_++;
    return true;
  });
  probe_->current_revision.Set(rev);
  probe_->compact_revision.Set(compact_rev_.load());
  probe_->keys_total.Set(live_keys_);
  ENGRAM_RETURN_IF_ERROR(RebuildPrefixStats(rev));
  UpdateFileBytes();
  SizeInfo size = Size();
  LOG_INFO("mvcc: opened store", {{"path", opts_.dir + "/db"},
                                   {"current-revision", rev},
                                   {"compact-revision", compact_rev_.load()},
                                   {"consistent-index", consistent_index_.load()},
                                   {"revisions", static_cast<uint64_t>(records)},
                                   {"keys", live_keys_},
                                   {"size-bytes", size.total_bytes}});
  return Status::OK();
}

// Per-prefix live keys and bytes from the index: one read of each live key's
// newest record (metrics; skipped when prefix stats are off).
Status Store::RebuildPrefixStats(int64_t rev) {
  prefix_stats_.Reset();
  if (!prefix_stats_.enabled()) return Status::OK();
  ReadTxn txn(this);
  ENGRAM_RETURN_IF_ERROR(txn.Acquire());
  PrefixStats::Delta d;
  index_.Visit("", std::string_view("\0", 1), rev, [&](KeyIndex::Map::const_iterator it, const Revision& r) {
    KeyValueRef ref;
    ReadRecord(txn.get(), r, &ref);
    prefix_stats_.Count(&d, it->first, 1, static_cast<int64_t>(ref.key.size() + ref.value.size()));
    return true;
  });
  prefix_stats_.Apply(&d);
  return Status::OK();
}

// ---------------------------------------------------------------------------
// Reads

int64_t Store::Collect(std::string_view key, std::string_view end, int64_t rev, int64_t limit, bool count_only,
                       std::vector<Revision>* out) const {
  int64_t count = 0;
  index_.Visit(key, end, rev, [&](KeyIndex::Map::const_iterator, const Revision& r) {
    ++count;
    if (!count_only && (limit <= 0 || static_cast<int64_t>(out->size()) < limit)) out->push_back(r);
    return true;
  });
  return count;
}

void Store::ReadRecord(MDB_txn* txn, const Revision& r, KeyValueRef* out) const {
  char kb[format::kRevKeySize];
  format::EncodeRevKey(kb, r.main, r.sub, false);
  MDB_val k{sizeof(kb), kb}, v;
  int rc = mdb_get(txn, key_dbi_, &k, &v);
  if (rc != 0) {
    ENGRAM_PANIC("mvcc: key index points at a missing revision",
                 {{"main", r.main}, {"sub", static_cast<uint64_t>(r.sub)}, {"error", mdb_strerror(rc)}});
  }
  format::RecordView rec;
  if (!format::DecodeRecord(static_cast<const char*>(v.mv_data), v.mv_size, &rec)) {
    ENGRAM_PANIC("mvcc: corrupt record", {{"main", r.main}, {"sub", static_cast<uint64_t>(r.sub)}});
  }
  out->key = rec.key;
  out->value = rec.value;
  out->create_revision = rec.create_revision;
  out->mod_revision = rec.mod_revision;
  out->version = rec.version;
  out->lease = rec.lease;
}

void Store::Fetch(MDB_txn* txn, const std::vector<Revision>& revs, bool keys_only, std::vector<KeyValue>* out) const {
  out->reserve(out->size() + revs.size());
  for (const Revision& r : revs) {
    KeyValueRef ref;
    ReadRecord(txn, r, &ref);
    KeyValue& kv = out->emplace_back();
    kv.key.assign(ref.key.data(), ref.key.size());  // the one copy out of the LMDB page
    if (!keys_only) kv.value.assign(ref.value.data(), ref.value.size());
    kv.create_revision = ref.create_revision;
    kv.mod_revision = ref.mod_revision;
    kv.version = ref.version;
    kv.lease = ref.lease;
  }
}

bool Store::FetchEach(MDB_txn* txn, const std::vector<Revision>& revs, const ScanFn& fn) const {
  for (const Revision& r : revs) {
    KeyValueRef ref;
    ReadRecord(txn, r, &ref);
    if (!fn(ref)) return false;
  }
  return true;
}

Result<RangeResult> Store::Range(std::string_view key, std::string_view end, const RangeOptions& opts) const {
  probe_->range_total.Inc();
  RangeResult res;
  std::vector<Revision> revs;
  ReadTxn txn(this);
  {
    std::shared_lock<RwLock> l(mu_);
    int64_t cur = rev_.load(std::memory_order_acquire);
    int64_t rev = opts.rev;
    if (rev > cur) return Status::OutOfRange(kFutureRev);
    if (rev <= 0) rev = cur;
    if (rev < compact_rev_.load(std::memory_order_relaxed)) return Status::OutOfRange(kCompacted);
    res.rev = cur;
    res.count = Collect(key, end, rev, opts.limit, opts.count_only, &revs);
    // Opened before the lock is released: a compaction cannot have removed
    // (and committed the removal of) any revision collected above.
    if (!revs.empty()) ENGRAM_RETURN_IF_ERROR(txn.Acquire());
  }
  if (!revs.empty()) Fetch(txn.get(), revs, opts.keys_only, &res.kvs);
  return res;
}

Result<int64_t> Store::Scan(std::string_view key, std::string_view end, int64_t rev, const ScanFn& fn) const {
  probe_->range_total.Inc();
  std::vector<Revision> revs;
  ReadTxn txn(this);
  int64_t cur;
  {
    std::shared_lock<RwLock> l(mu_);
    cur = rev_.load(std::memory_order_acquire);
    if (rev > cur) return Status::OutOfRange(kFutureRev);
    if (rev <= 0) rev = cur;
    if (rev < compact_rev_.load(std::memory_order_relaxed)) return Status::OutOfRange(kCompacted);
    Collect(key, end, rev, 0, false, &revs);
    if (!revs.empty()) ENGRAM_RETURN_IF_ERROR(txn.Acquire());
  }
  if (!revs.empty()) FetchEach(txn.get(), revs, fn);
  return cur;
}

Result<int64_t> Store::ScanEvents(int64_t from_rev, int64_t to_rev, const EventScanFn& fn) const {
  ReadTxn txn(this);
  int64_t cur;
  {
    // As Range: the compact revision is checked and the read transaction
    // opened under the lock, so a compaction cannot remove what is scanned.
    std::shared_lock<RwLock> l(mu_);
    cur = rev_.load(std::memory_order_acquire);
    if (from_rev < compact_rev_.load(std::memory_order_relaxed)) return Status::OutOfRange(kCompacted);
    ENGRAM_RETURN_IF_ERROR(txn.Acquire());
  }
  // The transaction may see a batch committed after cur was read: stop at cur.
  const int64_t end = (to_rev <= 0 || to_rev > cur) ? cur : to_rev;
  if (from_rev < 1) from_rev = 1;
  if (from_rev > end) return end;
  MDB_cursor* c = nullptr;
  int rc = mdb_cursor_open(txn.get(), key_dbi_, &c);
  if (rc != 0) return MdbError("open cursor", rc);
  char kb[format::kRevKeySize];
  format::EncodeRevKey(kb, from_rev, 0, false);  // sorts before every record of from_rev
  MDB_val k{sizeof(kb), kb}, v;
  for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
    format::DecodedRevKey rk;
    format::RecordView rec;
    if (!format::DecodeRevKey(static_cast<const char*>(k.mv_data), k.mv_size, &rk) ||
        !format::DecodeRecord(static_cast<const char*>(v.mv_data), v.mv_size, &rec)) {
      mdb_cursor_close(c);
      return Status::Corruption("mvcc: bad record in key db at revision " + std::to_string(rk.main));
    }
    if (rk.main > end) break;
    KeyValueRef ref{rec.key, rec.value, rec.create_revision, rk.main, rec.version, rec.lease};
    if (!fn(ref, rk.tombstone)) break;
  }
  mdb_cursor_close(c);
  if (rc != 0 && rc != MDB_NOTFOUND) return MdbError("scan key db", rc);
  return end;
}

int64_t Store::Rev() const { return rev_.load(std::memory_order_acquire); }
int64_t Store::CompactRev() const { return compact_rev_.load(std::memory_order_acquire); }
uint64_t Store::ConsistentIndex() const { return consistent_index_.load(std::memory_order_acquire); }

std::optional<std::string> Store::GetMeta(std::string_view name) const {
  ReadTxn txn(this);
  Status st = txn.Acquire();
  if (!st.ok()) {
    LOG_ERROR("mvcc: cannot read meta", {{"name", name}, {"error", st.message()}});
    return std::nullopt;
  }
  MDB_val k = Val(name), v;
  if (mdb_get(txn.get(), meta_dbi_, &k, &v) != 0) return std::nullopt;
  return std::string(static_cast<const char*>(v.mv_data), v.mv_size);
}

Result<std::vector<std::pair<std::string, std::string>>> Store::ScanMeta(std::string_view prefix) const {
  std::vector<std::pair<std::string, std::string>> out;
  ReadTxn txn(this);
  ENGRAM_RETURN_IF_ERROR(txn.Acquire());
  MDB_cursor* c = nullptr;
  if (int rc = mdb_cursor_open(txn.get(), meta_dbi_, &c); rc != 0) return MdbError("open meta cursor", rc);
  MDB_val k = Val(prefix), v;
  int rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
  while (rc == 0) {
    std::string_view key(static_cast<const char*>(k.mv_data), k.mv_size);
    if (key.substr(0, prefix.size()) != prefix) break;
    out.emplace_back(std::string(key), std::string(static_cast<const char*>(v.mv_data), v.mv_size));
    rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
  }
  mdb_cursor_close(c);
  if (rc != 0 && rc != MDB_NOTFOUND) return MdbError("scan meta", rc);
  return out;
}

void Store::UpdateSizeGauges(const SizeInfo& s) const {
  probe_->db_total_size_bytes.Set(s.total_bytes);
  probe_->db_total_size_in_use_bytes.Set(s.in_use_bytes);
}

Store::SizeInfo Store::Size() const {
  SizeInfo s{0, 0};
  ReadTxn txn(this);
  if (!txn.Acquire().ok()) return s;
  MDB_envinfo info;
  MDB_stat st;
  mdb_env_info(env_, &info);
  mdb_env_stat(env_, &st);
  int64_t psize = st.ms_psize;
  // Pages 0 and 1 are LMDB's meta pages; every other page below last_pgno is
  // either in one of the trees or on the free list.
  int64_t pages = 2;
  for (MDB_dbi dbi : {MDB_dbi{0} /* free list */, MDB_dbi{1} /* main */, MDB_dbi{key_dbi_}, MDB_dbi{meta_dbi_}}) {
    if (mdb_stat(txn.get(), dbi, &st) == 0) {
      pages += static_cast<int64_t>(st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages);
    }
  }
  s.total_bytes = static_cast<int64_t>(info.me_last_pgno + 1) * psize;
  s.in_use_bytes = std::min(pages * psize, s.total_bytes);
  UpdateSizeGauges(s);
  return s;
}

int64_t Store::FreePagesForTesting() const {
  ReadTxn txn(this);
  if (!txn.Acquire().ok()) return -1;
  MDB_cursor* c = nullptr;
  if (mdb_cursor_open(txn.get(), 0, &c) != 0) return -1;
  int64_t free = 0;
  MDB_val k, v;
  for (int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
    // Each record is an MDB_IDL: a count followed by that many page numbers.
    size_t n = 0;
    std::memcpy(&n, v.mv_data, sizeof(n));
    free += static_cast<int64_t>(n);
  }
  mdb_cursor_close(c);
  return free;
}

Status Store::CopyTo(const std::string& path, bool compact) const {
  int token = LockEnvShared();
  int rc = mdb_env_copy2(env_, path.c_str(), compact ? MDB_CP_COMPACT : 0);
  UnlockEnvShared(token);
  if (rc != 0) return MdbError(("copy to " + path).c_str(), rc);
  return Status::OK();
}

// ---------------------------------------------------------------------------
// Defragmentation

void Store::UpdateFileBytes() {
  MDB_envinfo info;
  MDB_stat st;
  if (mdb_env_info(env_, &info) != 0 || mdb_env_stat(env_, &st) != 0) return;
  file_bytes_.store(static_cast<int64_t>(info.me_last_pgno + 1) * st.ms_psize, std::memory_order_release);
}

namespace {

Status FsyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Status::Errno("open", dir, errno);
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) return Status::Errno("fsync", dir, err);
  return Status::OK();
}

}  // namespace

Status Store::Defrag() {
  ENGRAM_CHECK(active_batch_ == nullptr, "mvcc: defrag with an open batch");
  FinishCompaction();  // the copy leaves out what the compaction removes
  const std::string path = opts_.dir + "/db";
  const std::string tmp = opts_.dir + "/" + std::string(format::kDefragTmpFile);
  // 1. The compacted copy, beside the file, while readers go on (the writer,
  //    this thread, is paused, so the copy is the last committed state).
  ::unlink(tmp.c_str());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return Status::Errno("mvcc: defrag: create", tmp, errno);
  int rc = mdb_env_copyfd2(env_, fd, MDB_CP_COMPACT);
  Status st = rc != 0 ? MdbError(("defrag: copy to " + tmp).c_str(), rc) : Status::OK();
  if (st.ok() && FAILPOINT("mvcc-defrag-after-copy")) st = Status::IOError("mvcc: defrag: failpoint mvcc-defrag-after-copy");
  if (st.ok() && ::fsync(fd) != 0) st = Status::Errno("mvcc: defrag: fsync", tmp, errno);
  if (::close(fd) != 0 && st.ok()) st = Status::Errno("mvcc: defrag: close", tmp, errno);
  if (!st.ok()) {
    ::unlink(tmp.c_str());
    return st;
  }
  // 2. The swap: no read transaction may be open on the old environment.
  {
    std::unique_lock<RwLock> l(env_mu_);
    {
      std::lock_guard<std::mutex> g(pool_mu_);
      for (MDB_txn* t : pool_) mdb_txn_abort(t);
      pool_.clear();
    }
    mdb_env_close(env_);
    env_ = nullptr;
    // A fresh lock file: LMDB keeps the last transaction id in it, and the
    // copy restarts the ids; a lock file still open elsewhere (an mdb_stat)
    // would otherwise hand the new environment the old id.
    ::unlink((path + "-lock").c_str());
    if (FAILPOINT("mvcc-defrag-before-rename")) st = Status::IOError("mvcc: defrag: failpoint mvcc-defrag-before-rename");
    if (st.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) st = Status::Errno("mvcc: defrag: rename", tmp, errno);
    if (!st.ok()) ::unlink(tmp.c_str());  // the old file is untouched: reopen it
    // The rename is durable before anything is written to the new file.
    Status ds = FsyncDir(opts_.dir);
    // Without a durable rename an OS crash could bring the old file back,
    // older than what the caller now believes is synced: fail the defrag.
    if (!ds.ok() && st.ok()) st = ds;
    if (FAILPOINT("mvcc-defrag-before-reopen")) ENGRAM_PANIC("failpoint mvcc-defrag-before-reopen");
    Status os = ReopenEnvAfterDefrag();
    if (!os.ok()) ENGRAM_PANIC("mvcc: defrag: cannot reopen the backend", {{"path", path}, {"error", os.ToString()}});
    UpdateFileBytes();
  }
  Size();  // size gauges
  return st;
}

// ---------------------------------------------------------------------------
// Writes

std::unique_ptr<Store::Batch> Store::BeginBatch() {
  ENGRAM_CHECK(active_batch_ == nullptr, "mvcc: one batch at a time");
  MDB_txn* t = nullptr;
  int rc = mdb_txn_begin(env_, nullptr, 0, &t);
  if (rc != 0) ENGRAM_PANIC("mvcc: cannot begin a write transaction", {{"error", mdb_strerror(rc)}});
  std::unique_ptr<Batch> b(new Batch(this, t));
  active_batch_ = b.get();
  return b;
}

Status Store::Sync() {
  int token = LockEnvShared();
  // etcd_disk_backend_commit_duration_seconds: the commit that reaches the
  // disk. The LMDB commits of apply batches and compaction steps are made
  // without it (MDB_NOSYNC); this periodic sync (etcd's batch-interval
  // commit) is what a slow data disk slows down.
  auto start = std::chrono::steady_clock::now();
  int rc = mdb_env_sync(env_, 1);
  // "mvcc-sync": sleep(N) = a slow data disk, measured like one; error = the
  // sync fails.
  if (FAILPOINT("mvcc-sync") && rc == 0) rc = EIO;
  probe_->commit_seconds.ObserveSince(start);
  UnlockEnvShared(token);
  if (rc != 0) return MdbError("sync", rc);
  return Status::OK();
}

// ---------------------------------------------------------------------------
// Batch

Store::Batch::Batch(Store* s, MDB_txn* txn) : s_(s), txn_(txn), rev_(s->rev_.load(std::memory_order_relaxed)) {}

Store::Batch::~Batch() {
  if (txn_ != nullptr) Abort();
}

Store::Batch::Txn Store::Batch::Begin() {
  ENGRAM_CHECK(txn_ != nullptr, "mvcc: batch already finished");
  ENGRAM_CHECK(!in_txn_, "mvcc: one request at a time per batch");
  in_txn_ = true;
  return Txn(this);
}

Status Store::Batch::Compact(int64_t rev) {
  ENGRAM_CHECK(txn_ != nullptr && !in_txn_, "mvcc: compact outside an open batch or inside a request");
  const bool compacted = s_->compacted_once_.load() || compact_pending_set_;
  if (compacted ? rev <= CompactRev() : rev < 0) return Status::OutOfRange(kCompacted);
  if (rev > rev_) return Status::OutOfRange(kFutureRev);
  std::string v = format::EncodeU64(static_cast<uint64_t>(rev));
  MDB_val k = Val(format::kMetaCompactRev), mv = Val(v);
  int rc = mdb_put(txn_, s_->meta_dbi_, &k, &mv, 0);
  if (rc != 0) {
    Status st = MdbError("put compact revision", rc);
    sticky_ = st;
    return st;
  }
  pending_compact_ = rev;
  compact_pending_set_ = true;
  return Status::OK();
}

int64_t Store::Batch::CompactRev() const { return std::max(s_->compact_rev_.load(), pending_compact_); }

void Store::Batch::PutMeta(std::string_view name, std::string_view value) {
  ENGRAM_CHECK(txn_ != nullptr, "mvcc: batch already finished");
  ENGRAM_CHECK(!name.starts_with(format::kReservedMetaPrefix), "mvcc: meta names starting with mvcc. are reserved");
  MDB_val k = Val(name), v = Val(value);
  int rc = mdb_put(txn_, s_->meta_dbi_, &k, &v, 0);
  if (rc != 0 && sticky_.ok()) sticky_ = MdbError("put meta", rc);
}

void Store::Batch::DeleteMeta(std::string_view name) {
  ENGRAM_CHECK(txn_ != nullptr, "mvcc: batch already finished");
  ENGRAM_CHECK(!name.starts_with(format::kReservedMetaPrefix), "mvcc: meta names starting with mvcc. are reserved");
  MDB_val k = Val(name);
  int rc = mdb_del(txn_, s_->meta_dbi_, &k, nullptr);
  if (rc != 0 && rc != MDB_NOTFOUND && sticky_.ok()) sticky_ = MdbError("delete meta", rc);
}

std::optional<std::string> Store::Batch::GetMeta(std::string_view name) const {
  ENGRAM_CHECK(txn_ != nullptr, "mvcc: batch already finished");
  MDB_val k = Val(name), v;
  if (mdb_get(txn_, s_->meta_dbi_, &k, &v) != 0) return std::nullopt;
  return std::string(static_cast<const char*>(v.mv_data), v.mv_size);
}

Status Store::Batch::Commit(uint64_t consistent_index) {
  ENGRAM_CHECK(txn_ != nullptr, "mvcc: batch already finished");
  ENGRAM_CHECK(!in_txn_, "mvcc: commit inside a request (End() it first)");
  if (!sticky_.ok()) {
    Status st = sticky_;
    Abort();
    return st;
  }
  std::string civ = format::EncodeU64(consistent_index);
  MDB_val k = Val(format::kMetaConsistentIndex), v = Val(civ);
  int rc = mdb_put(txn_, s_->meta_dbi_, &k, &v, 0);
  if (rc == 0 && FAILPOINT("mvcc-before-commit")) rc = EIO;
  if (rc != 0) {
    Abort();
    return MdbError("put consistent index", rc);
  }
  rc = mdb_txn_commit(txn_);  // frees the handle, success or not (no fsync: Store::Sync syncs)
  txn_ = nullptr;
  if (rc != 0) {
    Undo();
    Finish();
    return MdbError("commit", rc);
  }
  s_->consistent_index_.store(consistent_index, std::memory_order_release);
  s_->live_keys_ += live_delta_;
  s_->prefix_stats_.Apply(&prefix_delta_);  // metrics: per-prefix live keys/bytes
  s_->UpdateFileBytes();  // for the quota check (FileBytes)
  s_->rev_.store(rev_, std::memory_order_release);  // readers see the batch from here
  s_->probe_->current_revision.Set(rev_);
  s_->probe_->keys_total.Set(s_->live_keys_);
  undo_.clear();
  Finish();
  s_->Size();  // metrics: refreshes the size gauges, as etcd does on commit (scrapes never open the env)
  if (compact_pending_set_) s_->compacted_once_.store(true);
  if (pending_compact_ > 0) {
    if (FAILPOINT("mvcc-before-compaction")) return Status::OK();  // as if it crashed here
    s_->StartCompaction(pending_compact_, false);  // its steps run later (CompactStep)
  }
  return Status::OK();
}

void Store::Batch::Abort() {
  if (txn_ == nullptr) return;
  mdb_txn_abort(txn_);
  txn_ = nullptr;
  Undo();
  Finish();
}

void Store::Batch::Undo() {
  prefix_delta_.Clear();
  if (undo_.empty()) return;
  int64_t published = s_->rev_.load(std::memory_order_relaxed);
  std::unique_lock<RwLock> l(s_->mu_);
  for (auto e = undo_.rbegin(); e != undo_.rend(); ++e) {
    KeyEntry& ke = e->it->second;
    uint32_t n = ke.revs.size();
    while (n > 0 && ke.revs[n - 1].main > published) n--;
    ke.revs.truncate(n);
    ke.create = e->create;
    ke.version = e->version;
    if (e->inserted) {
      ENGRAM_CHECK(ke.revs.empty(), "mvcc: undo of an inserted key left revisions");
      s_->index_.Erase(e->it);
    }
  }
  undo_.clear();
}

void Store::Batch::Finish() {
  if (s_->active_batch_ == this) s_->active_batch_ = nullptr;
}

// ---------------------------------------------------------------------------
// Batch::Txn

Store::Batch::Txn::Txn(Batch* b) : b_(b), main_(b->rev_ + 1) {}

Store::Batch::Txn::Txn(Txn&& o) noexcept
    : b_(o.b_),
      main_(o.main_),
      sub_(o.sub_),
      ranges_(o.ranges_),
      puts_(o.puts_),
      deletes_(o.deletes_),
      put_bytes_(o.put_bytes_) {
  o.b_ = nullptr;
}

Store::Batch::Txn::~Txn() { End(); }

int64_t Store::Batch::Txn::Rev() const { return sub_ > 0 ? main_ : main_ - 1; }

void Store::Batch::Txn::End() {
  if (b_ == nullptr) return;
  if (sub_ > 0) b_->rev_ = main_;
  b_->in_txn_ = false;
  FlushCounters();
  b_ = nullptr;
}

void Store::Batch::Txn::FlushCounters() {
  MvccProbe* p = b_->s_->probe_;
  if (ranges_) p->range_total.Inc(ranges_);
  if (puts_) p->put_total.Inc(puts_);
  if (deletes_) p->delete_total.Inc(deletes_);
  if (put_bytes_) p->total_put_size_bytes.Inc(put_bytes_);
  if (ranges_ + puts_ + deletes_ > 1) p->txn_total.Inc();
  ranges_ = puts_ = deletes_ = 0;
  put_bytes_ = 0;
}

void Store::Batch::Txn::EndReadPhase() {
  if (b_ != nullptr) FlushCounters();
}

Result<RangeResult> Store::Batch::Txn::Range(std::string_view key, std::string_view end, const RangeOptions& opts) {
  ENGRAM_CHECK(b_ != nullptr && b_->txn_ != nullptr, "mvcc: request already ended");
  ranges_++;
  const Store* s = b_->s_;
  int64_t view = Rev();
  int64_t rev = opts.rev;
  if (rev > view) return Status::OutOfRange(kFutureRev);
  if (rev <= 0) rev = view;
  if (rev < b_->CompactRev()) return Status::OutOfRange(kCompacted);
  RangeResult res;
  res.rev = view;
  std::vector<Revision> revs;
  // The writer thread is the only one changing index_: no lock to read it.
  res.count = s->Collect(key, end, rev, opts.limit, opts.count_only, &revs);
  s->Fetch(b_->txn_, revs, opts.keys_only, &res.kvs);
  return res;
}

Result<int64_t> Store::Batch::Txn::Scan(std::string_view key, std::string_view end, int64_t rev, const ScanFn& fn) {
  ENGRAM_CHECK(b_ != nullptr && b_->txn_ != nullptr, "mvcc: request already ended");
  ranges_++;
  const Store* s = b_->s_;
  int64_t view = Rev();
  if (rev > view) return Status::OutOfRange(kFutureRev);
  if (rev <= 0) rev = view;
  if (rev < b_->CompactRev()) return Status::OutOfRange(kCompacted);
  std::vector<Revision> revs;
  s->Collect(key, end, rev, 0, false, &revs);
  s->FetchEach(b_->txn_, revs, fn);
  return view;
}

Status Store::Batch::Txn::Put(std::string_view key, std::string_view value, int64_t lease,
                              std::optional<KeyValue>* prev) {
  ENGRAM_CHECK(b_ != nullptr && b_->txn_ != nullptr, "mvcc: request already ended");
  Store* s = b_->s_;
  KeyIndex& idx = s->index_;
  auto cit = idx.Find(key);
  bool alive = cit != idx.End() && cit->second.Alive();
  int64_t create = main_, version = 1;
  int64_t old_bytes = 0;  // key + value of the live kv this put replaces (prefix stats)
  if (alive) {
    create = cit->second.create;
    version = cit->second.version + 1;
    if (prev != nullptr) {
      KeyValueRef ref;
      s->ReadRecord(b_->txn_, cit->second.revs.back(), &ref);
      *prev = ref.ToKeyValue();
      old_bytes = static_cast<int64_t>(ref.key.size() + ref.value.size());
    } else if (s->prefix_stats_.enabled()) {
      KeyValueRef ref;
      s->ReadRecord(b_->txn_, cit->second.revs.back(), &ref);
      old_bytes = static_cast<int64_t>(ref.key.size() + ref.value.size());
    }
  } else if (prev != nullptr) {
    prev->reset();
  }
  char kb[format::kRevKeySize];
  format::EncodeRevKey(kb, main_, sub_, false);
  MDB_val k{sizeof(kb), kb};
  MDB_val v{format::RecordSize(key, value), nullptr};
  // Revisions only grow, so every record is appended at the end of the tree;
  // MDB_RESERVE lets us encode straight into the page.
  int rc = mdb_put(b_->txn_, s->key_dbi_, &k, &v, MDB_APPEND | MDB_RESERVE);
  if (rc != 0) {
    Status st = MdbError("put", rc);
    if (b_->sticky_.ok()) b_->sticky_ = st;
    return st;
  }
  format::EncodeRecord(static_cast<char*>(v.mv_data), key, value, create, main_, version, lease);
  if (b_->record_events_) {
    b_->events_.push_back(Event{false, KeyValue{std::string(key), std::string(value), create, main_, version, lease}});
  }
  {
    std::unique_lock<RwLock> l(s->mu_);
    bool inserted = false;
    auto it = cit != idx.End() ? idx.Mutable(cit) : idx.FindOrInsert(key, &inserted);
    KeyEntry& e = it->second;
    b_->undo_.push_back(UndoEntry{it, e.create, e.version, inserted});
    e.revs.push_back(Revision{main_, sub_, 0});
    e.create = create;
    e.version = version;
  }
  if (!alive) b_->live_delta_++;
  s->prefix_stats_.Count(&b_->prefix_delta_, key, alive ? 0 : 1,
                         static_cast<int64_t>(key.size() + value.size()) - old_bytes);
  sub_++;
  puts_++;
  put_bytes_ += key.size() + value.size();
  return Status::OK();
}

Result<int64_t> Store::Batch::Txn::DeleteRange(std::string_view key, std::string_view end,
                                               std::vector<KeyValue>* prev) {
  ENGRAM_CHECK(b_ != nullptr && b_->txn_ != nullptr, "mvcc: request already ended");
  deletes_++;
  Store* s = b_->s_;
  KeyIndex& idx = s->index_;
  std::vector<KeyIndex::Map::const_iterator> keys;
  // Everything in the index is at or below this request's view, so a key
  // visible here is alive and its newest revision is the visible one.
  idx.Visit(key, end, Rev(), [&](KeyIndex::Map::const_iterator it, const Revision&) {
    keys.push_back(it);
    return true;
  });
  if (keys.empty()) return int64_t{0};
  if (prev != nullptr) prev->reserve(prev->size() + keys.size());
  for (size_t i = 0; i < keys.size(); i++) {
    const std::string& k = keys[i]->first;
    if (prev != nullptr || s->prefix_stats_.enabled()) {
      KeyValueRef ref;
      s->ReadRecord(b_->txn_, keys[i]->second.revs.back(), &ref);
      if (prev != nullptr) prev->push_back(ref.ToKeyValue());
      s->prefix_stats_.Count(&b_->prefix_delta_, k, -1, -static_cast<int64_t>(ref.key.size() + ref.value.size()));
    }
    char kb[format::kRevKeySize];
    format::EncodeRevKey(kb, main_, sub_ + i, true);
    MDB_val mk{sizeof(kb), kb};
    MDB_val mv{format::RecordSize(k, {}), nullptr};
    int rc = mdb_put(b_->txn_, s->key_dbi_, &mk, &mv, MDB_APPEND | MDB_RESERVE);
    if (rc != 0) {
      Status st = MdbError("put tombstone", rc);
      if (b_->sticky_.ok()) b_->sticky_ = st;
      return st;
    }
    format::EncodeRecord(static_cast<char*>(mv.mv_data), k, {}, 0, main_, 0, 0);
    if (b_->record_events_) b_->events_.push_back(Event{true, KeyValue{k, {}, 0, main_, 0, 0}});
  }
  {
    std::unique_lock<RwLock> l(s->mu_);
    for (size_t i = 0; i < keys.size(); i++) {
      auto it = idx.Mutable(keys[i]);
      KeyEntry& e = it->second;
      b_->undo_.push_back(UndoEntry{it, e.create, e.version, false});
      e.revs.push_back(Revision{main_, static_cast<uint32_t>(sub_ + i), 1});
      e.create = 0;
      e.version = 0;
    }
  }
  sub_ += static_cast<uint32_t>(keys.size());
  b_->live_delta_ -= static_cast<int64_t>(keys.size());
  return static_cast<int64_t>(keys.size());
}

}  // namespace engram::mvcc
