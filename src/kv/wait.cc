#include "src/kv/wait.h"

namespace engram::kv {

void WaitRegistry::Register(Waiter w) {
  std::lock_guard<std::mutex> lk(mu_);
  const uint64_t id = w.id;
  waiters_.emplace(id, std::move(w));
}

std::optional<WaitRegistry::Waiter> WaitRegistry::Take(uint64_t id, uint32_t crc, size_t size) {
  std::lock_guard<std::mutex> lk(mu_);
  auto [b, e] = waiters_.equal_range(id);
  for (auto it = b; it != e; ++it) {
    if (it->second.crc == crc && it->second.size == size) {
      Waiter w = std::move(it->second);
      waiters_.erase(it);
      return w;
    }
  }
  return std::nullopt;
}

std::optional<WaitRegistry::Waiter> WaitRegistry::Cancel(uint64_t id, uint32_t crc) {
  std::lock_guard<std::mutex> lk(mu_);
  auto [b, e] = waiters_.equal_range(id);
  for (auto it = b; it != e; ++it) {
    if (it->second.crc == crc) {
      Waiter w = std::move(it->second);
      waiters_.erase(it);
      return w;
    }
  }
  return std::nullopt;
}

std::vector<WaitRegistry::Waiter> WaitRegistry::TakeExpired(WaitClock::time_point now) {
  std::vector<Waiter> out;
  std::lock_guard<std::mutex> lk(mu_);
  for (auto it = waiters_.begin(); it != waiters_.end();) {
    if (it->second.deadline <= now) {
      out.push_back(std::move(it->second));
      it = waiters_.erase(it);
    } else {
      ++it;
    }
  }
  return out;
}

std::vector<WaitRegistry::Waiter> WaitRegistry::TakeAll() {
  std::vector<Waiter> out;
  std::lock_guard<std::mutex> lk(mu_);
  for (auto& [id, w] : waiters_) out.push_back(std::move(w));
  waiters_.clear();
  return out;
}

size_t WaitRegistry::size() const {
  std::lock_guard<std::mutex> lk(mu_);
  return waiters_.size();
}

}  // namespace engram::kv
