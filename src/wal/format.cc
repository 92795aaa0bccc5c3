#include "src/wal/format.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "src/common/coding.h"
#include "src/common/crc32c.h"
#include "src/wal/wal.h"

namespace engram::wal::format {

uint32_t Seed(uint64_t seq) {
  char b[18] = {'e', 'n', 'g', 'r', 'a', 'm', '-', 'w', 'a', 'l'};
  EncodeFixed64(b + 10, seq);
  return crc32c::Value(b, sizeof b);
}

std::string SegmentName(uint64_t seq, uint64_t first_index) {
  char b[64];
  std::snprintf(b, sizeof b, "%016" PRIx64 "-%016" PRIx64 ".wal", seq, first_index);
  return b;
}

namespace {
bool ParseHex16(std::string_view s, uint64_t* v) {
  if (s.size() != 16) return false;
  uint64_t x = 0;
  for (char c : s) {
    int d;
    if (c >= '0' && c <= '9') {
      d = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      d = c - 'a' + 10;
    } else {
      return false;
    }
    x = (x << 4) | static_cast<uint64_t>(d);
  }
  *v = x;
  return true;
}
}  // namespace

bool ParseSegmentName(std::string_view name, uint64_t* seq, uint64_t* first_index) {
  if (name.size() != 37 || name[16] != '-' || name.substr(33) != ".wal") return false;
  return ParseHex16(name.substr(0, 16), seq) && ParseHex16(name.substr(17, 16), first_index);
}

size_t SnapshotRecordSize(const SnapshotMarker& s) {
  return kHeaderSize + 24 + 8 * (s.conf_state.voters.size() + s.conf_state.learners.size());
}

void Buffer::Grow(size_t need) {
  size_t c = std::max<size_t>({need, cap_ * 2, 4096});
  std::unique_ptr<char[]> d(new char[c]);
  if (size_ > 0) std::memcpy(d.get(), data_.get(), size_);
  data_ = std::move(d);
  cap_ = c;
}

char* Encoder::Begin(Buffer* b, RecordType t, size_t len, char** header) {
  char* h = b->Extend(kHeaderSize + len);
  EncodeFixed32(h, static_cast<uint32_t>(len));
  h[4] = static_cast<char>(t);
  h[5] = h[6] = h[7] = 0;
  *header = h;
  return h + kHeaderSize;
}

void Encoder::Finish(char* h, size_t len) {
  uint32_t crc = crc32c::Extend(chain_, h, 8);
  crc = crc32c::Extend(crc, h + kHeaderSize, len);
  EncodeFixed32(h + 8, crc);
  EncodeFixed32(h + 12, crc32c::Extend(seed_, h, 12));
  chain_ = crc;
}

void Encoder::SegmentHeader(Buffer* b, uint64_t seq, uint64_t first_index, uint64_t init_bytes) {
  char* h;
  char* p = Begin(b, RecordType::kSegmentHeader, kSegmentHeaderPayload, &h);
  EncodeFixed64(p, kMagic);
  EncodeFixed32(p + 8, kVersion);
  EncodeFixed32(p + 12, 0);
  EncodeFixed64(p + 16, seq);
  EncodeFixed64(p + 24, first_index);
  EncodeFixed64(p + 32, init_bytes);
  Finish(h, kSegmentHeaderPayload);
}

void Encoder::Metadata(Buffer* b, std::string_view md) {
  char* h;
  char* p = Begin(b, RecordType::kMetadata, md.size(), &h);
  if (!md.empty()) std::memcpy(p, md.data(), md.size());
  Finish(h, md.size());
}

void Encoder::HardState(Buffer* b, const raft::HardState& hs) {
  char* h;
  char* p = Begin(b, RecordType::kHardState, kHardStatePayload, &h);
  EncodeFixed64(p, hs.term);
  EncodeFixed64(p + 8, hs.vote);
  EncodeFixed64(p + 16, hs.commit);
  Finish(h, kHardStatePayload);
}

void Encoder::Entry(Buffer* b, const raft::Entry& e) {
  size_t len = kEntryFixed + e.data.size();
  char* h;
  char* p = Begin(b, RecordType::kEntry, len, &h);
  EncodeFixed64(p, e.term);
  EncodeFixed64(p + 8, e.index);
  p[16] = static_cast<char>(e.type);
  if (!e.data.empty()) std::memcpy(p + kEntryFixed, e.data.data(), e.data.size());
  Finish(h, len);
}

void Encoder::Snapshot(Buffer* b, const SnapshotMarker& s) {
  size_t len = SnapshotRecordSize(s) - kHeaderSize;
  char* h;
  char* p = Begin(b, RecordType::kSnapshot, len, &h);
  EncodeFixed64(p, s.index);
  EncodeFixed64(p + 8, s.term);
  p += 16;
  for (const auto* ids : {&s.conf_state.voters, &s.conf_state.learners}) {
    EncodeFixed32(p, static_cast<uint32_t>(ids->size()));
    p += 4;
    for (uint64_t id : *ids) {
      EncodeFixed64(p, id);
      p += 8;
    }
  }
  Finish(h, len);
}

bool DecodeHardState(const RecordView& r, raft::HardState* hs) {
  if (r.len != kHardStatePayload) return false;
  hs->term = DecodeFixed64(r.payload);
  hs->vote = DecodeFixed64(r.payload + 8);
  hs->commit = DecodeFixed64(r.payload + 16);
  return true;
}

bool DecodeEntry(const RecordView& r, raft::Entry* e) {
  if (r.len < kEntryFixed) return false;
  uint8_t t = static_cast<uint8_t>(r.payload[16]);
  if (t > static_cast<uint8_t>(raft::EntryType::kConfChange)) return false;
  e->term = DecodeFixed64(r.payload);
  e->index = DecodeFixed64(r.payload + 8);
  e->type = static_cast<raft::EntryType>(t);
  e->data.assign(r.payload + kEntryFixed, r.len - kEntryFixed);
  return true;
}

bool DecodeSnapshot(const RecordView& r, SnapshotMarker* s) {
  if (r.len < 24) return false;
  const char* p = r.payload;
  const char* end = r.payload + r.len;
  s->index = DecodeFixed64(p);
  s->term = DecodeFixed64(p + 8);
  p += 16;
  for (auto* ids : {&s->conf_state.voters, &s->conf_state.learners}) {
    if (end - p < 4) return false;
    uint64_t n = DecodeFixed32(p);
    p += 4;
    if (static_cast<uint64_t>(end - p) < 8 * n) return false;
    ids->clear();
    ids->reserve(n);
    for (uint64_t i = 0; i < n; i++, p += 8) ids->push_back(DecodeFixed64(p));
  }
  return p == end;
}

bool AllZero(const char* p, size_t n, size_t* first_nonzero) {
  if (n == 0) return true;
  // Fast path: p[0] == 0 and every byte equals its successor.
  if (p[0] == 0 && (n == 1 || std::memcmp(p, p + 1, n - 1) == 0)) return true;
  if (first_nonzero) {
    for (size_t i = 0; i < n; i++) {
      if (p[i] != 0) {
        *first_nonzero = i;
        break;
      }
    }
  }
  return false;
}

ScanResult Scan(const char* data, size_t size, uint64_t seq, uint64_t first_index, bool is_tail,
                const std::function<Status(const RecordView&)>& visit) {
  ScanResult r;
  const uint32_t seed = Seed(seq);
  uint32_t chain = seed;
  uint64_t off = 0;
  bool have_header = false;
  r.last_crc = chain;

  auto corrupt = [&](std::string reason) {
    r.kind = ScanResult::Kind::kCorrupt;
    r.offset = off;
    r.reason = std::move(reason);
    return r;
  };
  // A record at `off` failed to verify; its bytes can be trusted to end at
  // `end`. Torn tail or corruption (FORMAT.md, "Torn tail vs corruption").
  auto bad = [&](uint64_t end, std::string reason) {
    end = std::min<uint64_t>(end, size);
    size_t nz = 0;
    bool zeros_after = AllZero(data + end, size - end, &nz);
    if (is_tail && have_header && off >= r.header.init_bytes && zeros_after) {
      r.kind = ScanResult::Kind::kTorn;
      r.offset = off;
      r.reason = std::move(reason);
      return r;
    }
    if (!zeros_after) {
      reason += ", and the log continues after it (non-zero bytes at offset " +
                std::to_string(end + nz) + ")";
    } else if (!is_tail) {
      reason += ", in a segment that is not the last one";
    } else {
      reason += ", inside the segment's initial records";
    }
    return corrupt(std::move(reason));
  };

  while (true) {
    const size_t rem = size - off;
    const char* p = data + off;
    if (rem < kHeaderSize && AllZero(p, rem)) {
      // End of file (possibly after a few zero bytes): clean end.
      if (!have_header) return corrupt("segment has no header record");
      break;
    }
    if (rem < kHeaderSize) return bad(size, "truncated record header");
    if (AllZero(p, kHeaderSize)) {
      if (!have_header) return corrupt("segment has no header record (zero bytes)");
      size_t nz = 0;
      if (!AllZero(p + kHeaderSize, rem - kHeaderSize, &nz)) {
        return corrupt("zero-filled gap inside the log (non-zero bytes follow at offset " +
                       std::to_string(off + kHeaderSize + nz) + ")");
      }
      break;  // end of log
    }
    const uint32_t len = DecodeFixed32(p);
    const uint8_t type = static_cast<uint8_t>(p[4]);
    if (crc32c::Extend(seed, p, 12) != DecodeFixed32(p + 12)) {
      return bad(off + kHeaderSize, "record header checksum mismatch");
    }
    if (type < static_cast<uint8_t>(RecordType::kSegmentHeader) ||
        type > static_cast<uint8_t>(RecordType::kSnapshot) || p[5] || p[6] || p[7]) {
      return corrupt("unknown record type " + std::to_string(type));
    }
    if (len > kMaxPayload) return corrupt("record length " + std::to_string(len) + " too large");
    if (len > rem - kHeaderSize) {
      return bad(size, "record of " + std::to_string(len) + " bytes extends past the end of the file");
    }
    uint32_t crc = crc32c::Extend(chain, p, 8);
    crc = crc32c::Extend(crc, p + kHeaderSize, len);
    if (crc != DecodeFixed32(p + 8)) {
      return bad(off + kHeaderSize + len, "record checksum mismatch");
    }
    RecordView v{static_cast<RecordType>(type), off, p + kHeaderSize, len};
    if (!have_header) {
      if (v.type != RecordType::kSegmentHeader) return corrupt("first record is not a segment header");
      if (len != kSegmentHeaderPayload || DecodeFixed64(v.payload) != kMagic) {
        return corrupt("bad segment header");
      }
      uint32_t version = DecodeFixed32(v.payload + 8);
      if (version != kVersion) return corrupt("unsupported WAL format version " + std::to_string(version));
      r.header.seq = DecodeFixed64(v.payload + 16);
      r.header.first_index = DecodeFixed64(v.payload + 24);
      r.header.init_bytes = DecodeFixed64(v.payload + 32);
      if (r.header.seq != seq || r.header.first_index != first_index) {
        return corrupt("segment header (seq " + std::to_string(r.header.seq) + ", first index " +
                       std::to_string(r.header.first_index) + ") does not match the file name");
      }
      if (r.header.init_bytes < kHeaderSize + len) return corrupt("bad segment header");
      have_header = true;
    } else if (v.type == RecordType::kSegmentHeader) {
      return corrupt("segment header record in the middle of a segment");
    } else {
      Status s = visit(v);
      if (!s.ok()) return corrupt(s.message());
    }
    chain = crc;
    r.last_crc = chain;
    off += kHeaderSize + len;
  }
  if (off < r.header.init_bytes) {
    return corrupt("segment ends inside its initial records (expected " +
                   std::to_string(r.header.init_bytes) + " bytes)");
  }
  r.kind = ScanResult::Kind::kClean;
  r.offset = off;
  return r;
}

}  // namespace engram::wal::format
