// Store::HashKV: etcd's HashByRev over Engram's storage (store.h; the
// algorithm and why it equals etcd's: docs/design/maintenance.md section 5).
#include <lmdb.h>

#include <mutex>
#include <set>
#include <shared_mutex>

#include "src/common/crc32c.h"
#include "src/mvcc/format.h"
#include "src/mvcc/read_txn.h"
#include "src/mvcc/store.h"

namespace engram::mvcc {
namespace {

void PutVarint(std::string* out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

void PutBytes(std::string* out, int tag, std::string_view b) {
  out->push_back(static_cast<char>(tag));
  PutVarint(out, b.size());
  out->append(b);
}

void PutInt(std::string* out, int tag, int64_t v) {
  if (v == 0) return;  // proto3: zero values are not written
  out->push_back(static_cast<char>(tag));
  PutVarint(out, static_cast<uint64_t>(v));
}

void PutBig64(std::string* out, uint64_t v) {
  for (int i = 7; i >= 0; --i) out->push_back(static_cast<char>(v >> (8 * i)));
}

}  // namespace

// mvccpb.KeyValue as etcd marshals it (fields in number order, zero values
// left out); a delete's record is the key alone.
std::string EtcdKeyValueBytes(const KeyValueRef& kv, bool tombstone) {
  std::string out;
  PutBytes(&out, 0x0a, kv.key);
  if (tombstone) return out;
  PutInt(&out, 0x10, kv.create_revision);
  PutInt(&out, 0x18, kv.mod_revision);
  PutInt(&out, 0x20, kv.version);
  if (!kv.value.empty()) PutBytes(&out, 0x2a, kv.value);
  PutInt(&out, 0x30, kv.lease);
  return out;
}

Result<Store::HashKVResult> Store::HashKV(int64_t req) const {
  HashKVResult res;
  std::set<std::pair<int64_t, uint32_t>> keep;  // records <= C a compaction at rev keeps
  int64_t rev, c;
  ReadTxn txn(this);
  {
    std::shared_lock<RwLock> l(mu_);
    res.revision = rev_.load(std::memory_order_acquire);
    c = compacted_once_.load() ? compact_rev_.load(std::memory_order_relaxed) : -1;
    res.compact_revision = c;
    if (req > 0 && req <= c) return Status::OutOfRange("mvcc: required revision has been compacted");
    if (req > 0 && req > res.revision) return Status::OutOfRange("mvcc: required revision is a future revision");
    rev = req == 0 ? res.revision : req;
    if (c >= 1 && rev >= 1) {
      bool alive = false;
      index_.Visit(std::string_view("\0", 1), std::string_view("\0", 1), rev, [&](auto, const Revision& r) {
        alive = true;
        if (r.main <= c) keep.emplace(r.main, r.sub);
        return true;
      });
      if (!alive) {
        // etcd's empty-keep case: every record <= C still stored, which
        // after the compaction are exactly those kept at C.
        index_.Visit(std::string_view("\0", 1), std::string_view("\0", 1), c, [&](auto, const Revision& r) {
          keep.emplace(r.main, r.sub);
          return true;
        });
      }
    }
    ENGRAM_RETURN_IF_ERROR(txn.Acquire());
  }
  res.hash_revision = rev;
  uint32_t crc = crc32c::Extend(0, "key", 3);
  if (rev < 1) {
    res.hash = crc;
    return res;
  }
  MDB_cursor* cur = nullptr;
  int rc = mdb_cursor_open(txn.get(), key_dbi_, &cur);
  if (rc != 0) return Status::IOError(std::string("mvcc: open cursor: ") + mdb_strerror(rc));
  MDB_val k{0, nullptr}, v;
  std::string kb, vb;
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    format::DecodedRevKey rk;
    format::RecordView rec;
    if (!format::DecodeRevKey(static_cast<const char*>(k.mv_data), k.mv_size, &rk) ||
        !format::DecodeRecord(static_cast<const char*>(v.mv_data), v.mv_size, &rec)) {
      mdb_cursor_close(cur);
      return Status::Corruption("mvcc: bad record in key db at revision " + std::to_string(rk.main));
    }
    if (rk.main > rev) break;
    if (rk.main <= c && !keep.count({rk.main, static_cast<uint32_t>(rk.sub)})) continue;
    kb.clear();
    PutBig64(&kb, static_cast<uint64_t>(rk.main));
    kb.push_back('_');
    PutBig64(&kb, rk.sub);
    if (rk.tombstone) kb.push_back('t');
    KeyValueRef ref{rec.key, rec.value, rec.create_revision, rk.main, rec.version, rec.lease};
    vb = EtcdKeyValueBytes(ref, rk.tombstone);
    crc = crc32c::Extend(crc, kb.data(), kb.size());
    crc = crc32c::Extend(crc, vb.data(), vb.size());
  }
  mdb_cursor_close(cur);
  if (rc != 0 && rc != MDB_NOTFOUND) return Status::IOError(std::string("mvcc: scan key db: ") + mdb_strerror(rc));
  res.hash = crc;
  return res;
}

}  // namespace engram::mvcc

namespace engram::mvcc {

Result<uint32_t> Store::HashAll() const {
  ReadTxn txn(this);
  ENGRAM_RETURN_IF_ERROR(txn.Acquire());
  uint32_t crc = 0;
  for (MDB_dbi dbi : {key_dbi_, meta_dbi_}) {
    MDB_cursor* cur = nullptr;
    int rc = mdb_cursor_open(txn.get(), dbi, &cur);
    if (rc != 0) return Status::IOError(std::string("mvcc: open cursor: ") + mdb_strerror(rc));
    MDB_val k{0, nullptr}, v;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
      std::string_view name(static_cast<const char*>(k.mv_data), k.mv_size);
      if (dbi == meta_dbi_ && name == format::kMetaConsistentIndex) continue;  // differs between members
      crc = crc32c::Extend(crc, k.mv_data, k.mv_size);
      crc = crc32c::Extend(crc, v.mv_data, v.mv_size);
    }
    mdb_cursor_close(cur);
    if (rc != 0 && rc != MDB_NOTFOUND) return Status::IOError(std::string("mvcc: scan: ") + mdb_strerror(rc));
  }
  return crc;
}

}  // namespace engram::mvcc
