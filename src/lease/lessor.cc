#include "src/lease/lessor.h"

#include <algorithm>
#include <cmath>

namespace engram::lease {

Lessor::Lessor(int64_t min_ttl_seconds, LeaseProbe* probe, Clock::duration checkpoint_interval)
    : min_ttl_(std::max<int64_t>(1, min_ttl_seconds)),
      checkpoint_interval_(checkpoint_interval),
      probe_(probe ? probe : &own_probe_) {}

void Lessor::ScheduleCheckpointLocked(Lease& l, Clock::time_point now) {
  // etcd schedules a lease whose TTL exceeds the interval (300 s).
  const int64_t ttl = l.remaining > 0 ? l.remaining : l.ttl;
  if (checkpointing() && std::chrono::seconds(ttl) > checkpoint_interval_) {
    l.checkpoint_at = now + checkpoint_interval_;
  } else {
    l.checkpoint_at = Clock::time_point::max();
  }
}

void Lessor::BeginBatch() {
  std::lock_guard<std::mutex> lk(mu_);
  in_batch_ = true;
  undo_.clear();
}

void Lessor::EndBatch() {
  std::lock_guard<std::mutex> lk(mu_);
  in_batch_ = false;
  undo_.clear();
}

void Lessor::Rollback() {
  std::lock_guard<std::mutex> lk(mu_);
  for (auto it = undo_.rbegin(); it != undo_.rend(); ++it) (*it)();
  undo_.clear();
  in_batch_ = false;
}

Status Lessor::Grant(int64_t id, int64_t ttl, Clock::time_point now, int64_t* granted) {
  if (ttl > kMaxLeaseTTL) return LeaseTTLTooLarge();
  std::lock_guard<std::mutex> lk(mu_);
  if (leases_.count(id)) return LeaseExists();
  Lease l;
  l.ttl = std::max(ttl, min_ttl_);
  l.expiry = now + std::chrono::seconds(l.ttl);
  ScheduleCheckpointLocked(l, now);
  *granted = l.ttl;
  leases_.emplace(id, std::move(l));
  if (in_batch_) undo_.push_back([this, id] { leases_.erase(id); });
  probe_->granted.Inc();
  probe_->ttl_seconds.Observe(static_cast<double>(*granted));
  return Status::OK();
}

Status Lessor::Revoke(int64_t id, std::vector<std::string>* keys) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = leases_.find(id);
  if (it == leases_.end()) return LeaseNotFound();
  keys->assign(it->second.keys.begin(), it->second.keys.end());
  for (const auto& k : it->second.keys) key_lease_.erase(k);
  if (in_batch_) {
    undo_.push_back([this, id, l = it->second] {
      for (const auto& k : l.keys) key_lease_[k] = id;
      leases_[id] = l;
    });
  }
  leases_.erase(it);
  probe_->revoked.Inc();
  return Status::OK();
}

bool Lessor::Exists(int64_t id) const {
  std::lock_guard<std::mutex> lk(mu_);
  return leases_.count(id) > 0;
}

void Lessor::AttachLocked(const std::string& key, int64_t id) {
  auto cur = key_lease_.find(key);
  const int64_t old = cur == key_lease_.end() ? 0 : cur->second;
  if (old == id) return;
  if (old != 0) {
    auto l = leases_.find(old);
    if (l != leases_.end()) l->second.keys.erase(key);
    key_lease_.erase(cur);
  }
  if (id != 0) {
    auto l = leases_.find(id);
    if (l != leases_.end()) {
      l->second.keys.insert(key);
      key_lease_[key] = id;
    }
  }
  if (in_batch_) undo_.push_back([this, key, old] {
    // Back to the old attachment (AttachLocked without recording).
    const bool saved = in_batch_;
    in_batch_ = false;
    AttachLocked(key, old);
    in_batch_ = saved;
  });
}

void Lessor::Attach(const std::string& key, int64_t id) {
  std::lock_guard<std::mutex> lk(mu_);
  AttachLocked(key, id);
}

void Lessor::DetachRange(const std::string& key, const std::string& end) {
  std::lock_guard<std::mutex> lk(mu_);
  if (end.empty()) {
    if (key_lease_.count(key)) AttachLocked(key, 0);
    return;
  }
  const bool to_end = end == std::string(1, '\0');
  std::vector<std::string> hit;
  for (auto it = key_lease_.lower_bound(key); it != key_lease_.end(); ++it) {
    if (!to_end && it->first >= end) break;
    hit.push_back(it->first);
  }
  for (const auto& k : hit) AttachLocked(k, 0);
}

int64_t Lessor::LeaseOf(const std::string& key) const {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = key_lease_.find(key);
  return it == key_lease_.end() ? 0 : it->second;
}

Result<int64_t> Lessor::Renew(int64_t id, Clock::time_point now) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = leases_.find(id);
  if (it == leases_.end()) return LeaseNotFound();
  // An expired lease is never brought back: its revoke is (or will be) on
  // its way, and the keepalive answers TTL 0 (etcd waits for the revoke,
  // then answers 0).
  if (it->second.revoking || it->second.expiry <= now) return LeaseNotFound();
  it->second.expiry = now + std::chrono::seconds(it->second.ttl);
  probe_->renewed.Inc();
  return it->second.ttl;
}

Result<LeaseInfo> Lessor::TimeToLive(int64_t id, Clock::time_point now, bool with_keys) const {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = leases_.find(id);
  if (it == leases_.end()) return LeaseNotFound();
  LeaseInfo info;
  info.id = id;
  info.granted_ttl = it->second.ttl;
  // etcd truncates toward zero: 0 in the last second and while the revoke
  // is on its way, negative if it is late.
  info.remaining_ttl = static_cast<int64_t>(std::chrono::duration<double>(it->second.expiry - now).count());
  if (with_keys) info.keys.assign(it->second.keys.begin(), it->second.keys.end());
  return info;
}

