// Watch: etcd's watchable store (mvcc/watchable_store.go, watcher.go) and the
// per-stream bookkeeping of its gRPC watch server (v3rpc/watch.go), without
// any gRPC types. server/watch_service.cc puts a gRPC stream on top.
//
// Model (etcd's):
//   - A WatchStream is one client stream; it holds watchers (key, single key
//     or [key, range_end) or from-key, start revision, filters NOPUT/NODELETE,
//     prev_kv, fragment, progress_notify) and ONE ordered queue of replies
//     (created, canceled, events, progress), which the gRPC side pops one at a
//     time with Next(). Everything for a stream leaves in the order it was
//     queued, so a watcher's events never come before its "created" reply.
//   - A watcher is "synced" when every event up to the last revision the apply
//     loop published (NotifiedRev) that it wants has been queued. Synced
//     watchers get events from the apply loop: after each batch commits,
//     KvServer hands the batch's changes to Notify(), which queues one reply
//     per revision per matching watcher (header revision = that revision) and
//     never blocks: when a stream's queue is full (WatchOptions::
//     stream_queue_len replies, etcd's chanBufLen 128) the watcher becomes
//     "unsynced" at the first revision it did not get.
//   - Unsynced watchers (slow ones, and those created with a start revision at
//     or below the current one) are caught up by the syncer thread: it picks
//     up to max_watchers_per_sync of them whose streams have room, scans the
//     store's history once from their lowest next revision
//     (mvcc::Store::ScanEvents) and queues at most batch_max_revs revisions per
//     watcher in one reply (header revision = the revision scanned up to), as
//     etcd's syncWatchers does. A watcher that has caught up with NotifiedRev
//     is moved back to the synced group under the hub lock, so no event is
//     lost or sent twice. A watcher whose next revision is below the compact
//     revision gets a reply {canceled, compact_revision} and stops (it stays
//     registered on its stream until cancelled, as in etcd).
//   - prev_kv is looked up when a reply is popped (Next, on the caller's
//     thread): the key at mod_revision - 1, unless the event created the key;
//     nothing if that revision is compacted (as etcd).
//   - Progress: WatchProgressRequest (RequestProgress) queues {watch_id -1,
//     revision NotifiedRev} once every watcher on the stream is synced (at once
//     when they are); progress_notify watchers that got no events during an
//     interval (WatchOptions::progress_interval plus up to 10% jitter) get
//     {watch_id, revision} if synced, as etcd's progress ticker does.
//
// Threads: Notify runs in the apply stage only (the apply thread, or a writer
// applying inline: one at a time, in log order; server.h). Stream methods may be called
// from any thread. The hub owns two threads: the syncer (catch-up) and the
// notifier (runs streams' ready callbacks and progress ticks), so neither the
// apply thread nor a stream's caller ever runs another stream's code. All
// watcher state is under one hub mutex; no store I/O is done while holding it.
// Streams must be closed (or destroyed) before the hub is destroyed.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "src/common/probe.h"
#include "src/mvcc/store.h"

