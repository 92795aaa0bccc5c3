#include "src/wal/wal.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <utility>

#include "src/common/failpoint.h"
#include "src/common/log.h"

namespace engram::wal {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr double kWarnSyncSeconds = 1.0;                // etcd's warnSyncDuration
constexpr size_t kMaxRetainedBuffer = size_t{64} << 20;  // free the encode buffer above this

double Since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Formats a duration the way Go's time.Duration prints (etcd logs "took" so).
std::string GoDuration(double secs) {
  uint64_t ns = static_cast<uint64_t>(std::llround(secs * 1e9));
  if (ns == 0) return "0s";
  auto frac = [](uint64_t v, uint64_t unit, const char* suffix) {
    char b[48];
    std::snprintf(b, sizeof b, "%" PRIu64 ".%0*" PRIu64, v / unit,
                  unit == 1000 ? 3 : unit == 1000000 ? 6 : 9, v % unit);
    std::string s = b;
    while (s.back() == '0') s.pop_back();
    if (s.back() == '.') s.pop_back();
    return s + suffix;
  };
  if (ns < 1000) return std::to_string(ns) + "ns";
  if (ns < 1000000) return frac(ns, 1000, "µs");
  if (ns < 1000000000) return frac(ns, 1000000, "ms");
  std::string out;
  uint64_t h = ns / 3600000000000ull;
  uint64_t m = ns / 60000000000ull % 60;
  if (h) out += std::to_string(h) + "h";
  if (h || m) out += std::to_string(m) + "m";
  return out + frac(ns % 60000000000ull, 1000000000, "s");
}

Status PwriteAll(int fd, const char* p, size_t n, uint64_t off, const std::string& path) {
  while (n > 0) {
    ssize_t w = ::pwrite(fd, p, n, static_cast<off_t>(off));
    if (w < 0) {
      if (errno == EINTR) continue;
      return Status::Errno("write", path, errno);
    }
    p += w;
    n -= static_cast<size_t>(w);
    off += static_cast<uint64_t>(w);
  }
  return Status::OK();
}

Status ReadAll(int fd, const std::string& path, format::Buffer* b, size_t* size) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return Status::Errno("stat", path, errno);
  size_t n = static_cast<size_t>(st.st_size);
  b->Clear();
  char* p = b->Extend(n);
  size_t done = 0;
  while (done < n) {
    ssize_t r = ::pread(fd, p + done, n - done, static_cast<off_t>(done));
    if (r < 0) {
      if (errno == EINTR) continue;
      return Status::Errno("read", path, errno);
    }
    if (r == 0) break;  // shrank under us: scan what we have
    done += static_cast<size_t>(r);
  }
  *size = done;
  return Status::OK();
}

Status CorruptionAt(const std::string& path, uint64_t off, const std::string& reason) {
  return Status::Corruption(
      "wal: " + path + ": corrupt WAL record at offset " + std::to_string(off) + ": " + reason +
      ". The log is damaged before its end, so this is not a torn write from a crash; refusing to "
      "start rather than lose acknowledged entries. Restore this member from a snapshot "
      "(etcdutl snapshot restore), or remove its data dir and re-add it to the cluster "
      "(member remove + member add) to rejoin");
}

