// On-disk encodings of the mvcc store (internal; the full description with the
// rationale is src/mvcc/FORMAT.md, keep the two in step).
//
//   "key" DB   key   = revision key, 17 bytes:
//                      big-endian main (8) | big-endian sub (8) | marker (1)
//                      marker 'p' = put, 't' = tombstone (a delete)
//              value = record (below)
//   "meta" DB  key   = name bytes, value = bytes (numbers: 8 bytes big-endian)
//
//   record = u8 format (1)
//            | fixed64 LE create_revision | fixed64 LE mod_revision
//            | fixed64 LE version | fixed64 LE lease
//            | fixed32 LE key length | key bytes | value bytes (to the end)
//
// A tombstone record carries the key and mod_revision (= its main revision);
// create_revision, version, lease are 0 and the value is empty.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "src/common/coding.h"

namespace engram::mvcc::format {

inline constexpr size_t kRevKeySize = 17;
inline constexpr char kMarkerPut = 'p';
inline constexpr char kMarkerTombstone = 't';

inline constexpr uint8_t kRecordFormat = 1;
inline constexpr size_t kRecordHeaderSize = 1 + 8 * 4 + 4;

// LMDB database names inside the environment.
inline constexpr const char* kKeyDb = "key";
inline constexpr const char* kMetaDb = "meta";

// Defrag's compacted copy, in the store's dir, renamed over "db" when done
// (FORMAT.md, Defragmentation). Open removes a leftover one.
inline constexpr std::string_view kDefragTmpFile = "db.defrag.tmp";

// Meta names reserved for the store itself (PutMeta refuses the "mvcc." prefix).
inline constexpr std::string_view kReservedMetaPrefix = "mvcc.";
inline constexpr std::string_view kMetaFormat = "mvcc.format";
inline constexpr std::string_view kMetaFormatValue = "engram-mvcc-1";
inline constexpr std::string_view kMetaConsistentIndex = "mvcc.consistent_index";
inline constexpr std::string_view kMetaCompactRev = "mvcc.compact_rev";

inline void EncodeRevKey(char* dst, int64_t main, int64_t sub, bool tombstone) {
  EncodeBig64(dst, static_cast<uint64_t>(main));
  EncodeBig64(dst + 8, static_cast<uint64_t>(sub));
  dst[16] = tombstone ? kMarkerTombstone : kMarkerPut;
}

struct DecodedRevKey {
  int64_t main = 0;
  int64_t sub = 0;
  bool tombstone = false;
};

// False if the bytes are not a revision key.
inline bool DecodeRevKey(const char* p, size_t n, DecodedRevKey* out) {
  if (n != kRevKeySize) return false;
  if (p[16] != kMarkerPut && p[16] != kMarkerTombstone) return false;
  out->main = static_cast<int64_t>(DecodeBig64(p));
  out->sub = static_cast<int64_t>(DecodeBig64(p + 8));
  out->tombstone = p[16] == kMarkerTombstone;
  return true;
}

inline size_t RecordSize(std::string_view key, std::string_view value) {
  return kRecordHeaderSize + key.size() + value.size();
}

// Writes a record into dst, which has RecordSize(key, value) bytes.
inline void EncodeRecord(char* dst, std::string_view key, std::string_view value, int64_t create_revision,
                         int64_t mod_revision, int64_t version, int64_t lease) {
  dst[0] = static_cast<char>(kRecordFormat);
  EncodeFixed64(dst + 1, static_cast<uint64_t>(create_revision));
  EncodeFixed64(dst + 9, static_cast<uint64_t>(mod_revision));
  EncodeFixed64(dst + 17, static_cast<uint64_t>(version));
  EncodeFixed64(dst + 25, static_cast<uint64_t>(lease));
  EncodeFixed32(dst + 33, static_cast<uint32_t>(key.size()));
  char* p = dst + kRecordHeaderSize;
  if (!key.empty()) std::memcpy(p, key.data(), key.size());
  if (!value.empty()) std::memcpy(p + key.size(), value.data(), value.size());
}

// A record decoded in place: key and value point into the source bytes.
struct RecordView {
  std::string_view key;
  std::string_view value;
  int64_t create_revision = 0;
  int64_t mod_revision = 0;
  int64_t version = 0;
  int64_t lease = 0;
};

// False if the bytes are not a well-formed record.
inline bool DecodeRecord(const char* p, size_t n, RecordView* out) {
  if (n < kRecordHeaderSize || static_cast<uint8_t>(p[0]) != kRecordFormat) return false;
  uint32_t klen = DecodeFixed32(p + 33);
  if (klen > n - kRecordHeaderSize) return false;
  out->create_revision = static_cast<int64_t>(DecodeFixed64(p + 1));
  out->mod_revision = static_cast<int64_t>(DecodeFixed64(p + 9));
  out->version = static_cast<int64_t>(DecodeFixed64(p + 17));
  out->lease = static_cast<int64_t>(DecodeFixed64(p + 25));
  out->key = std::string_view(p + kRecordHeaderSize, klen);
  out->value = std::string_view(p + kRecordHeaderSize + klen, n - kRecordHeaderSize - klen);
  return true;
}

inline std::string EncodeU64(uint64_t v) {
  std::string s(8, '\0');
  EncodeBig64(s.data(), v);
  return s;
}

}  // namespace engram::mvcc::format
