#include "src/wal/wal.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "src/common/coding.h"
#include "src/common/failpoint.h"
#include "src/common/log.h"
#include "src/wal/format.h"

namespace engram::wal {
namespace {

namespace fs = std::filesystem;
using raft::Entry;
using raft::EntryType;
using raft::HardState;

constexpr uint64_t k64K = 64 << 10;

std::string Data(uint64_t index, size_t n) {
  std::string s(n, 'x');
  for (size_t i = 0; i < n; i++) s[i] = static_cast<char>('a' + (index * 7 + i) % 26);
  return s;
}

Entry E(uint64_t index, uint64_t term, size_t n, EntryType type = EntryType::kNormal) {
  return Entry{term, index, type, Data(index + term, n)};
}

std::vector<Entry> Range(uint64_t from, uint64_t to, uint64_t term, size_t n) {
  std::vector<Entry> v;
  for (uint64_t i = from; i <= to; i++) v.push_back(E(i, term, n));
  return v;
}

std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Rewrites the file with exactly `bytes` (size included).
void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(f.good());
}

// (offset, size) of each record of a segment file, walking the headers up to
// the first zero header or the end of the file (FORMAT.md framing).
std::vector<std::pair<uint64_t, uint64_t>> Records(const std::string& b) {
  std::vector<std::pair<uint64_t, uint64_t>> v;
  uint64_t off = 0;
  while (off + format::kHeaderSize <= b.size() && !format::AllZero(b.data() + off, format::kHeaderSize)) {
    uint64_t sz = format::kHeaderSize + DecodeFixed32(b.data() + off);
    v.emplace_back(off, sz);
    off += sz;
  }
  return v;
}

// Redirects the process log to a file for the lifetime of the object.
class LogCapture {
 public:
  explicit LogCapture(std::string path) : path_(std::move(path)) {
    std::string err;
    EXPECT_TRUE(log::SetOutputs({path_}, &err)) << err;
  }
  ~LogCapture() {
    std::string err;
    log::SetOutputs({"stderr"}, &err);
  }
  std::string Text() const { return ReadFile(path_); }

 private:
  std::string path_;
};

class WalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "engram-wal-XXXXXX";
    ASSERT_NE(nullptr, ::mkdtemp(tmpl.data()));
    root_ = tmpl;
    dir_ = root_ + "/member/wal";
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }

  Options Opts(uint64_t segment_bytes = k64K) {
    Options o;
    o.dir = dir_;
    o.segment_bytes = segment_bytes;
    o.probe = &probe_;
    return o;
  }

  std::unique_ptr<Wal> MustOpen(const Options& o, ReplayResult* rr, const std::string& md = "md") {
    auto r = Wal::Open(o, md, rr);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    if (!r.ok()) return nullptr;
    return std::move(r).value();
  }

  // Reopens and returns the replay.
  ReplayResult Reopen(const Options& o) {
    ReplayResult rr;
    auto w = MustOpen(o, &rr);
    if (w) {
      EXPECT_TRUE(w->Close().ok());
    }
    return rr;
  }

  std::string root_;
  std::string dir_;
  WalProbe probe_;
};

TEST_F(WalTest, CreatesFreshWalWithPreallocatedFirstSegment) {
  ReplayResult rr;
  auto w = MustOpen(Opts(), &rr, "member=1,cluster=2");
  ASSERT_TRUE(w);
  EXPECT_TRUE(rr.created);
  EXPECT_EQ("member=1,cluster=2", rr.metadata);
  EXPECT_EQ(1u, rr.first_index);
  EXPECT_TRUE(rr.entries.empty());
  EXPECT_TRUE(rr.hard_state.Empty());
  EXPECT_EQ(0u, w->LastIndex());
  ASSERT_EQ(1u, w->SegmentCount());
  std::string seg = w->SegmentPaths()[0];
  EXPECT_EQ(dir_ + "/0000000000000000-0000000000000001.wal", seg);
  EXPECT_EQ(k64K, fs::file_size(seg));  // preallocated
  ASSERT_TRUE(w->Close().ok());

  // The metadata argument only matters at creation.
  ReplayResult again;
  auto w2 = MustOpen(Opts(), &again, "other");
  ASSERT_TRUE(w2);
  EXPECT_FALSE(again.created);
  EXPECT_EQ("member=1,cluster=2", again.metadata);
  EXPECT_EQ(1u, again.first_index);
}