bool EndsWith(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Rebuilds the replayed state record by record (FORMAT.md, "Replay").
// Invariant: entries is empty or contiguous with entries.back().index == last.
struct Replayer {
  ReplayResult* out;
  uint64_t last = 0;
  bool* seg_has_entries = nullptr;
  uint64_t* seg_max_index = nullptr;

  void DropUpTo(uint64_t index) {
    auto& ents = out->entries;
    if (ents.empty() || ents.front().index > index) return;
    if (ents.back().index <= index) {
      ents.clear();
    } else {
      ents.erase(ents.begin(), ents.begin() + static_cast<ptrdiff_t>(index - ents.front().index + 1));
    }
  }

  Status Visit(const format::RecordView& v) {
    switch (v.type) {
      case format::RecordType::kMetadata:
        out->metadata.assign(v.payload, v.len);
        return Status::OK();
      case format::RecordType::kHardState:
        if (!format::DecodeHardState(v, &out->hard_state)) return Status::Corruption("malformed hard state record");
        return Status::OK();
      case format::RecordType::kSnapshot: {
        SnapshotMarker s;
        if (!format::DecodeSnapshot(v, &s)) return Status::Corruption("malformed snapshot record");
        DropUpTo(s.index);
        if (s.index > last) last = s.index;
        out->snapshot = std::move(s);
        return Status::OK();
      }
      case format::RecordType::kEntry: {
        raft::Entry e;
        if (!format::DecodeEntry(v, &e)) return Status::Corruption("malformed entry record");
        if (e.index == 0) return Status::Corruption("entry with index 0");
        if (e.index > last + 1) {
          return Status::Corruption("entry index " + std::to_string(e.index) + " does not follow index " +
                                    std::to_string(last) + " (gap in the log)");
        }
        auto& ents = out->entries;
        if (!ents.empty() && e.index <= ents.back().index) {  // conflict: the newer entry wins
          if (e.index <= ents.front().index) {
            ents.clear();
          } else {
            ents.erase(ents.begin() + static_cast<ptrdiff_t>(e.index - ents.front().index), ents.end());
          }
        }
        last = e.index;
        *seg_max_index = *seg_has_entries ? std::max(*seg_max_index, e.index) : e.index;
        *seg_has_entries = true;
        ents.push_back(std::move(e));
        return Status::OK();
      }
      case format::RecordType::kSegmentHeader:
        break;  // handled by Scan
    }
    return Status::Corruption("unexpected record type");
  }
};

}  // namespace

Wal::Wal(const Options& o) : opts_(o) {}

Wal::~Wal() {
  if (fd_ >= 0) ::close(fd_);
}

std::string Wal::SegmentPath(uint64_t seq, uint64_t first_index) const {
  return (fs::path(opts_.dir) / format::SegmentName(seq, first_index)).string();
}

std::vector<std::string> Wal::SegmentPaths() const {
  std::vector<std::string> v;
  for (const auto& s : segments_) v.push_back(s.path);
  return v;
}

Status Wal::Fail(Status s) {
  if (broken_.ok()) {
    LOG_ERROR("WAL is unusable after a failed write or sync", {{"dir", opts_.dir}, {"error", s.ToString()}});
    broken_ = s;
  }
  return s;
}

Status Wal::Fsync(int fd, const std::string& path, bool data_only) {
  auto t0 = Clock::now();
  // "wal-fsync": sleep(N) makes this a slow disk, measured like one (the
  // fsync drill in tests/e2e/test_prometheus_live.py); error fails the sync.
  const bool injected = FAILPOINT("wal-fsync");
  int r = injected ? -1 : (data_only ? ::fdatasync(fd) : ::fsync(fd));
  int err = injected ? EIO : errno;
  double took = Since(t0);
  if (opts_.probe) opts_.probe->fsync_seconds.Observe(took);
  if (took > kWarnSyncSeconds) {
    LOG_WARN("slow fdatasync", {{"path", path}, {"took", GoDuration(took)}, {"expected-duration", GoDuration(kWarnSyncSeconds)}});
  }
  if (r != 0) return Status::Errno(data_only ? "fdatasync" : "fsync", path, err);
  return Status::OK();
}

