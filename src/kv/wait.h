// Proposals waiting for their committed entry to be applied (etcd's
// pkg/wait), and linearizable reads waiting for a read index.
//
// A committed entry is matched to a waiter by proposal id AND by the CRC-32C
// and size of its bytes, so an entry that happens to carry a waiter's id (two
// members sharing the id's 16-bit prefix, an id reused by a bug) never
// completes a request it is not: the entry is applied (from its own bytes,
// always) and the waiter keeps waiting for its own entry or its deadline.
//
// Thread-safety: all methods are thread-safe (one internal mutex, never held
// while a callback runs).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <vector>

#include <google/protobuf/message.h>

#include "src/common/status.h"

namespace engram::kv {

using Done = std::function<void(const Status&)>;
using WaitClock = std::chrono::steady_clock;

// A completion a thread can block on: hand Fn() to an asynchronous call
// (once), then Wait() returns the status it was called with. The waiter must
// outlive the call's completion (Wait() ensures that).
class DoneWaiter {
 public:
  Done Fn() {
    return [this](const Status& s) {
      std::lock_guard<std::mutex> lk(mu_);
      st_ = s;
      done_ = true;
      cv_.notify_all();
    };
  }
  Status Wait() {
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait(lk, [&] { return done_; });
    return st_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;  // guarded by mu_
  Status st_;          // guarded by mu_
};

// Runs start(done) and blocks until done ran: a synchronous call over an
// asynchronous one.
template <class F>
Status Await(F&& start) {
  DoneWaiter w;
  start(w.Fn());
  return w.Wait();
}

class WaitRegistry {
 public:
  struct Waiter {
    uint64_t id = 0;
    uint32_t crc = 0;   // CRC-32C of the proposed entry's bytes
    size_t size = 0;    // and their length
    google::protobuf::Message* resp = nullptr;  // filled by the apply, may be null
    WaitClock::time_point deadline = WaitClock::time_point::max();
    Done done;
  };

  void Register(Waiter w);
  // The waiter of an applied entry, removed; nullopt if none matches.
  std::optional<Waiter> Take(uint64_t id, uint32_t crc, size_t size);
  // Removes the waiter registered with exactly this id and crc (a proposal
  // raft refused).
  std::optional<Waiter> Cancel(uint64_t id, uint32_t crc);
  // Removes every waiter whose deadline is at or before now.
  std::vector<Waiter> TakeExpired(WaitClock::time_point now);
  std::vector<Waiter> TakeAll();
  size_t size() const;

 private:
  mutable std::mutex mu_;
  std::unordered_multimap<uint64_t, Waiter> waiters_;  // guarded by mu_
};

}  // namespace engram::kv
