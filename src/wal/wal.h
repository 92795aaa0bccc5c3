// Engram's write-ahead log: the durability point of the write path.
//
// Raft hands the server a batch of entries and a HardState; the raft loop
// thread Append()s the records of many proposals and then calls Sync() once
// (group commit: one fdatasync for the whole batch) before it sends messages or
// acknowledges anything.
//
// On disk (full specification: src/wal/FORMAT.md):
//  * A directory of segment files "%016x-%016x.wal" (sequence number, index of
//    the first entry the segment may hold). Only the last segment (the tail) is
//    written; each is preallocated to Options::segment_bytes and is built under
//    "<name>.tmp", fdatasync'ed and renamed into place, then the dir is fsync'ed.
//  * A segment is a run of records: a 16-byte header {u32 len, u8 type, 3 zero
//    bytes, u32 crc, u32 header crc} and a payload. All integers little-endian,
//    CRCs are CRC-32C seeded from the segment's sequence number; each record's
//    crc chains from the previous record's, the header crc lets the length be
//    trusted on its own. Type 0 does not exist, so 16 zero bytes = end of log.
//  * Record types: segment header (magic, version, seq, first index), metadata,
//    hard state, entry, snapshot marker. Every segment starts with a segment
//    header, the current metadata, hard state and snapshot marker, so replay
//    from any segment is self-contained once older segments are released.
//  * Recovery: a bad record at the end of the tail segment followed only by
//    zeros is a torn write from a crash: it is truncated with a LOG_WARN naming
//    file and offset. Any other damage is Status::Corruption naming file and
//    offset: Engram never skips a record that may hold an acknowledged entry.
//  * Release: ReleaseTo(i) deletes the oldest segments whose entries are all
//    <= i; never the tail.
//
// Failpoints (src/common/failpoint.h): "wal-before-fsync" (just before the
// tail's fdatasync), "wal-after-write-before-fsync" (end of Append, after its
// write), "wal-before-cut" (start of a segment cut), "wal-cut-before-rename"
// (new segment written and synced under its temp name, not yet renamed).
// With action "error" each makes the call fail with IOError (and the Wal
// unusable, as a real failure would).
//
// Thread safety: NOT thread-safe. A Wal has one owner thread (the raft loop);
// every method must be called from it (or with external synchronisation).
// The probe (WalProbe) is made of atomics and may be read by any thread.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "src/common/probe.h"
#include "src/common/status.h"
#include "src/raft/types.h"
#include "src/wal/format.h"

namespace engram::wal {

// Read by the metrics exporter; counted at the exact point.
struct WalProbe {
  Histogram fsync_seconds{BucketsB1()};  // each fdatasync of a segment, and directory fsyncs
  Histogram write_seconds{BucketsB1()};  // each write (pwrite) of appended records
  Counter write_bytes;                   // bytes written by Append incl. framing
};

struct Options {
  std::string dir;                   // e.g. <data-dir>/member/wal
  uint64_t segment_bytes = 64 << 20;  // preallocated size of each segment
  WalProbe* probe = nullptr;         // may be null
};

// Where the log restarts after a snapshot (etcd's walpb.Snapshot). index == 0
// means "no snapshot recorded".
struct SnapshotMarker {
  uint64_t index = 0;
  uint64_t term = 0;
  raft::ConfState conf_state;
  bool operator==(const SnapshotMarker&) const = default;
};

struct ReplayResult {
  raft::HardState hard_state;        // the last one recorded
  std::vector<raft::Entry> entries;  // every surviving entry, in index order, conflicts resolved
  std::string metadata;              // opaque blob the owner stores (member id, cluster id), last one recorded
  uint64_t first_index = 0;          // index of entries.front() (or next index if none)
  bool created = false;              // true if the dir was empty and a new WAL was created
  SnapshotMarker snapshot;           // the last one recorded (entries <= snapshot.index are dropped)
};

class Wal {
 public:
  // Opens the WAL in options.dir, creating it (with `metadata`) if absent or
  // without segments, and replays everything into *out. `metadata` is ignored
  // when the WAL already exists (out->metadata holds the recorded one).
  // A torn tail (a partly written last record after a crash: bad CRC or short
  // read, followed only by zeros/end of the preallocated file) is truncated with
  // a LOG_WARN naming file and offset. Any damage before the tail returns
  // Status::Corruption whose message names the file path and byte offset and
  // says what to do (restore the member from a snapshot / remove the data dir
  // to rejoin). I/O failures return IOError.
  static Result<std::unique_ptr<Wal>> Open(const Options& options, const std::string& metadata,
                                           ReplayResult* out);

