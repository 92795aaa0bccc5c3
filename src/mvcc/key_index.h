// In-memory key index of the mvcc store (internal): key -> the revisions that
// still exist in the "key" DB for that key, ascending.
//
// A key's revisions form generations: puts, ended by a tombstone (a delete).
// Only the newest generation can be open (its last revision is a put). The
// index keeps only revisions (16 bytes each); values, versions and create
// revisions live in the records, except for the newest generation's
// create_revision and version, which the writer needs for the next put.
//
// Memory per key: one std::map node (~48 bytes with the tree links) + the key
// string (32 bytes, the key inline up to 15 bytes) + KeyEntry (40 bytes, one
// revision inline: the common case after a compaction). Further revisions take
// 16 bytes each in one heap array.
//
// Not thread-safe by itself: Store guards it (see store.h).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace engram::mvcc {

// One revision of a key. Plain aggregate (lives in a union in RevList).
struct Revision {
  int64_t main;
  uint32_t sub;
  uint32_t tombstone;  // 1: a delete, ends its generation
};
static_assert(sizeof(Revision) == 16);

inline bool RevLess(const Revision& a, const Revision& b) {
  return a.main != b.main ? a.main < b.main : a.sub < b.sub;
}

// A vector of Revision with one element stored inline (no heap allocation for keys
// that have a single revision).
class RevList {
 public:
  RevList() : inline_{} {}
  ~RevList() {
    if (cap_ > 1) delete[] heap_;
  }
  RevList(RevList&& o) noexcept : size_(o.size_), cap_(o.cap_) {
    if (cap_ > 1) {
      heap_ = o.heap_;
    } else {
      inline_ = o.inline_;
    }
    o.size_ = 0;
    o.cap_ = 1;
  }
  RevList(const RevList&) = delete;
  RevList& operator=(const RevList&) = delete;
  RevList& operator=(RevList&&) = delete;

  uint32_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  const Revision* begin() const { return data(); }
  const Revision* end() const { return data() + size_; }
  const Revision& operator[](size_t i) const { return data()[i]; }
  const Revision& back() const { return data()[size_ - 1]; }

  void push_back(const Revision& r) {
    if (size_ == cap_) Reallocate(cap_ * 2);
    data()[size_++] = r;
  }
  // Removes the first n revisions.
  void erase_front(uint32_t n) {
    if (n == 0) return;
    Revision* d = data();
    std::memmove(d, d + n, sizeof(Revision) * (size_ - n));
    size_ -= n;
    MaybeShrink();
  }
  // Keeps the first n revisions.
  void truncate(uint32_t n) {
    if (n >= size_) return;
    size_ = n;
    MaybeShrink();
  }

 private:
  const Revision* data() const { return cap_ > 1 ? heap_ : &inline_; }
  Revision* data() { return cap_ > 1 ? heap_ : &inline_; }
  void MaybeShrink() {
    if (cap_ > 1 && (size_ <= 1 || size_ * 4 <= cap_)) Reallocate(size_ <= 1 ? 1 : size_ * 2);
  }
  void Reallocate(uint32_t ncap) {
    Revision* old = data();
    if (ncap <= 1) {
      Revision keep = size_ ? old[0] : Revision{};
      delete[] heap_;
      inline_ = keep;
      cap_ = 1;
      return;
    }
    Revision* p = new Revision[ncap];
    std::memcpy(p, old, sizeof(Revision) * size_);
    if (cap_ > 1) delete[] heap_;
    heap_ = p;
    cap_ = ncap;
  }

  union {
    Revision inline_;
    Revision* heap_;
  };
  uint32_t size_ = 0;
  uint32_t cap_ = 1;  // 1: inline_ is in use
};

struct KeyEntry {
  RevList revs;          // ascending; a tombstone ends a generation
  int64_t create = 0;    // create_revision of the open generation (0 if none)
  int64_t version = 0;   // version of its latest put (0 if none)