namespace engram::kv {

// Read by the exporter (etcd's metric names in parentheses).
struct WatchProbe {
  Gauge watch_stream_total;    // open streams (etcd_debugging_mvcc_watch_stream_total)
  Gauge watcher_total;         // watchers (etcd_debugging_mvcc_watcher_total)
  Gauge slow_watcher_total;    // unsynced watchers (etcd_debugging_mvcc_slow_watcher_total)
  Gauge pending_events_total;  // events queued, not yet taken by a stream (etcd_debugging_mvcc_pending_events_total)
  Counter events_total;        // events taken by streams (etcd_debugging_mvcc_events_total)
  // Bytes buffered for all streams: replies queued in the hub plus replies
  // taken by the gRPC side and not yet written (engram_watch_stream_buffered_bytes),
  // and streams whose requests are not read because their buffer is over the
  // budget (engram_watch_streams_read_paused).
  Gauge buffered_bytes;
  Gauge streams_read_paused;
  // etcd 3.7's send-loop timings (etcd_debugging_server_watch_send_loop_*),
  // observed by the gRPC stream from handing a reply to gRPC until the write
  // completes: replies with events (and per event), created/canceled replies,
  // progress notifications.
  Histogram send_events_seconds{BucketsB1()};
  Histogram send_per_event_seconds{BucketsB1()};
  Histogram send_control_seconds{BucketsB1()};
  Histogram send_progress_seconds{BucketsB1()};
};

struct WatchOptions {
  // Progress notifications for progress_notify watchers (etcd's
  // --watch-progress-notify-interval; 10 minutes by default).
  std::chrono::milliseconds progress_interval{std::chrono::minutes(10)};
  size_t stream_queue_len = 128;       // replies queued per stream before watchers turn unsynced
  // Per-stream memory budget (--watch-stream-buffer-bytes): bytes of replies
  // buffered for one stream (queued + taken and not yet written). At the
  // budget its watchers turn unsynced (they catch up from the store when the
  // client reads again), catch-up batches are cut to fit, and the gRPC side
  // stops reading the stream's requests (HTTP/2 flow control then pushes back
  // on the client, as etcd's blocked recv loop does).
  size_t stream_buffer_bytes = 8u << 20;
  int batch_max_revs = 1000;           // revisions per catch-up reply (etcd's watchBatchMaxRevs)
  size_t max_watchers_per_sync = 512;  // watchers per catch-up scan (etcd's maxWatchersPerSync)
  std::chrono::milliseconds sync_interval{100};  // catch-up retry period (etcd's 100ms)
};

inline constexpr int64_t kAutoWatchId = 0;      // the server chooses
inline constexpr int64_t kInvalidWatchId = -1;  // stream-wide replies (progress) and failed creates

// etcd's error texts for failed creates (cancel_reason).
inline constexpr const char* kErrWatcherRangeEmpty = "mvcc: watcher range is empty";
inline constexpr const char* kErrWatcherDuplicateId = "mvcc: duplicate watch ID provided on the WatchStream";

// A WatchCreateRequest, in wire form.
struct WatchSpec {
  std::string key;        // "" means "\0" (the smallest key)
  std::string range_end;  // "" = the key alone; "\0" = every key >= key; else [key, range_end)
  int64_t start_revision = 0;  // 0 = from the next revision
  bool progress_notify = false;
  bool no_put = false, no_delete = false;
  bool prev_kv = false;
  bool fragment = false;
  int64_t watch_id = kAutoWatchId;
};

struct WatchEvent {
  bool tombstone = false;                     // DELETE (kv: key + mod_revision) or PUT
  std::shared_ptr<const mvcc::KeyValue> kv;   // shared by every watcher that got the event
  std::optional<mvcc::KeyValue> prev_kv;      // set by Next() when the watcher asked for it
};

// One reply to send (a WatchResponse without the header's IDs and term).
struct WatchReply {
  int64_t watch_id = 0;
  int64_t revision = 0;  // header.revision
  int64_t compact_revision = 0;
  bool created = false;
  bool canceled = false;
  std::string cancel_reason;
  std::vector<WatchEvent> events;
  bool fragment = false;  // the watcher accepts fragmented responses
  bool prev_kv = false;   // the watcher asked for prev_kv (Next fills it)
};

class WatchHub;
struct Watcher;

// One client stream. Created by WatchHub::NewStream; thread-safe.
class WatchStream : public std::enable_shared_from_this<WatchStream> {
 public:
  ~WatchStream();
  WatchStream(const WatchStream&) = delete;
  WatchStream& operator=(const WatchStream&) = delete;

  // Queues the "created" reply (or a created+canceled one with the reason,
  // watch_id -1, on an empty range or a duplicate ID), then the watcher's
  // events. Returns the watch ID (-1 on failure).
  int64_t Create(const WatchSpec& spec);
  // Queues a "canceled" reply if the watcher exists; does nothing otherwise.
  void Cancel(int64_t watch_id);
  // A WatchProgressRequest: queues {watch_id -1, current revision} once every
  // watcher on the stream is synced.
  void RequestProgress();

  // Takes the next reply (prev_kv filled). False when none is queued; the
  // ready callback then runs (on the hub's notifier thread) once one is.
  bool Next(WatchReply* out);
  // Like Next, and *bytes gets the reply's size as counted in the budget; the
  // caller holds those bytes (they still count) until it calls Release(bytes)
  // once the reply is written or dropped.
  bool Next(WatchReply* out, size_t* bytes);
  // Adjusts the bytes the caller holds (the wire form may be larger or
  // smaller than the estimate Next gave): Hold(n) adds, Release(n) subtracts.
  void Hold(size_t bytes);
  void Release(size_t bytes);
  // Whether the stream's buffered bytes reached its budget: the gRPC side
  // stops reading its requests until this turns false.
  bool OverBudget() const;
  // Set once, before any use from other threads.
  void SetReadyCallback(std::function<void()> cb);
  // Removes every watcher and drops queued replies; after it returns the ready
  // callback neither runs nor will run. Idempotent; the destructor calls it.
  void Close();