  ~Wal();  // closes the tail without syncing it (use Close() or Sync() first)
  Wal(const Wal&) = delete;
  Wal& operator=(const Wal&) = delete;

  // Encodes the entries, then hs, into one buffer and writes it with one
  // pwrite (more only when a new segment has to be cut in between); no fsync.
  // Entries must be contiguous and entries[0].index <= LastIndex() + 1 (else
  // InvalidArgument, nothing written); an entry whose index is <= LastIndex()
  // truncates the log from that index (raft conflict resolution): replay then
  // returns the newer entries. An empty hs (Empty()), or one equal to the last
  // written, is not written.
  Status Append(const raft::HardState& hs, const std::vector<raft::Entry>& entries);
  // fdatasync of the tail segment (observed into probe->fsync_seconds; a
  // LOG_WARN "slow fdatasync" if it takes more than 1s). No-op if nothing was
  // written since the last sync.
  Status Sync();
  Status Save(const raft::HardState& hs, const std::vector<raft::Entry>& entries);  // Append + Sync

  // Records a snapshot marker and syncs. Call it only once the snapshot itself
  // is durable. On replay, entries <= marker.index are dropped; if marker.index
  // is beyond LastIndex() the log restarts there (LastIndex() becomes
  // marker.index, the next entry may be marker.index + 1).
  Status SaveSnapshot(const SnapshotMarker& marker);
  // Records new metadata (e.g. once the cluster id is known) and syncs.
  Status SaveMetadata(const std::string& metadata);

  // Releases (deletes) whole segments all of whose entries have index <=
  // `index`, oldest first. The segment containing `index`+1 and later ones
  // stay. Never deletes the tail segment.
  Status ReleaseTo(uint64_t index);

  // Syncs and closes. Afterwards every method returns FailedPrecondition.
  Status Close();

  uint64_t LastIndex() const { return last_index_; }
  size_t SegmentCount() const { return segments_.size(); }
  // Paths of the segment files, oldest first (diagnostics and tests).
  std::vector<std::string> SegmentPaths() const;

 private:
  struct Segment {
    uint64_t seq = 0;
    uint64_t first_index = 0;
    std::string path;
    bool has_entries = false;
    uint64_t max_index = 0;  // largest entry index written to it (if has_entries)
  };

  explicit Wal(const Options& o);
  Status Create(const std::string& metadata);
  Status Replay(std::vector<std::pair<uint64_t, uint64_t>> names, ReplayResult* out);
  // Builds segment (seq, first_index) under a temp name with its initial group
  // and renames it into place; on success *fd is open on it.
  Status CreateSegment(uint64_t seq, uint64_t first_index, int* fd, uint64_t* init_bytes,
                       uint32_t* chain);
  // Finishes the tail and starts a new one whose first entry will be first_index.
  Status Cut(uint64_t first_index);
  bool NeedCut(size_t record_size) const;
  Status Flush();      // writes buf_ at tail_off_
  Status SyncTail();   // fdatasync of the tail
  Status SyncDir();
  Status Fsync(int fd, const std::string& path, bool data_only);
  Status Fail(Status s);  // makes s sticky and returns it
  std::string SegmentPath(uint64_t seq, uint64_t first_index) const;

  Options opts_;
  std::deque<Segment> segments_;  // oldest first; back() is the tail
  int fd_ = -1;                   // the tail, open for writing
  uint64_t tail_off_ = 0;         // where the next record goes in the tail
  uint64_t tail_init_end_ = 0;    // end of the tail's initial group
  format::Encoder enc_{0, 0};     // CRC chain of the tail
  bool dirty_ = false;            // written since the last fdatasync
  uint64_t last_index_ = 0;
  raft::HardState hs_;            // last hard state written
  std::string metadata_;          // last metadata written
  SnapshotMarker snapshot_;       // last snapshot marker written
  Status broken_;                 // sticky: after a failed write/fsync nothing more is accepted
  format::Buffer buf_;            // reused encode buffer
};

}  // namespace engram::wal