std::vector<int64_t> Lessor::Leases() const {
  std::lock_guard<std::mutex> lk(mu_);
  std::vector<std::pair<Clock::time_point, int64_t>> by_expiry;
  by_expiry.reserve(leases_.size());
  for (const auto& [id, l] : leases_) by_expiry.emplace_back(l.expiry, id);
  std::sort(by_expiry.begin(), by_expiry.end());  // etcd lists the soonest to expire first
  std::vector<int64_t> ids;
  ids.reserve(by_expiry.size());
  for (const auto& [t, id] : by_expiry) ids.push_back(id);
  return ids;
}

std::vector<int64_t> Lessor::Expired(Clock::time_point now, size_t limit) {
  std::lock_guard<std::mutex> lk(mu_);
  std::vector<std::pair<Clock::time_point, int64_t>> due;
  for (const auto& [id, l] : leases_)
    if (!l.revoking && l.expiry <= now && l.retry_at <= now) due.emplace_back(l.expiry, id);
  std::sort(due.begin(), due.end());  // the longest expired first
  if (due.size() > limit) due.resize(limit);
  std::vector<int64_t> out;
  out.reserve(due.size());
  for (const auto& [t, id] : due) {
    leases_[id].revoking = true;
    out.push_back(id);
  }
  return out;
}

void Lessor::Unmark(int64_t id, Clock::time_point retry_at) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = leases_.find(id);
  if (it == leases_.end()) return;
  it->second.revoking = false;
  it->second.retry_at = retry_at;
}

void Lessor::Restore(int64_t id, int64_t ttl, int64_t remaining, Clock::time_point now) {
  std::lock_guard<std::mutex> lk(mu_);
  Lease l;
  l.ttl = std::max(ttl, min_ttl_);
  l.remaining = std::max<int64_t>(0, remaining);
  l.expiry = now + std::chrono::seconds(l.remaining > 0 ? l.remaining : l.ttl);
  leases_[id] = std::move(l);
}

void Lessor::Promote(Clock::time_point now) {
  std::lock_guard<std::mutex> lk(mu_);
  for (auto& [id, l] : leases_) {
    l.expiry = now + std::chrono::seconds(l.remaining > 0 ? l.remaining : l.ttl);
    l.revoking = false;
    ScheduleCheckpointLocked(l, now);
  }
  // etcd: with as many leases as one second of revokes (1000) or more, the
  // expiries are spread so that at most 3/4 of the revoke rate (750) fall
  // in any one-second window, pushing the excess later in proportion.
  constexpr size_t kRevokeRate = 1000;
  constexpr double kTarget = kRevokeRate * 3 / 4;
  if (leases_.size() < kRevokeRate) return;
  std::vector<Lease*> by_expiry;
  by_expiry.reserve(leases_.size());
  for (auto& [id, l] : leases_) by_expiry.push_back(&l);
  std::sort(by_expiry.begin(), by_expiry.end(), [](const Lease* a, const Lease* b) { return a->expiry < b->expiry; });
  Clock::duration base = by_expiry[0]->expiry - now;
  Clock::duration next = base + std::chrono::seconds(1);
  size_t expires = 0;
  for (Lease* l : by_expiry) {
    const Clock::duration remaining = l->expiry - now;
    if (remaining > next) {
      base = remaining;
      next = base + std::chrono::seconds(1);
      expires = 1;
      continue;
    }
    if (++expires <= static_cast<size_t>(kTarget)) continue;
    // Pushed back by its share of the overflow, less how far it already is
    // past the window's start.
    auto delay = std::chrono::duration_cast<Clock::duration>(
                     std::chrono::duration<double>(static_cast<double>(expires) / kTarget)) -
                 (remaining - base);
    next = base + delay;
    l->expiry += delay;
  }
}

std::vector<std::pair<int64_t, int64_t>> Lessor::DueCheckpoints(Clock::time_point now, size_t limit) {
  std::lock_guard<std::mutex> lk(mu_);
  std::vector<std::pair<int64_t, int64_t>> out;
  if (!checkpointing()) return out;
  for (auto& [id, l] : leases_) {
    if (out.size() >= limit) break;
    if (l.checkpoint_at > now) continue;
    l.checkpoint_at = Clock::time_point::max();  // rescheduled when the checkpoint applies
    if (l.revoking || l.expiry <= now) continue;
    const double left = std::chrono::duration<double>(l.expiry - now).count();
    const auto remaining = static_cast<int64_t>(std::ceil(left));
    if (remaining >= l.ttl) continue;  // etcd: nothing worth recording
    out.emplace_back(id, remaining);
  }
  return out;
}

bool Lessor::Checkpoint(int64_t id, int64_t remaining, Clock::time_point now) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = leases_.find(id);
  if (it == leases_.end()) return false;
  const int64_t old = it->second.remaining;
  it->second.remaining = std::max<int64_t>(0, remaining);
  if (in_batch_) undo_.push_back([this, id, old] {
    auto l = leases_.find(id);
    if (l != leases_.end()) l->second.remaining = old;
  });
  ScheduleCheckpointLocked(it->second, now);
  return true;
}

bool Lessor::NeedsCheckpointReset(int64_t id) const {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = leases_.find(id);
  return checkpointing() && it != leases_.end() && it->second.remaining > 0;
}

std::pair<int64_t, int64_t> Lessor::Persisted(int64_t id) const {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = leases_.find(id);
  if (it == leases_.end()) return {0, 0};
  return {it->second.ttl, it->second.remaining};
}

size_t Lessor::size() const {
  std::lock_guard<std::mutex> lk(mu_);
  return leases_.size();
}

}  // namespace engram::lease
