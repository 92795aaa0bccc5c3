// Proposal ids (etcd's idutil, with a persisted counter instead of the clock).
//
// An id is (low 16 bits of the member id) << 48 | a 48-bit counter. The
// counter never repeats on this member, across restarts and clock steps: ids
// are handed out from blocks of kBlock reserved on disk before use, so a
// restart starts above every id the previous run could have used. Two members
// whose ids share the low 16 bits can still produce the same id; that is why
// an id only routes a reply (wait.h checks the entry's checksum too) and never
// decides what is applied (server_apply.cc applies the committed bytes).
//
// File format of <member-dir>/proposal_ids (written whole: temp file, fsync,
// rename, fsync of the directory):
//   "engram-proposal-ids v1 <next unreserved counter, decimal>\n"
// A missing file starts the counter at 0 (a fresh member). A damaged file
// stops the server with the path and what to do.
//
// Thread-safety: Next is thread-safe and lock-free except once per kBlock ids
// (the thread that crosses a block boundary writes the file).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "src/common/status.h"

namespace engram::kv {

class IdGenerator {
 public:
  static constexpr uint64_t kBlock = 1u << 20;
  static constexpr uint64_t kCounterMask = (1ull << 48) - 1;

  // Reads path (if present), reserves the first block and writes the file.
  static Result<std::unique_ptr<IdGenerator>> Open(const std::string& path, uint64_t member_id);

  uint64_t Next();
  // The counter part of the next id (tests).
  uint64_t NextCounterForTesting() const { return counter_.load(); }

 private:
  IdGenerator(std::string path, uint64_t prefix, uint64_t start);
  Status Reserve(uint64_t limit);  // persists limit as the next unreserved counter

  const std::string path_;
  const uint64_t prefix_;
  std::atomic<uint64_t> counter_;
  std::atomic<uint64_t> limit_{0};  // counters below it are reserved on disk
  std::mutex reserve_mu_;
};

}  // namespace engram::kv