  size_t QueuedForTesting() const;
  size_t BufferedBytesForTesting() const;

 private:
  friend class WatchHub;
  explicit WatchStream(WatchHub* hub);
  void InvokeReady();  // notifier thread

  WatchHub* const hub_;

  // Guarded by hub_->mu_.
  std::map<int64_t, std::shared_ptr<Watcher>> watchers_;
  int64_t next_id_ = 0;
  std::deque<WatchReply> queue_;
  size_t queued_bytes_ = 0;         // ReplyBytes of queue_
  size_t held_bytes_ = 0;           // taken by Next, not yet Released
  size_t unsynced_ = 0;             // watchers of this stream in the unsynced group
  size_t progress_watchers_ = 0;    // watchers with progress_notify
  bool progress_requested_ = false; // a progress request waits for all watchers to sync
  bool waiting_ = true;             // Next found nothing: notify on the next push
  bool closed_ = false;
  std::chrono::steady_clock::time_point next_tick_;

  // The ready callback; it runs without cb_mu_ held (running_ marks it).
  std::mutex cb_mu_;
  std::condition_variable cb_cv_;
  std::function<void()> ready_;
  bool running_ = false;
  std::thread::id runner_;
};

class WatchHub {
 public:
  // store must outlive the hub. NotifiedRev starts at store->Rev().
  WatchHub(const mvcc::Store* store, const WatchOptions& opts, WatchProbe* probe);
  ~WatchHub();
  WatchHub(const WatchHub&) = delete;
  WatchHub& operator=(const WatchHub&) = delete;

  // Starts / stops the syncer and notifier threads. Stop is idempotent; after
  // it, streams still work but unsynced watchers are no longer caught up.
  void Start();
  void Stop();

  std::shared_ptr<WatchStream> NewStream();

  // Apply thread, after a batch committed: rev is the store's revision after
  // the batch and events its changes in revision order (Batch::TakeEvents).
  // complete = false when the batch did not record its changes (there were no
  // watchers when it began): watchers created meanwhile that need them catch
  // up from the store instead.
  void Notify(int64_t rev, std::vector<mvcc::Event> events, bool complete = true);
  // Whether the apply loop should record the next batch's changes.
  bool HasWatchers() const { return watchers_.load(std::memory_order_acquire) > 0; }
  // Last revision handed to Notify (or the store's at start).
  int64_t NotifiedRev() const;

  const WatchOptions& options() const { return opts_; }

  // Runs one catch-up round now (tests that do not Start the threads).
  // Returns true if it did any work.
  bool SyncOnceForTesting() { return SyncOnce(); }

 private:
  friend class WatchStream;

  struct Chosen;

  // All under mu_.
  void Push(WatchStream* s, WatchReply r);
  // Whether s can take more replies from Notify / the syncer (count and
  // bytes), and how many bytes it has left.
  bool HasRoom(const WatchStream* s) const;
  size_t Room(const WatchStream* s) const;
  void AddBuffered(WatchStream* s, int64_t queued, int64_t held);
  void AddSynced(Watcher* w);
  void RemoveSynced(Watcher* w);
  void MakeUnsynced(Watcher* w);
  void MakeSynced(Watcher* w);
  void Remove(Watcher* w);  // from whatever group; updates the gauges
  void MaybeSendRequestedProgress(WatchStream* s);
  void ScheduleTick(WatchStream* s, std::chrono::steady_clock::time_point now);
  void KickSyncer();

  bool SyncOnce();
  void SyncLoop();
  void NotifierLoop();
  void Tick(std::chrono::steady_clock::time_point now);
  void FillPrevKv(WatchReply* r) const;

  const mvcc::Store* const store_;
  const WatchOptions opts_;
  WatchProbe own_probe_;
  WatchProbe* const probe_;

  mutable std::mutex mu_;
  int64_t notified_rev_;                                              // guarded by mu_
  std::unordered_map<std::string, std::vector<Watcher*>> synced_keys_;  // single-key synced watchers
  std::vector<Watcher*> synced_ranges_;                               // range synced watchers
  std::unordered_set<Watcher*> unsynced_;
  std::set<WatchStream*> progress_streams_;  // streams with progress_notify watchers
  std::vector<std::shared_ptr<WatchStream>> ready_;  // streams whose callback should run
  bool sync_kick_ = false;
  bool stop_ = false;
  bool started_ = false;
  std::condition_variable sync_cv_, notify_cv_;
  std::atomic<int64_t> watchers_{0};
  std::thread syncer_, notifier_;
};

}  // namespace engram::kv
