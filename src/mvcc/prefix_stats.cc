#include "src/mvcc/prefix_stats.h"

namespace engram::mvcc {

std::string_view PrefixStats::PrefixOf(std::string_view key, int depth) {
  if (key.empty()) return kOther;
  if (key[0] != '/') {
    size_t slash = key.find('/');
    if (slash == std::string_view::npos || slash == 0) return kOther;
    return key.substr(0, slash);
  }
  // Position of the (depth+1)-th '/', or of the last '/' if there are fewer.
  size_t end = 0;  // the leading '/'
  for (int seg = 0; seg < depth; seg++) {
    size_t next = key.find('/', end + 1);
    if (next == std::string_view::npos) break;
    end = next;
  }
  if (end == 0) return kOther;  // "/foo": no directory segment
  return key.substr(0, end);
}

void PrefixStats::Delta::Add(std::string_view prefix, int64_t keys, int64_t bytes) {
  if (last_ < d_.size() && d_[last_].prefix == prefix) {
    d_[last_].keys += keys;
    d_[last_].bytes += bytes;
    return;
  }
  for (size_t i = 0; i < d_.size(); i++) {
    if (d_[i].prefix == prefix) {
      d_[i].keys += keys;
      d_[i].bytes += bytes;
      last_ = i;
      return;
    }
  }
  d_.push_back(Item{std::string(prefix), keys, bytes});
  last_ = d_.size() - 1;
}

void PrefixStats::Apply(Delta* d) {
  if (d->d_.empty()) return;
  {
    std::lock_guard<std::mutex> lk(mu_);
    for (const auto& it : d->d_) {
      if (it.keys == 0 && it.bytes == 0) continue;
      auto f = m_.find(it.prefix);
      if (f == m_.end()) {
        // A new prefix gets its own series while there is room; "other"
        // otherwise (and for good: slots are never given back).
        if (named_ < kMaxPrefixes || it.prefix == kOther) {
          f = m_.emplace(it.prefix, Totals{}).first;
          if (it.prefix != kOther) named_++;
        } else {
          f = m_.try_emplace(std::string(kOther)).first;
        }
      }
      f->second.keys += it.keys;
      f->second.bytes += it.bytes;
    }
  }
  d->Clear();
}

void PrefixStats::Reset() {
  std::lock_guard<std::mutex> lk(mu_);
  m_.clear();
  named_ = 0;
}

std::vector<PrefixStats::Entry> PrefixStats::Snapshot() const {
  std::vector<Entry> out;
  std::lock_guard<std::mutex> lk(mu_);
  out.reserve(m_.size());
  for (const auto& [p, t] : m_) out.push_back(Entry{p, t.keys, t.bytes});
  return out;
}

}  // namespace engram::mvcc
