// Store's compaction steps (store.h "Compaction"): after the batch that
// stores a compact revision commits, the writer thread compacts the key index
// and removes the dropped revisions from LMDB in bounded steps between its
// batches. A crash mid-way is finished at the next Open (Rebuild).
#include <lmdb.h>

#include <algorithm>
#include <chrono>
#include <ctime>

#include "src/common/failpoint.h"
#include "src/common/log.h"
#include "src/mvcc/compaction_job.h"
#include "src/mvcc/format.h"

namespace engram::mvcc {
namespace {
constexpr size_t kCompactIndexStep = 10000;     // keys compacted per hold of mu_ (one step)
constexpr size_t kCompactIndexStepRevs = 2000;  // ... or revisions dropped, whichever comes first
}  // namespace

void Store::CompactIndexAndDelete(int64_t rev, bool at_open) {
  StartCompaction(rev, at_open);
  FinishCompaction();
}

void Store::StartCompaction(int64_t rev, bool at_open) {
  if (job_) {
    // One runs: publish the new compact revision now (reads below it fail
    // from here) and do its physical work when the running one ends, never
    // inside this commit.
    {
      std::unique_lock<RwLock> l(mu_);
      compact_rev_.store(rev, std::memory_order_release);
    }
    probe_->compact_revision.Set(rev);
    queued_compact_ = std::max(queued_compact_, rev);
    return;
  }
  {
    // From here reads below rev fail; reads at >= rev are served by both
    // compacted and not yet compacted keys.
    std::unique_lock<RwLock> l(mu_);
    compact_rev_.store(rev, std::memory_order_release);
  }
  probe_->compact_revision.Set(rev);
  job_ = std::make_unique<CompactJob>();
  job_->rev = rev;
  job_->at_open = at_open;
  job_->start = std::chrono::steady_clock::now();
}

void Store::FinishCompaction() {
  while (CompactStep()) {
  }
}

bool Store::CompactStep() {
  if (!job_) return false;
  ENGRAM_CHECK(active_batch_ == nullptr, "mvcc: compaction step with an open batch");
  (void)FAILPOINT("mvcc-compact-step");  // sleep(N): a slow disk under a long compaction
  CompactJob& j = *job_;
  if (!j.index_done) {
    // kCompactIndexStep keys per hold of mu_: readers get in between. The
    // position is kept as a key (batches in between may insert or erase keys).
    auto t0 = std::chrono::steady_clock::now();
    {
      std::unique_lock<RwLock> l(mu_);
      auto it = j.index_started ? index_.MutableLowerBound(j.next_key) : index_.Begin();
      j.index_started = true;
      // At most kCompactIndexStep keys or kCompactIndexStepRevs dropped
      // revisions per step (keys with long histories make a step costly).
      const size_t before = j.garbage.size();
      for (size_t keys = 0; it != index_.MutableEnd() && keys < kCompactIndexStep &&
                            j.garbage.size() - before < kCompactIndexStepRevs;
           keys++) {
        it = index_.CompactSome(j.rev, it, 1, &j.garbage);
      }
      // Each step's garbage is one sorted run; the removal merges the runs,
      // so revisions go in ascending order overall without one big sort.
      if (j.garbage.size() > before) {
        std::sort(j.garbage.begin() + static_cast<ptrdiff_t>(before), j.garbage.end(), RevLess);
        j.runs.emplace_back(before, j.garbage.size());
      }
      if (it == index_.MutableEnd()) {
        j.index_done = true;
      } else {
        j.next_key = it->first;
      }
    }
    j.index_ms += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (j.index_done) {
      probe_->index_compaction_pause_ms.Observe(j.index_ms);
      // Ascending revision order matters: a crash between chunks leaves, for
      // each key, a suffix of its garbage, whose newest entry (possibly a
      // tombstone) is still there, so compacting again at Open drops exactly
      // the rest. It also walks the revision-ordered key DB forward.
      for (size_t r = 0; r < j.runs.size(); r++) j.heap.push_back(r);
      std::make_heap(j.heap.begin(), j.heap.end(), [&j](size_t a, size_t b) {
        return RevLess(j.garbage[j.runs[b].first], j.garbage[j.runs[a].first]);
      });
    }
    return true;
  }
  if (j.done < j.garbage.size()) {
    auto chunk_start = std::chrono::steady_clock::now();
    MDB_txn* t = nullptr;
    int rc = mdb_txn_begin(env_, nullptr, 0, &t);
    if (rc == 0) {
      const size_t end = std::min(j.done + std::max<size_t>(1, opts_.compaction_batch_limit), j.garbage.size());
      // The next end - done revisions in ascending order: a k-way merge of
      // the sorted runs.
      auto later = [&j](size_t a, size_t b) {
        return RevLess(j.garbage[j.runs[b].first], j.garbage[j.runs[a].first]);
      };
      std::vector<Revision> chunk;
      chunk.reserve(end - j.done);
      while (chunk.size() < end - j.done && !j.heap.empty()) {
        std::pop_heap(j.heap.begin(), j.heap.end(), later);
        const size_t r = j.heap.back();
        chunk.push_back(j.garbage[j.runs[r].first++]);
        if (j.runs[r].first < j.runs[r].second) {
          std::push_heap(j.heap.begin(), j.heap.end(), later);
        } else {
          j.heap.pop_back();
        }
      }
      for (const Revision& r : chunk) {
        char kb[format::kRevKeySize];
        format::EncodeRevKey(kb, r.main, r.sub, r.tombstone != 0);
        MDB_val k{sizeof(kb), kb};
        rc = mdb_del(t, key_dbi_, &k, nullptr);
        if (rc != 0 && rc != MDB_NOTFOUND) break;
        rc = 0;
      }
      if (rc != 0) {
        mdb_txn_abort(t);
      } else {
        rc = mdb_txn_commit(t);  // no fsync (MDB_NOSYNC): the next Store::Sync makes it durable
      }
      if (rc == 0) {
        probe_->compaction_keys_total.Inc(end - j.done);
        UpdateFileBytes();
        (void)Size();  // the size gauges: in-use drops as revisions are removed (etcd: every commit)
        probe_->db_compaction_pause_ms.Observe(
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - chunk_start).count());
        j.done = end;
      }
    }
    if (rc != 0) {
      LOG_ERROR("mvcc: compaction stopped, will resume at next open", {{"error", mdb_strerror(rc)}});
      job_.reset();
      queued_compact_ = 0;
      return false;
    }
    if (j.done < j.garbage.size()) return true;
  }
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - j.start).count();
  probe_->db_compaction_total_ms.Observe(took * 1000);
  probe_->db_compaction_last.Set(static_cast<int64_t>(std::time(nullptr)));
  if (!j.garbage.empty() || !j.at_open) {
    LOG_INFO("mvcc: finished compaction", {{"compact-revision", j.rev},
                                           {"removed-revisions", static_cast<uint64_t>(j.garbage.size())},
                                           {"took-seconds", took}});
  }
  job_.reset();
  if (queued_compact_ > 0) {
    // The next compaction (its revision is already published).
    const int64_t next = queued_compact_;
    queued_compact_ = 0;
    job_ = std::make_unique<CompactJob>();
    job_->rev = next;
    job_->start = std::chrono::steady_clock::now();
    return true;
  }
  return false;
}

}  // namespace engram::mvcc