TEST_F(WalTest, RoundTripAcrossSegmentCuts) {
  const Options o = Opts(k64K);
  std::vector<Entry> all;
  HardState hs;
  {
    ReplayResult rr;
    auto w = MustOpen(o, &rr, "member-1/cluster-9");
    ASSERT_TRUE(w);
    uint64_t idx = 1;
    for (int batch = 0; batch < 200; batch++) {
      std::vector<Entry> ents;
      for (int k = 0; k < 10; k++, idx++) {
        ents.push_back(E(idx, 1 + batch / 50, (idx * 37) % 300,
                         idx % 13 == 0 ? EntryType::kConfChange : EntryType::kNormal));
      }
      all.insert(all.end(), ents.begin(), ents.end());
      hs = HardState{1 + static_cast<uint64_t>(batch) / 50, 3, idx - 5};
      if (batch % 2) {
        ASSERT_TRUE(w->Save(hs, ents).ok());
      } else {
        ASSERT_TRUE(w->Append(hs, ents).ok());
        ASSERT_TRUE(w->Sync().ok());
      }
    }
    EXPECT_EQ(2000u, w->LastIndex());
    EXPECT_GE(w->SegmentCount(), 4u);
    // Names: %016x-%016x.wal, consecutive sequence numbers; non-tail segments
    // are sealed at their last record and hold at most segment_bytes.
    std::regex re("^[0-9a-f]{16}-[0-9a-f]{16}\\.wal$");
    auto paths = w->SegmentPaths();
    for (size_t i = 0; i < paths.size(); i++) {
      std::string name = fs::path(paths[i]).filename().string();
      EXPECT_TRUE(std::regex_match(name, re)) << name;
      uint64_t seq, first;
      ASSERT_TRUE(format::ParseSegmentName(name, &seq, &first));
      EXPECT_EQ(i, seq);
      if (i + 1 < paths.size()) {
        EXPECT_LE(fs::file_size(paths[i]), k64K);
      }
    }
    ASSERT_TRUE(w->Close().ok());
  }
  ReplayResult rr = Reopen(o);
  EXPECT_FALSE(rr.created);
  EXPECT_EQ("member-1/cluster-9", rr.metadata);
  EXPECT_EQ(hs, rr.hard_state);
  EXPECT_EQ(1u, rr.first_index);
  ASSERT_EQ(all.size(), rr.entries.size());
  EXPECT_TRUE(all == rr.entries);
  // Each segment's name gives the index of the first entry it holds.
  for (const auto& de : fs::directory_iterator(dir_)) {
    uint64_t seq, first;
    ASSERT_TRUE(format::ParseSegmentName(de.path().filename().string(), &seq, &first));
    std::string b = ReadFile(de.path().string());
    for (auto [off, sz] : Records(b)) {
      if (static_cast<format::RecordType>(b[off + 4]) == format::RecordType::kEntry) {
        EXPECT_EQ(first, DecodeFixed64(b.data() + off + format::kHeaderSize + 8)) << de.path();
        break;
      }
    }
  }
}

TEST_F(WalTest, ReopenAfterCloseContinuesIndexes) {
  const Options o = Opts();
  {
    ReplayResult rr;
    auto w = MustOpen(o, &rr);
    ASSERT_TRUE(w->Save(HardState{1, 1, 10}, Range(1, 50, 1, 40)).ok());
    ASSERT_TRUE(w->Close().ok());
    EXPECT_EQ(Code::kFailedPrecondition, w->Append({}, Range(51, 51, 1, 1)).code());
  }
  {
    ReplayResult rr;
    auto w = MustOpen(o, &rr);
    EXPECT_EQ(50u, w->LastIndex());
    EXPECT_EQ(50u, rr.entries.size());
    // A gap is refused and writes nothing.
    EXPECT_EQ(Code::kInvalidArgument, w->Append({}, Range(52, 53, 1, 1)).code());
    std::vector<Entry> holes = {E(51, 1, 1), E(53, 1, 1)};
    EXPECT_EQ(Code::kInvalidArgument, w->Append({}, holes).code());
    ASSERT_TRUE(w->Save(HardState{2, 1, 60}, Range(51, 100, 2, 40)).ok());
    EXPECT_EQ(100u, w->LastIndex());
    ASSERT_TRUE(w->Close().ok());
  }
  ReplayResult rr = Reopen(o);
  ASSERT_EQ(100u, rr.entries.size());
  for (uint64_t i = 0; i < 100; i++) EXPECT_EQ(i + 1, rr.entries[i].index);
  EXPECT_EQ(2u, rr.entries[99].term);
  EXPECT_EQ((HardState{2, 1, 60}), rr.hard_state);
}

TEST_F(WalTest, ConflictingEntriesTruncateTheLog) {
  const Options o = Opts();
  {
    ReplayResult rr;
    auto w = MustOpen(o, &rr);
    ASSERT_TRUE(w->Save(HardState{1, 1, 5}, Range(1, 10, 1, 20)).ok());
    ASSERT_TRUE(w->Save(HardState{2, 2, 5}, Range(6, 8, 2, 20)).ok());
    EXPECT_EQ(8u, w->LastIndex());
    ASSERT_TRUE(w->Close().ok());
  }
  ReplayResult rr = Reopen(o);
  ASSERT_EQ(8u, rr.entries.size());
  for (uint64_t i = 1; i <= 8; i++) {
    EXPECT_EQ(i, rr.entries[i - 1].index);
    EXPECT_EQ(i <= 5 ? 1u : 2u, rr.entries[i - 1].term) << i;
    EXPECT_EQ(E(i, i <= 5 ? 1 : 2, 20), rr.entries[i - 1]);
  }
  EXPECT_EQ((HardState{2, 2, 5}), rr.hard_state);
  // Appends continue after the truncated log.
  {
    ReplayResult r2;
    auto w = MustOpen(o, &r2);
    ASSERT_TRUE(w->Save({}, Range(9, 9, 2, 20)).ok());
    ASSERT_TRUE(w->Close().ok());
  }
  rr = Reopen(o);
  ASSERT_EQ(9u, rr.entries.size());
  EXPECT_EQ(2u, rr.entries.back().term);
}