Status Wal::SyncDir() {
  int fd = ::open(opts_.dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Status::Errno("open", opts_.dir, errno);
  Status s = Fsync(fd, opts_.dir, false);
  ::close(fd);
  return s;
}

Status Wal::SyncTail() {
  const std::string& path = segments_.back().path;
  if (FAILPOINT("wal-before-fsync")) {
    return Fail(Status::IOError("fdatasync " + path + ": injected failure (failpoint wal-before-fsync)"));
  }
  Status s = Fsync(fd_, path, true);
  if (!s.ok()) return Fail(s);
  dirty_ = false;
  return Status::OK();
}

Result<std::unique_ptr<Wal>> Wal::Open(const Options& options, const std::string& metadata, ReplayResult* out) {
  ReplayResult local;
  if (out == nullptr) out = &local;
  *out = ReplayResult{};
  if (options.dir.empty()) return Status::InvalidArgument("wal: Options::dir is empty");
  if (options.segment_bytes == 0) return Status::InvalidArgument("wal: Options::segment_bytes is 0");

  std::error_code ec;
  if (!fs::exists(options.dir, ec)) {
    fs::create_directories(options.dir, ec);
    if (ec) return Status::IOError("wal: create dir " + options.dir + ": " + ec.message());
    fs::permissions(options.dir, fs::perms::owner_all, fs::perm_options::replace, ec);  // 0700, as etcd
    fs::path parent = fs::path(options.dir).parent_path();
    int pfd = ::open(parent.empty() ? "." : parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (pfd >= 0) {
      ::fsync(pfd);
      ::close(pfd);
    }
  }
  std::vector<std::pair<uint64_t, uint64_t>> names;  // (seq, first index)
  std::vector<std::string> stale;
  for (const auto& de : fs::directory_iterator(options.dir, ec)) {
    std::string name = de.path().filename().string();
    uint64_t seq, first;
    if (EndsWith(name, ".wal.tmp")) {
      stale.push_back(de.path().string());
    } else if (format::ParseSegmentName(name, &seq, &first)) {
      names.emplace_back(seq, first);
    } else if (EndsWith(name, ".wal")) {
      LOG_WARN("ignoring file with an unexpected name in the WAL dir", {{"path", de.path().string()}});
    }
  }
  if (ec) return Status::IOError("wal: list dir " + options.dir + ": " + ec.message());

  std::unique_ptr<Wal> w(new Wal(options));
  for (const auto& p : stale) {  // a segment that was being built when we crashed
    if (::unlink(p.c_str()) != 0) return Status::Errno("unlink", p, errno);
    LOG_WARN("removed unfinished WAL segment", {{"path", p}});
  }
  if (!stale.empty()) ENGRAM_RETURN_IF_ERROR(w->SyncDir());

  if (names.empty()) {
    ENGRAM_RETURN_IF_ERROR(w->Create(metadata));
    out->created = true;
    out->metadata = metadata;
    out->first_index = 1;
    return w;
  }
  std::sort(names.begin(), names.end());
  for (size_t i = 1; i < names.size(); i++) {
    if (names[i].first != names[i - 1].first + 1) {
      return Status::Corruption(
          "wal: " + options.dir + ": WAL segment with sequence number " + std::to_string(names[i - 1].first + 1) +
          " is missing (next is " + w->SegmentPath(names[i].first, names[i].second) +
          "). Restore this member from a snapshot, or remove its data dir and re-add it to the cluster to rejoin");
    }
  }
  ENGRAM_RETURN_IF_ERROR(w->Replay(std::move(names), out));
  return w;
}

Status Wal::Create(const std::string& metadata) {
  metadata_ = metadata;
  int fd;
  uint64_t init;
  uint32_t chain;
  ENGRAM_RETURN_IF_ERROR(CreateSegment(0, 1, &fd, &init, &chain));
  fd_ = fd;
  segments_.push_back(Segment{0, 1, SegmentPath(0, 1), false, 0});
  tail_off_ = tail_init_end_ = init;
  enc_ = format::Encoder(0, chain);
  last_index_ = 0;
  LOG_INFO("created a new WAL segment", {{"path", segments_.back().path}, {"seq", 0}, {"first-index", 1}});
  return Status::OK();
}

Status Wal::CreateSegment(uint64_t seq, uint64_t first_index, int* fd_out, uint64_t* init_bytes, uint32_t* chain) {
  const std::string path = SegmentPath(seq, first_index);
  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Status::Errno("create", tmp, errno);
  auto fail = [&](Status s) {
    ::close(fd);
    ::unlink(tmp.c_str());
    return s;
  };
  // Preallocate so that fdatasync of appends need not flush size/extent metadata.
  int err = ::posix_fallocate(fd, 0, static_cast<off_t>(opts_.segment_bytes));
  if (err != 0) return fail(Status::Errno("preallocate", tmp, err));

  uint64_t init = format::SegmentHeaderRecordSize() + format::MetadataRecordSize(metadata_);
  if (!hs_.Empty()) init += format::HardStateRecordSize();
  if (snapshot_.index != 0) init += format::SnapshotRecordSize(snapshot_);
  format::Encoder enc(seq, format::Encoder::InitialChain(seq));
  buf_.Clear();
  enc.SegmentHeader(&buf_, seq, first_index, init);
  enc.Metadata(&buf_, metadata_);
  if (!hs_.Empty()) enc.HardState(&buf_, hs_);
  if (snapshot_.index != 0) enc.Snapshot(&buf_, snapshot_);
  ENGRAM_CHECK(buf_.size() == init, "WAL initial group size mismatch");
  Status s = PwriteAll(fd, buf_.data(), buf_.size(), 0, tmp);
  buf_.Clear();
  if (!s.ok()) return fail(s);
  s = Fsync(fd, tmp, true);
  if (!s.ok()) return fail(s);
  if (FAILPOINT("wal-cut-before-rename")) {
    return fail(Status::IOError("wal: injected failure (failpoint wal-cut-before-rename)"));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) return fail(Status::Errno("rename", tmp, errno));
  s = SyncDir();
  if (!s.ok()) {
    ::close(fd);
    return s;
  }
  *fd_out = fd;
  *init_bytes = init;
  *chain = enc.chain();
  return Status::OK();
}

Status Wal::Replay(std::vector<std::pair<uint64_t, uint64_t>> names, ReplayResult* out) {
  format::Buffer file;
  Replayer rp{out};
  for (size_t i = 0; i < names.size(); i++) {
    const auto [seq, first] = names[i];
    const bool tail = i + 1 == names.size();
    Segment seg{seq, first, SegmentPath(seq, first), false, 0};
    if (i == 0) {
      rp.last = first > 0 ? first - 1 : 0;
    } else if (first > rp.last + 1) {
      return CorruptionAt(seg.path, 0,
                          "segment starts at index " + std::to_string(first) + " but the log before it ends at index " +
                              std::to_string(rp.last) + " (a segment is missing)");
    }
    int fd = ::open(seg.path.c_str(), (tail ? O_RDWR : O_RDONLY) | O_CLOEXEC);
    if (fd < 0) return Status::Errno("open", seg.path, errno);
    size_t size = 0;
    Status s = ReadAll(fd, seg.path, &file, &size);
    if (!s.ok()) {
      ::close(fd);
      return s;
    }
    rp.seg_has_entries = &seg.has_entries;
    rp.seg_max_index = &seg.max_index;
    format::ScanResult sr = format::Scan(file.data(), size, seq, first, tail,
                                         [&rp](const format::RecordView& v) { return rp.Visit(v); });
    if (sr.kind == format::ScanResult::Kind::kCorrupt) {
      ::close(fd);
      return CorruptionAt(seg.path, sr.offset, sr.reason);
    }
    segments_.push_back(std::move(seg));
    if (!tail) {
      ::close(fd);
      continue;
    }
    fd_ = fd;
    const std::string& path = segments_.back().path;
    if (sr.kind == format::ScanResult::Kind::kTorn) {
      LOG_WARN("repaired torn WAL tail: dropped a partly written last record",
               {{"path", path}, {"offset", sr.offset}, {"file-size", size}, {"reason", sr.reason}});
      if (::ftruncate(fd_, static_cast<off_t>(sr.offset)) != 0) return Status::Errno("truncate", path, errno);
      size = sr.offset;
    }
    if (size < opts_.segment_bytes) {
      int err = ::posix_fallocate(fd_, 0, static_cast<off_t>(opts_.segment_bytes));
      if (err != 0) return Status::Errno("preallocate", path, err);
    }
    if (sr.kind == format::ScanResult::Kind::kTorn) ENGRAM_RETURN_IF_ERROR(Fsync(fd_, path, true));
    tail_off_ = sr.offset;
    tail_init_end_ = sr.header.init_bytes;
    enc_ = format::Encoder(seq, sr.last_crc);
  }
  last_index_ = rp.last;
  out->first_index = out->entries.empty() ? rp.last + 1 : out->entries.front().index;
  hs_ = out->hard_state;
  metadata_ = out->metadata;
  snapshot_ = out->snapshot;
  return Status::OK();
}

bool Wal::NeedCut(size_t record_size) const {
  uint64_t used = tail_off_ + buf_.size();
  return used + record_size > opts_.segment_bytes && used > tail_init_end_;
}

Status Wal::Flush() {
  size_t n = buf_.size();
  if (n == 0) return Status::OK();
  auto t0 = Clock::now();
  Status s = PwriteAll(fd_, buf_.data(), n, tail_off_, segments_.back().path);
  if (opts_.probe) opts_.probe->write_seconds.ObserveSince(t0);
  if (buf_.capacity() > kMaxRetainedBuffer) {
    buf_.Release();
  } else {
    buf_.Clear();
  }
  if (!s.ok()) return Fail(s);
  if (opts_.probe) opts_.probe->write_bytes.Inc(n);
  tail_off_ += n;
  dirty_ = true;
  return Status::OK();
}

Status Wal::Cut(uint64_t first_index) {
  if (FAILPOINT("wal-before-cut")) return Fail(Status::IOError("wal: injected failure (failpoint wal-before-cut)"));
  // Seal the old tail: drop its preallocated space and make it durable, so
  // every non-tail segment is complete (FORMAT.md).
  const Segment& old = segments_.back();
  if (::ftruncate(fd_, static_cast<off_t>(tail_off_)) != 0) return Fail(Status::Errno("truncate", old.path, errno));
  ENGRAM_RETURN_IF_ERROR(SyncTail());
  const uint64_t seq = old.seq + 1;
  int fd;
  uint64_t init;
  uint32_t chain;
  Status s = CreateSegment(seq, first_index, &fd, &init, &chain);
  if (!s.ok()) return Fail(s);
  ::close(fd_);
  fd_ = fd;
  segments_.push_back(Segment{seq, first_index, SegmentPath(seq, first_index), false, 0});
  tail_off_ = tail_init_end_ = init;
  enc_ = format::Encoder(seq, chain);
  dirty_ = false;
  LOG_INFO("created a new WAL segment",
           {{"path", segments_.back().path}, {"seq", seq}, {"first-index", first_index}});
  return Status::OK();
}

Status Wal::Append(const raft::HardState& hs, const std::vector<raft::Entry>& entries) {
  if (!broken_.ok()) return broken_;
  if (!entries.empty()) {
    if (entries[0].index == 0) return Status::InvalidArgument("wal: entry index 0");
    if (entries[0].index > last_index_ + 1) {
      return Status::InvalidArgument("wal: entry index " + std::to_string(entries[0].index) +
                                     " does not follow the last index " + std::to_string(last_index_));
    }
    for (size_t i = 0; i < entries.size(); i++) {
      if (i > 0 && entries[i].index != entries[i - 1].index + 1) {
        return Status::InvalidArgument("wal: entries are not contiguous (index " + std::to_string(entries[i].index) +
                                       " after " + std::to_string(entries[i - 1].index) + ")");
      }
      if (entries[i].data.size() > format::kMaxPayload - format::kEntryFixed) {
        return Status::InvalidArgument("wal: entry " + std::to_string(entries[i].index) + " is too large");
      }
    }
  }
  const bool write_hs = !hs.Empty() && hs != hs_;
  buf_.Clear();
  for (const auto& e : entries) {
    if (NeedCut(format::EntryRecordSize(e))) {
      ENGRAM_RETURN_IF_ERROR(Flush());
      ENGRAM_RETURN_IF_ERROR(Cut(e.index));
    }
    enc_.Entry(&buf_, e);
    Segment& tail = segments_.back();
    tail.max_index = tail.has_entries ? std::max(tail.max_index, e.index) : e.index;
    tail.has_entries = true;
    last_index_ = e.index;
  }
  if (write_hs) {
    if (NeedCut(format::HardStateRecordSize())) {
      ENGRAM_RETURN_IF_ERROR(Flush());
      ENGRAM_RETURN_IF_ERROR(Cut(last_index_ + 1));
    }
    enc_.HardState(&buf_, hs);
    hs_ = hs;
  }
  ENGRAM_RETURN_IF_ERROR(Flush());
  if (FAILPOINT("wal-after-write-before-fsync")) {
    return Fail(Status::IOError("wal: injected failure (failpoint wal-after-write-before-fsync)"));
  }
  return Status::OK();
}

Status Wal::Sync() {
  if (!broken_.ok()) return broken_;
  if (!dirty_) return Status::OK();
  return SyncTail();
}

Status Wal::Save(const raft::HardState& hs, const std::vector<raft::Entry>& entries) {
  ENGRAM_RETURN_IF_ERROR(Append(hs, entries));
  return Sync();
}

Status Wal::SaveSnapshot(const SnapshotMarker& marker) {
  if (!broken_.ok()) return broken_;
  if (marker.index == 0) return Status::InvalidArgument("wal: snapshot marker with index 0");
  buf_.Clear();
  if (NeedCut(format::SnapshotRecordSize(marker))) ENGRAM_RETURN_IF_ERROR(Cut(last_index_ + 1));
  enc_.Snapshot(&buf_, marker);
  snapshot_ = marker;
  if (marker.index > last_index_) last_index_ = marker.index;
  ENGRAM_RETURN_IF_ERROR(Flush());
  return Sync();
}

Status Wal::SaveMetadata(const std::string& metadata) {
  if (!broken_.ok()) return broken_;
  if (metadata.size() > format::kMaxPayload) return Status::InvalidArgument("wal: metadata too large");
  buf_.Clear();
  if (NeedCut(format::MetadataRecordSize(metadata))) ENGRAM_RETURN_IF_ERROR(Cut(last_index_ + 1));
  enc_.Metadata(&buf_, metadata);
  metadata_ = metadata;
  ENGRAM_RETURN_IF_ERROR(Flush());
  return Sync();
}

Status Wal::ReleaseTo(uint64_t index) {
  if (!broken_.ok()) return broken_;
  size_t n = 0;
  while (n + 1 < segments_.size()) {
    const Segment& s = segments_[n];
    if (s.has_entries && s.max_index > index) break;
    n++;
  }
  if (n == 0) return Status::OK();
  Status st;
  for (size_t i = 0; i < n; i++) {  // oldest first: a failure leaves a consistent suffix
    const Segment s = segments_.front();
    if (::unlink(s.path.c_str()) != 0 && errno != ENOENT) {
      st = Status::Errno("unlink", s.path, errno);
      break;
    }
    segments_.pop_front();
    LOG_INFO("released WAL segment", {{"path", s.path},
                                      {"segment-last-index", s.has_entries ? s.max_index : 0},
                                      {"release-index", index}});
  }
  Status ds = SyncDir();
  return st.ok() ? ds : st;
}

Status Wal::Close() {
  if (fd_ < 0) return broken_;
  Status s = broken_.ok() ? Sync() : broken_;
  ::close(fd_);
  fd_ = -1;
  broken_ = Status::FailedPrecondition("wal: closed");
  return s;
}

}  // namespace engram::wal