  bool Alive() const { return !revs.empty() && !revs.back().tombstone; }
  // The revision visible at rev: the newest with main <= rev, unless that one
  // is a tombstone. nullptr if none.
  const Revision* At(int64_t rev) const {
    const Revision* b = revs.begin();
    const Revision* e = revs.end();
    // Most keys have one or two revisions; the newest is the usual answer.
    if (b == e) return nullptr;
    const Revision* r;
    if (e[-1].main <= rev) {
      r = e - 1;
    } else {
      const Revision* it = std::upper_bound(b, e, rev, [](int64_t v, const Revision& x) { return v < x.main; });
      if (it == b) return nullptr;
      r = it - 1;
    }
    return r->tombstone ? nullptr : r;
  }
};

class KeyIndex {
 public:
  using Map = std::map<std::string, KeyEntry, std::less<>>;

  // Calls fn(Map::const_iterator, const Revision&) for each key in the range that
  // is visible at rev, in key order, until fn returns false. Range rules
  // (etcd's): end empty = the single key; end "\0" = every key >= key;
  // otherwise [key, end).
  template <typename Fn>
  void Visit(std::string_view key, std::string_view end, int64_t rev, Fn&& fn) const {
    if (end.empty()) {
      auto it = map_.find(key);
      if (it == map_.end()) return;
      if (const Revision* r = it->second.At(rev)) fn(it, *r);
      return;
    }
    bool to_end = end.size() == 1 && end[0] == '\0';
    if (!to_end && end <= key) return;
    for (auto it = map_.lower_bound(key); it != map_.end(); ++it) {
      if (!to_end && std::string_view(it->first) >= end) break;
      if (const Revision* r = it->second.At(rev)) {
        if (!fn(it, *r)) return;
      }
    }
  }

  Map::const_iterator Find(std::string_view key) const { return map_.find(key); }
  Map::const_iterator End() const { return map_.end(); }
  Map::iterator Mutable(Map::const_iterator it) { return map_.erase(it, it); }
  // Returns the entry for key, inserting an empty one if absent.
  Map::iterator FindOrInsert(std::string_view key, bool* inserted) {
    auto it = map_.lower_bound(key);
    if (it != map_.end() && it->first == key) {
      *inserted = false;
      return it;
    }
    *inserted = true;
    return map_.emplace_hint(it, std::string(key), KeyEntry{});
  }
  void Erase(Map::iterator it) { map_.erase(it); }

  // Removes every revision not needed to serve reads at revisions >= rev: for
  // each key, all revisions older than its newest revision <= rev, and that
  // one too if it is a tombstone. Keys left without revisions are erased.
  // Removed revisions are appended to *removed (unsorted).
  void Compact(int64_t rev, std::vector<Revision>* removed) {
    for (auto it = map_.begin(); it != map_.end();) it = CompactSome(rev, it, map_.size(), removed);
  }
  // The same for at most max_keys keys starting at from; returns where to go
  // on (End() when done). Lets the caller release its lock between steps.
  Map::iterator CompactSome(int64_t rev, Map::iterator from, size_t max_keys, std::vector<Revision>* removed) {
    auto it = from;
    for (size_t n = 0; it != map_.end() && n < max_keys; n++) {
      RevList& revs = it->second.revs;
      const Revision* b = revs.begin();
      const Revision* ub =
          std::upper_bound(b, revs.end(), rev, [](int64_t v, const Revision& x) { return v < x.main; });
      uint32_t k = static_cast<uint32_t>(ub - b);  // revisions <= rev
      if (k > 0) {
        uint32_t drop = b[k - 1].tombstone ? k : k - 1;
        removed->insert(removed->end(), b, b + drop);
        revs.erase_front(drop);
      }
      if (revs.empty()) {
        it = map_.erase(it);
      } else {
        ++it;
      }
    }
    return it;
  }
  Map::iterator Begin() { return map_.begin(); }
  Map::iterator MutableEnd() { return map_.end(); }
  Map::iterator MutableLowerBound(std::string_view key) { return map_.lower_bound(key); }

  size_t size() const { return map_.size(); }

 private:
  Map map_;
};

}  // namespace engram::mvcc