TEST_F(WalTest, ConflictReachingIntoAnEarlierSegment) {
  const Options o = Opts(4096);
  {
    ReplayResult rr;
    auto w = MustOpen(o, &rr);
    for (uint64_t i = 1; i <= 30; i++) ASSERT_TRUE(w->Save(HardState{1, 1, 0}, Range(i, i, 1, 500)).ok());
    ASSERT_GE(w->SegmentCount(), 4u);
    ASSERT_TRUE(w->Save(HardState{3, 2, 2}, Range(3, 4, 3, 10)).ok());
    EXPECT_EQ(4u, w->LastIndex());
    ASSERT_TRUE(w->Close().ok());
  }
  ReplayResult rr = Reopen(o);
  ASSERT_EQ(4u, rr.entries.size());
  EXPECT_EQ(E(1, 1, 500), rr.entries[0]);
  EXPECT_EQ(E(2, 1, 500), rr.entries[1]);
  EXPECT_EQ(E(3, 3, 10), rr.entries[2]);
  EXPECT_EQ(E(4, 3, 10), rr.entries[3]);
}

// Builds a one-segment WAL whose last record is entry `n`; returns the tail path.
std::string BuildSmallWal(WalTest* t, const Options& o, uint64_t n, size_t data = 100) {
  ReplayResult rr;
  auto r = Wal::Open(o, "md", &rr);
  EXPECT_TRUE(r.ok());
  auto w = std::move(r).value();
  EXPECT_TRUE(w->Save(HardState{1, 1, 1}, Range(1, n - 1, 1, data)).ok());
  EXPECT_TRUE(w->Save({}, Range(n, n, 1, data)).ok());  // no hard state after it
  EXPECT_EQ(1u, w->SegmentCount());
  std::string path = w->SegmentPaths().back();
  EXPECT_TRUE(w->Close().ok());
  return path;
}

TEST_F(WalTest, TornTailIsTruncatedAndLogged) {
  const Options o = Opts();
  const std::string path = BuildSmallWal(this, o, 20);
  const std::string orig = ReadFile(path);
  auto recs = Records(orig);
  const auto [last_off, last_size] = recs.back();

  // Crash mid-record: part of the last record written, zeros after it.
  std::string torn = orig;
  std::fill(torn.begin() + static_cast<long>(last_off + format::kHeaderSize + 30), torn.end(), '\0');
  WriteFile(path, torn);

  LogCapture cap(root_ + "/log.txt");
  {
    ReplayResult rr;
    auto w = MustOpen(o, &rr);
    ASSERT_TRUE(w);
    ASSERT_EQ(19u, rr.entries.size());
    EXPECT_EQ(19u, w->LastIndex());
    EXPECT_EQ((HardState{1, 1, 1}), rr.hard_state);
    std::string logs = cap.Text();
    EXPECT_NE(std::string::npos, logs.find("torn")) << logs;
    EXPECT_NE(std::string::npos, logs.find(path)) << logs;
    EXPECT_NE(std::string::npos, logs.find("\"offset\":" + std::to_string(last_off))) << logs;
    // The torn bytes are gone (zeros), the file is preallocated again.
    std::string repaired = ReadFile(path);
    EXPECT_EQ(k64K, repaired.size());
    EXPECT_TRUE(format::AllZero(repaired.data() + last_off, repaired.size() - last_off));
    // Subsequent appends work.
    ASSERT_TRUE(w->Save(HardState{2, 1, 19}, Range(20, 25, 2, 50)).ok());
    ASSERT_TRUE(w->Close().ok());
  }
  ReplayResult rr = Reopen(o);
  ASSERT_EQ(25u, rr.entries.size());
  EXPECT_EQ(E(20, 2, 50), rr.entries[19]);
  EXPECT_EQ((HardState{2, 1, 19}), rr.hard_state);
}

TEST_F(WalTest, TornTailAtEveryByteOfTheLastRecord) {
  const Options o = Opts(8192);
  const std::string path = BuildSmallWal(this, o, 5, 40);
  const std::string orig = ReadFile(path);
  const auto [last_off, last_size] = Records(orig).back();
  for (uint64_t k = 0; k < last_size; k++) {
    SCOPED_TRACE("cut at byte " + std::to_string(k) + " of the last record");
    // Variant 1: zeros after the cut (preallocated file).
    std::string torn = orig;
    std::fill(torn.begin() + static_cast<long>(last_off + k), torn.end(), '\0');
    WriteFile(path, torn);
    ReplayResult rr = Reopen(o);
    ASSERT_EQ(4u, rr.entries.size());
    // Variant 2: the file ends at the cut (short read).
    WriteFile(path, orig.substr(0, last_off + k));
    rr = Reopen(o);
    ASSERT_EQ(4u, rr.entries.size());
  }
  WriteFile(path, orig);
  EXPECT_EQ(5u, Reopen(o).entries.size());
}

