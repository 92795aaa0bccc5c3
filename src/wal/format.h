// WAL record encoding and segment scanning (the format is specified in
// src/wal/FORMAT.md; keep the two in step). Internal to src/wal: the public
// interface is wal.h.
//
// Thread safety: free functions are pure; Buffer and Encoder are plain values
// owned by one thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "src/common/status.h"
#include "src/raft/types.h"

namespace engram::wal {
struct SnapshotMarker;
}

namespace engram::wal::format {

inline constexpr size_t kHeaderSize = 16;
inline constexpr uint32_t kMaxPayload = 1u << 30;
inline constexpr uint64_t kMagic = 0x4c574d4152474e45ull;  // "ENGRAMWL" little-endian
inline constexpr uint32_t kVersion = 1;
inline constexpr size_t kSegmentHeaderPayload = 40;
inline constexpr size_t kEntryFixed = 17;  // term, index, type
inline constexpr size_t kHardStatePayload = 24;

enum class RecordType : uint8_t {
  kSegmentHeader = 1,
  kMetadata = 2,
  kHardState = 3,
  kEntry = 4,
  kSnapshot = 5,
};

// Seed of both CRCs of segment `seq`.
uint32_t Seed(uint64_t seq);

std::string SegmentName(uint64_t seq, uint64_t first_index);
// Parses exactly "%016x-%016x.wal".
bool ParseSegmentName(std::string_view name, uint64_t* seq, uint64_t* first_index);

inline size_t EntryRecordSize(const raft::Entry& e) { return kHeaderSize + kEntryFixed + e.data.size(); }
inline size_t HardStateRecordSize() { return kHeaderSize + kHardStatePayload; }
inline size_t MetadataRecordSize(const std::string& md) { return kHeaderSize + md.size(); }
size_t SnapshotRecordSize(const SnapshotMarker& s);
inline size_t SegmentHeaderRecordSize() { return kHeaderSize + kSegmentHeaderPayload; }

// A growable byte buffer that does not zero-fill: the hot path encodes into it
// and reuses its capacity from call to call.
class Buffer {
 public:
  // Grows the buffer by n bytes and returns a pointer to them (uninitialised).
  char* Extend(size_t n) {
    if (size_ + n > cap_) Grow(size_ + n);
    char* p = data_.get() + size_;
    size_ += n;
    return p;
  }
  void Clear() { size_ = 0; }
  // Frees the memory (after an unusually large batch).
  void Release() {
    data_.reset();
    cap_ = size_ = 0;
  }
  const char* data() const { return data_.get(); }
  char* data() { return data_.get(); }
  size_t size() const { return size_; }
  size_t capacity() const { return cap_; }

 private:
  void Grow(size_t need);
  std::unique_ptr<char[]> data_;
  size_t cap_ = 0;
  size_t size_ = 0;
};

// Appends framed records of one segment to a Buffer, keeping the CRC chain.
class Encoder {
 public:
  Encoder(uint64_t seq, uint32_t chain) : seed_(Seed(seq)), chain_(chain) {}
  // The chain value for a segment with no records yet.
  static uint32_t InitialChain(uint64_t seq) { return Seed(seq); }

  void SegmentHeader(Buffer* b, uint64_t seq, uint64_t first_index, uint64_t init_bytes);
  void Metadata(Buffer* b, std::string_view md);
  void HardState(Buffer* b, const raft::HardState& hs);
  void Entry(Buffer* b, const raft::Entry& e);
  void Snapshot(Buffer* b, const SnapshotMarker& s);
  uint32_t chain() const { return chain_; }

 private:
  // Reserves a record of payload length len; returns the payload pointer.
  char* Begin(Buffer* b, RecordType t, size_t len, char** header);
  void Finish(char* header, size_t len);
  uint32_t seed_;
  uint32_t chain_;
};

// One verified record handed to a Scan visitor. payload points into the
// scanned data.
struct RecordView {
  RecordType type;
  uint64_t offset;
  const char* payload;
  uint32_t len;
};

struct SegmentHeaderInfo {
  uint64_t seq = 0;
  uint64_t first_index = 0;
  uint64_t init_bytes = 0;
};

struct ScanResult {
  enum class Kind { kClean, kTorn, kCorrupt };
  Kind kind = Kind::kClean;
  // kClean: end of the last valid record. kTorn: offset of the torn record (the
  // segment is to be truncated here). kCorrupt: offset of the damage.
  uint64_t offset = 0;
  uint32_t last_crc = 0;  // chain value after the last valid record
  SegmentHeaderInfo header;
  std::string reason;  // kTorn / kCorrupt: what was found
};

// Scans one segment file's bytes, applying the torn-tail rule of FORMAT.md.
// The segment header is checked here (magic, version, seq and first index
// against the file name) and not passed to visit; every other verified record
// is. If visit returns an error, the scan stops with kCorrupt at that record
// and the error's message as reason. Records visited before a kTorn/kCorrupt
// outcome are valid.
ScanResult Scan(const char* data, size_t size, uint64_t seq, uint64_t first_index, bool is_tail,
                const std::function<Status(const RecordView&)>& visit);

// Payload decoders: false if the payload is malformed.
bool DecodeHardState(const RecordView& r, raft::HardState* hs);
bool DecodeEntry(const RecordView& r, raft::Entry* e);
bool DecodeSnapshot(const RecordView& r, SnapshotMarker* s);

// True if n bytes at p are all zero; otherwise *first_nonzero (if not null) is
// the index of the first non-zero byte.
bool AllZero(const char* p, size_t n, size_t* first_nonzero = nullptr);

}  // namespace engram::wal::format