TEST_F(WalTest, CorruptionBeforeTheTailIsReportedWithFileAndOffset) {
  const Options o = Opts(8192);
  const std::string path = BuildSmallWal(this, o, 6, 30);
  const std::string orig = ReadFile(path);
  const auto recs = Records(orig);
  const uint64_t last_off = recs.back().first;
  // Flip every byte of every record but the last: never silently accepted.
  for (const auto& [off, size] : recs) {
    if (off == last_off) break;
    for (uint64_t p = off; p < off + size; p++) {
      SCOPED_TRACE("byte " + std::to_string(p));
      std::string bad = orig;
      bad[p] = static_cast<char>(bad[p] ^ 0x40);
      WriteFile(path, bad);
      ReplayResult rr;
      auto r = Wal::Open(o, "md", &rr);
      ASSERT_FALSE(r.ok());
      EXPECT_EQ(Code::kCorruption, r.status().code());
      const std::string& msg = r.status().message();
      EXPECT_NE(std::string::npos, msg.find("0000000000000000-0000000000000001.wal")) << msg;
      EXPECT_NE(std::string::npos, msg.find("offset " + std::to_string(off) + ":")) << msg;
      EXPECT_NE(std::string::npos, msg.find("snapshot")) << msg;
      EXPECT_NE(std::string::npos, msg.find("rejoin")) << msg;
    }
  }
  WriteFile(path, orig);
  EXPECT_EQ(6u, Reopen(o).entries.size());
}

TEST_F(WalTest, CorruptionInAnOlderSegmentIsNeverTreatedAsTorn) {
  const Options o = Opts(4096);
  std::vector<std::string> paths;
  {
    ReplayResult rr;
    auto w = MustOpen(o, &rr);
    for (uint64_t i = 1; i <= 40; i++) ASSERT_TRUE(w->Save(HardState{1, 1, i}, Range(i, i, 1, 300)).ok());
    paths = w->SegmentPaths();
    ASSERT_GE(paths.size(), 3u);
    ASSERT_TRUE(w->Close().ok());
  }
  const std::string seg = paths[1];
  const std::string orig = ReadFile(seg);
  const auto recs = Records(orig);
  // Even the last record of a non-tail segment, followed by nothing, is corruption.
  for (auto [off, size] : {recs[recs.size() / 2], recs.back()}) {
    std::string bad = orig;
    bad[off + size - 1] = static_cast<char>(bad[off + size - 1] ^ 1);
    WriteFile(seg, bad);
    ReplayResult rr;
    auto r = Wal::Open(o, "md", &rr);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(Code::kCorruption, r.status().code());
    EXPECT_NE(std::string::npos, r.status().message().find(seg)) << r.status().message();
    EXPECT_NE(std::string::npos, r.status().message().find("offset " + std::to_string(off) + ":"));
  }
  // Cutting a non-tail segment short is corruption too.
  WriteFile(seg, orig.substr(0, recs.back().first + 10));
  EXPECT_EQ(Code::kCorruption, Wal::Open(o, "md", nullptr).status().code());
  WriteFile(seg, orig);
  EXPECT_EQ(40u, Reopen(o).entries.size());
}

TEST_F(WalTest, ZeroedRegionInsideTheLogIsCorruption) {
  const Options o = Opts(8192);
  const std::string path = BuildSmallWal(this, o, 8, 30);
  const std::string orig = ReadFile(path);
  const auto recs = Records(orig);
  std::string bad = orig;
  auto [off, size] = recs[recs.size() - 3];
  std::fill(bad.begin() + static_cast<long>(off), bad.begin() + static_cast<long>(off + size), '\0');
  WriteFile(path, bad);
  auto r = Wal::Open(o, "md", nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(Code::kCorruption, r.status().code());
  EXPECT_NE(std::string::npos, r.status().message().find("offset " + std::to_string(off) + ":"));
  // A torn record followed by later data (not just zeros) is corruption too.
  bad = orig;
  auto [off2, size2] = recs[recs.size() - 2];
  std::fill(bad.begin() + static_cast<long>(off2 + 20), bad.begin() + static_cast<long>(off2 + size2), '\0');
  WriteFile(path, bad);
  r = Wal::Open(o, "md", nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(Code::kCorruption, r.status().code());
  EXPECT_NE(std::string::npos, r.status().message().find("offset " + std::to_string(off2) + ":"));
}

TEST_F(WalTest, StaleRecordsFromAnotherSegmentAreNotReplayed) {
  const Options o = Opts(4096);
  std::vector<std::string> paths;
  {
    ReplayResult rr;
    auto w = MustOpen(o, &rr);
    for (uint64_t i = 1; i <= 30; i++) ASSERT_TRUE(w->Save({}, Range(i, i, 1, 300)).ok());
    paths = w->SegmentPaths();
    ASSERT_TRUE(w->Close().ok());
  }
  ReplayResult before = Reopen(o);
  // Copy a valid entry record of segment 0 right after the tail's last record,
  // as stale bytes of a reused file would be: it must not verify.
  std::string s0 = ReadFile(paths[0]);
  auto r0 = Records(s0).back();
  std::string tail = ReadFile(paths.back());
  auto rt = Records(tail).back();
  tail.replace(rt.first + rt.second, r0.second, s0.substr(r0.first, r0.second));
  WriteFile(paths.back(), tail);
  ReplayResult rr;
  auto r = Wal::Open(o, "md", &rr);
  if (r.ok()) {
    EXPECT_TRUE(rr.entries == before.entries);
  } else {
    EXPECT_EQ(Code::kCorruption, r.status().code());
  }
}

// A valid record copied over its neighbour (a misdirected write) would replay
// as a conflicting entry and silently shorten the log; the CRC chain catches it.
TEST_F(WalTest, RecordCopiedWithinASegmentIsCorruption) {
  const Options o = Opts();
  const std::string path = BuildSmallWal(this, o, 8, 50);
  std::string b = ReadFile(path);
  auto recs = Records(b);
  // Records: segment header, metadata, entries 1..7, hard state, entry 8.
  auto [off3, size3] = recs[4];
  auto [off4, size4] = recs[5];
  ASSERT_EQ(size3, size4);
  ASSERT_EQ(3u, DecodeFixed64(b.data() + off3 + format::kHeaderSize + 8));
  b.replace(off4, size4, b.substr(off3, size3));
  WriteFile(path, b);
  auto r = Wal::Open(o, "md", nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(Code::kCorruption, r.status().code());
  EXPECT_NE(std::string::npos, r.status().message().find("offset " + std::to_string(off4) + ":"));
}

TEST_F(WalTest, MissingOrRenamedSegmentsAreCorruption) {
  const Options o = Opts(4096);
  std::vector<std::string> paths;
  {
    ReplayResult rr;
    auto w = MustOpen(o, &rr);
    for (uint64_t i = 1; i <= 30; i++) ASSERT_TRUE(w->Save({}, Range(i, i, 1, 300)).ok());
    paths = w->SegmentPaths();
    ASSERT_GE(paths.size(), 3u);
    ASSERT_TRUE(w->Close().ok());
  }
  // A file whose name does not match its header.
  uint64_t seq, first;
  ASSERT_TRUE(format::ParseSegmentName(fs::path(paths[1]).filename().string(), &seq, &first));
  std::string renamed = dir_ + "/" + format::SegmentName(seq, first + 1);
  fs::rename(paths[1], renamed);
  auto r = Wal::Open(o, "md", nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(Code::kCorruption, r.status().code());
  EXPECT_NE(std::string::npos, r.status().message().find(renamed)) << r.status().message();
  // A missing segment.
  fs::remove(renamed);
  r = Wal::Open(o, "md", nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(Code::kCorruption, r.status().code());
  EXPECT_NE(std::string::npos, r.status().message().find("missing")) << r.status().message();
}

TEST_F(WalTest, LeftoverTempSegmentIsRemoved) {
  const Options o = Opts();
  BuildSmallWal(this, o, 3);
  std::string tmp = dir_ + "/" + format::SegmentName(1, 4) + ".tmp";
  WriteFile(tmp, std::string(100, 'z'));
  ReplayResult rr = Reopen(o);
  EXPECT_EQ(3u, rr.entries.size());
  EXPECT_FALSE(fs::exists(tmp));
}

TEST_F(WalTest, ReleaseToDeletesOnlyFullyCoveredSegments) {
  const Options o = Opts(k64K);
  ReplayResult rr;
  auto w = MustOpen(o, &rr, "md-v1");
  // The hard state is written once, at the start: after release it must come
  // from the first remaining segment's initial records.
  ASSERT_TRUE(w->Save(HardState{4, 2, 7}, Range(1, 10, 4, 1000)).ok());
  for (uint64_t i = 11; i <= 400; i += 10) ASSERT_TRUE(w->Save(HardState{4, 2, 7}, Range(i, i + 9, 4, 1000)).ok());
  ASSERT_TRUE(w->SaveMetadata("md-v2").ok());
  ASSERT_TRUE(w->Save({}, Range(401, 410, 4, 1000)).ok());
  std::vector<std::string> paths = w->SegmentPaths();
  ASSERT_GE(paths.size(), 5u);
  std::vector<uint64_t> firsts;
  for (const auto& p : paths) {
    uint64_t seq, first;
    ASSERT_TRUE(format::ParseSegmentName(fs::path(p).filename().string(), &seq, &first));
    firsts.push_back(first);
  }
  // Nothing is covered below the end of segment 0.
  ASSERT_TRUE(w->ReleaseTo(firsts[1] - 2).ok());
  EXPECT_EQ(paths.size(), w->SegmentCount());
  // Segments 0 and 1 hold only entries <= firsts[2]-1; segment 2 holds firsts[2].
  ASSERT_TRUE(w->ReleaseTo(firsts[2] - 1).ok());
  EXPECT_EQ(paths.size() - 2, w->SegmentCount());
  EXPECT_FALSE(fs::exists(paths[0]));
  EXPECT_FALSE(fs::exists(paths[1]));
  EXPECT_TRUE(fs::exists(paths[2]));
  // Index firsts[2] is in segment 2 but so is firsts[2]+1: it stays.
  ASSERT_TRUE(w->ReleaseTo(firsts[2]).ok());
  EXPECT_EQ(paths.size() - 2, w->SegmentCount());
  ASSERT_TRUE(w->Close().ok());

  rr = Reopen(o);
  EXPECT_EQ(firsts[2], rr.first_index);
  ASSERT_FALSE(rr.entries.empty());
  EXPECT_EQ(firsts[2], rr.entries.front().index);
  EXPECT_EQ(410u, rr.entries.back().index);
  EXPECT_EQ(410u - firsts[2] + 1, rr.entries.size());
  EXPECT_EQ((HardState{4, 2, 7}), rr.hard_state);
  EXPECT_EQ("md-v2", rr.metadata);

  // Releasing everything keeps the tail, which is self-contained.
  {
    ReplayResult r2;
    auto w2 = MustOpen(o, &r2);
    ASSERT_TRUE(w2->ReleaseTo(1000000).ok());
    EXPECT_EQ(1u, w2->SegmentCount());
    EXPECT_EQ(paths.back(), w2->SegmentPaths()[0]);
    EXPECT_EQ(410u, w2->LastIndex());
    ASSERT_TRUE(w2->Save({}, Range(411, 411, 5, 10)).ok());
    ASSERT_TRUE(w2->Close().ok());
  }
  rr = Reopen(o);
  EXPECT_EQ((HardState{4, 2, 7}), rr.hard_state);
  EXPECT_EQ("md-v2", rr.metadata);
  EXPECT_EQ(411u, rr.entries.back().index);
  EXPECT_EQ(firsts.back(), rr.first_index);
}

TEST_F(WalTest, ReleaseOfSegmentsWithoutEntriesLeavesTheRightLastIndex) {
  const Options o = Opts(4096);
  ReplayResult rr;
  auto w = MustOpen(o, &rr);
  ASSERT_TRUE(w->Save(HardState{1, 1, 1}, Range(1, 20, 1, 300)).ok());
  ASSERT_TRUE(w->SaveSnapshot(SnapshotMarker{20, 1, {{1, 2, 3}, {}}}).ok());
  // Only hard states from now on: they fill whole segments.
  for (uint64_t c = 2; c < 400; c++) ASSERT_TRUE(w->Save(HardState{1 + c / 100, c, 20}, {}).ok());
  size_t before = w->SegmentCount();
  ASSERT_GE(before, 4u);
  ASSERT_TRUE(w->ReleaseTo(20).ok());
  EXPECT_EQ(1u, w->SegmentCount());
  ASSERT_TRUE(w->Close().ok());
  rr = Reopen(o);
  EXPECT_TRUE(rr.entries.empty());
  EXPECT_EQ(21u, rr.first_index);
  EXPECT_EQ((HardState{4, 399, 20}), rr.hard_state);
  EXPECT_EQ(20u, rr.snapshot.index);
  EXPECT_EQ((std::vector<uint64_t>{1, 2, 3}), rr.snapshot.conf_state.voters);
  ReplayResult r2;
  auto w2 = MustOpen(o, &r2);
  EXPECT_EQ(20u, w2->LastIndex());
  EXPECT_TRUE(w2->Save({}, Range(21, 22, 4, 5)).ok());
}

TEST_F(WalTest, SnapshotMarkerRestartsOrTrimsTheLog) {
  const Options o = Opts();
  {
    ReplayResult rr;
    auto w = MustOpen(o, &rr);
    ASSERT_TRUE(w->Save(HardState{1, 1, 5}, Range(1, 5, 1, 10)).ok());
    ASSERT_TRUE(w->SaveSnapshot(SnapshotMarker{3, 1, {{1}, {4}}}).ok());
    ASSERT_TRUE(w->Close().ok());
  }
  ReplayResult rr = Reopen(o);
  ASSERT_EQ(2u, rr.entries.size());
  EXPECT_EQ(4u, rr.first_index);
  EXPECT_EQ((SnapshotMarker{3, 1, {{1}, {4}}}), rr.snapshot);
  {
    // A follower installs a leader's snapshot beyond its log.
    ReplayResult r2;
    auto w = MustOpen(o, &r2);
    EXPECT_EQ(Code::kInvalidArgument, w->Append({}, Range(1001, 1001, 3, 10)).code());
    ASSERT_TRUE(w->SaveSnapshot(SnapshotMarker{1000, 3, {{1, 2, 3}, {}}}).ok());
    EXPECT_EQ(1000u, w->LastIndex());
    ASSERT_TRUE(w->Save(HardState{3, 2, 1000}, Range(1001, 1005, 3, 10)).ok());
    ASSERT_TRUE(w->Close().ok());
  }
  rr = Reopen(o);
  ASSERT_EQ(5u, rr.entries.size());
  EXPECT_EQ(1001u, rr.first_index);
  EXPECT_EQ(1001u, rr.entries.front().index);
  EXPECT_EQ(1000u, rr.snapshot.index);
  EXPECT_EQ((HardState{3, 2, 1000}), rr.hard_state);
}

TEST_F(WalTest, EmptyAndZeroLengthEntries) {
  const Options o = Opts();
  ReplayResult rr;
  auto w = MustOpen(o, &rr);
  uint64_t bytes0 = probe_.write_bytes.Value();
  // Nothing to write: no write at all.
  ASSERT_TRUE(w->Save({}, {}).ok());
  EXPECT_EQ(bytes0, probe_.write_bytes.Value());
  std::vector<Entry> ents = {Entry{1, 1, EntryType::kNormal, ""}, Entry{1, 2, EntryType::kConfChange, ""},
                             Entry{1, 3, EntryType::kNormal, std::string(1, '\0')},
                             Entry{1, 4, EntryType::kNormal, std::string(64, '\0')},
                             Entry{2, 5, EntryType::kNormal, ""}};
  ASSERT_TRUE(w->Save(HardState{2, 0, 0}, ents).ok());
  // The same hard state again is not rewritten.
  uint64_t bytes1 = probe_.write_bytes.Value();
  ASSERT_TRUE(w->Save(HardState{2, 0, 0}, {}).ok());
  EXPECT_EQ(bytes1, probe_.write_bytes.Value());
  ASSERT_TRUE(w->Close().ok());
  rr = Reopen(o);
  EXPECT_TRUE(ents == rr.entries);
  EXPECT_EQ((HardState{2, 0, 0}), rr.hard_state);
}

TEST_F(WalTest, LargeEntriesIncludingLargerThanASegment) {
  for (uint64_t seg : {uint64_t{1} << 20, k64K}) {
    SCOPED_TRACE("segment_bytes " + std::to_string(seg));
    TearDown();
    SetUp();
    const Options o = Opts(seg);
    std::vector<Entry> all;
    {
      ReplayResult rr;
      auto w = MustOpen(o, &rr);
      std::vector<Entry> a = {E(1, 1, 10), E(2, 1, 2 << 20), E(3, 1, 10)};
      std::vector<Entry> b = {E(4, 1, 3 << 20)};
      std::vector<Entry> c = {E(5, 1, 100), E(6, 1, 2 << 20), E(7, 1, 2 << 20), E(8, 1, 0)};
      for (auto* v : {&a, &b, &c}) {
        ASSERT_TRUE(w->Save(HardState{1, 1, v->back().index}, *v).ok());
        all.insert(all.end(), v->begin(), v->end());
      }
      EXPECT_GE(w->SegmentCount(), 5u);
      ASSERT_TRUE(w->Close().ok());
    }
    ReplayResult rr = Reopen(o);
    ASSERT_EQ(all.size(), rr.entries.size());
    EXPECT_TRUE(all == rr.entries);
    EXPECT_EQ((HardState{1, 1, 8}), rr.hard_state);
    // And the log keeps working after them.
    ReplayResult r2;
    auto w = MustOpen(o, &r2);
    ASSERT_TRUE(w->Save({}, Range(9, 12, 1, 100)).ok());
    ASSERT_TRUE(w->Close().ok());
    EXPECT_EQ(12u, Reopen(o).entries.size());
  }
}

TEST_F(WalTest, ProbeCountsFsyncsWritesAndBytes) {
  const Options o = Opts();
  ReplayResult rr;
  auto w = MustOpen(o, &rr);
  const uint64_t f0 = probe_.fsync_seconds.Snapshot().count;
  const uint64_t w0 = probe_.write_seconds.Snapshot().count;
  const uint64_t b0 = probe_.write_bytes.Value();

  std::vector<Entry> ents = Range(1, 10, 1, 100);
  ASSERT_TRUE(w->Save(HardState{1, 1, 1}, ents).ok());
  EXPECT_EQ(f0 + 1, probe_.fsync_seconds.Snapshot().count);
  EXPECT_EQ(w0 + 1, probe_.write_seconds.Snapshot().count);  // one write for the whole batch
  EXPECT_EQ(b0 + 10 * (16 + 17 + 100) + (16 + 24), probe_.write_bytes.Value());

  // Group commit: many appends, one fdatasync.
  ASSERT_TRUE(w->Append(HardState{1, 1, 5}, Range(11, 20, 1, 100)).ok());
  ASSERT_TRUE(w->Append(HardState{1, 1, 9}, Range(21, 30, 1, 100)).ok());
  EXPECT_EQ(f0 + 1, probe_.fsync_seconds.Snapshot().count);
  ASSERT_TRUE(w->Sync().ok());
  EXPECT_EQ(f0 + 2, probe_.fsync_seconds.Snapshot().count);
  EXPECT_EQ(w0 + 3, probe_.write_seconds.Snapshot().count);
  // Nothing written: no fdatasync.
  ASSERT_TRUE(w->Sync().ok());
  EXPECT_EQ(f0 + 2, probe_.fsync_seconds.Snapshot().count);
  // A cut syncs the old tail, the new segment and the directory.
  ASSERT_TRUE(w->Save({}, Range(31, 31, 1, 70000)).ok());
  EXPECT_EQ(2u, w->SegmentCount());
  EXPECT_EQ(f0 + 2 + 3 + 1, probe_.fsync_seconds.Snapshot().count);
}

TEST_F(WalTest, InjectedFsyncFailureMakesTheWalUnusable) {
  const Options o = Opts();
  ReplayResult rr;
  auto w = MustOpen(o, &rr);
  ASSERT_TRUE(w->Save(HardState{1, 1, 1}, Range(1, 5, 1, 10)).ok());
  ASSERT_TRUE(failpoint::Set("wal-before-fsync", "error"));
  Status s = w->Save({}, Range(6, 6, 1, 10));
  ASSERT_TRUE(failpoint::Set("wal-before-fsync", "off"));
  EXPECT_EQ(Code::kIOError, s.code());
  EXPECT_NE(std::string::npos, s.message().find("wal-before-fsync"));
  // Sticky: after a failed fdatasync nothing more is accepted (fsyncgate).
  EXPECT_EQ(Code::kIOError, w->Append({}, Range(7, 7, 1, 10)).code());
  EXPECT_EQ(Code::kIOError, w->Sync().code());
  EXPECT_EQ(Code::kIOError, w->Close().code());
  w.reset();
  // The WAL itself is intact.
  EXPECT_GE(Reopen(o).entries.size(), 5u);
}

TEST_F(WalTest, InjectedFailuresAtWriteAndCut) {
  Options o = Opts(4096);
  {
    ReplayResult rr;
    auto w = MustOpen(o, &rr);
    ASSERT_TRUE(failpoint::Set("wal-after-write-before-fsync", "error"));
    Status s = w->Save({}, Range(1, 1, 1, 10));
    ASSERT_TRUE(failpoint::Set("wal-after-write-before-fsync", "off"));
    EXPECT_EQ(Code::kIOError, s.code());
    EXPECT_EQ(Code::kIOError, w->Sync().code());
  }
  TearDown();
  SetUp();
  o = Opts(4096);
  {
    ReplayResult rr;
    auto w = MustOpen(o, &rr);
    EXPECT_TRUE(rr.created);
    ASSERT_TRUE(w->Save({}, Range(1, 5, 1, 500)).ok());
    ASSERT_TRUE(failpoint::Set("wal-before-cut", "error"));
    Status s = w->Save({}, Range(6, 20, 1, 500));
    ASSERT_TRUE(failpoint::Set("wal-before-cut", "off"));
    EXPECT_EQ(Code::kIOError, s.code());
    EXPECT_EQ(1u, w->SegmentCount());
  }
  ReplayResult rr = Reopen(o);
  EXPECT_GE(rr.entries.size(), 5u);
}

// A process crash (abort) between write and fdatasync, and in the middle of a
// cut: the data that was written is replayed and the WAL keeps working.
TEST_F(WalTest, CrashAtFailpointsRecovers) {
  const Options o = Opts(4096);
  {
    ReplayResult rr;
    auto w = MustOpen(o, &rr);
    ASSERT_TRUE(w->Save(HardState{1, 1, 1}, Range(1, 3, 1, 500)).ok());
    ASSERT_TRUE(w->Close().ok());
  }
  EXPECT_DEATH(
      {
        ReplayResult rr;
        auto w = std::move(Wal::Open(o, "md", &rr)).value();
        failpoint::Set("wal-after-write-before-fsync", "panic");
        (void)w->Save(HardState{1, 1, 2}, Range(4, 5, 1, 500));
      },
      "failpoint triggered panic.*wal-after-write-before-fsync");
  ReplayResult rr = Reopen(o);
  EXPECT_EQ(5u, rr.entries.size());
  for (const char* fp : {"wal-before-cut", "wal-cut-before-rename"}) {
    SCOPED_TRACE(fp);
    uint64_t next = rr.entries.back().index + 1;
    EXPECT_DEATH(
        {
          ReplayResult r2;
          auto w = std::move(Wal::Open(o, "md", &r2)).value();
          failpoint::Set(fp, "panic");
          (void)w->Save(HardState{1, 1, 3}, Range(next, next + 9, 1, 500));
        },
        std::string("failpoint triggered panic.*") + fp);
    rr = Reopen(o);
    ASSERT_FALSE(rr.entries.empty());
    EXPECT_GE(rr.entries.back().index, next - 1);
    for (const auto& de : fs::directory_iterator(dir_)) EXPECT_NE(".tmp", de.path().extension());
  }
  ReplayResult r3;
  auto w = MustOpen(o, &r3);
  uint64_t next = w->LastIndex() + 1;
  ASSERT_TRUE(w->Save({}, Range(next, next + 20, 2, 500)).ok());
  ASSERT_TRUE(w->Close().ok());
  EXPECT_EQ(next + 20, Reopen(o).entries.back().index);
}

TEST(WalFormat, SegmentNamesAndZeroDetection) {
  EXPECT_EQ("000000000000002a-0000000000013881.wal", format::SegmentName(42, 80001));
  uint64_t s, f;
  ASSERT_TRUE(format::ParseSegmentName("000000000000002a-0000000000013881.wal", &s, &f));
  EXPECT_EQ(42u, s);
  EXPECT_EQ(80001u, f);
  EXPECT_FALSE(format::ParseSegmentName("000000000000002A-0000000000013881.wal", &s, &f));
  EXPECT_FALSE(format::ParseSegmentName("000000000000002a-0000000000013881.wal.tmp", &s, &f));
  EXPECT_FALSE(format::ParseSegmentName("2a-13881.wal", &s, &f));
  std::string z(100, '\0');
  size_t at = 0;
  EXPECT_TRUE(format::AllZero(z.data(), z.size(), &at));
  z[77] = 1;
  EXPECT_FALSE(format::AllZero(z.data(), z.size(), &at));
  EXPECT_EQ(77u, at);
  EXPECT_NE(format::Seed(0), format::Seed(1));
}

}  // namespace
}  // namespace engram::wal
