// RawNode: Engram's Raft consensus core, after etcd-io/raft's RawNode + Ready
// design (learned from, not translated).
//
// WHAT IT IS. A deterministic state machine. It does no I/O, reads no clock,
// starts no threads, keeps no global state, and draws randomness only from
// Config.rand. Inputs: Tick() (logical time), Step(msg) (a message from a
// peer), Propose*/ReadIndex/Campaign/TransferLeader (local requests). Output:
// a Ready batch. It is NOT thread-safe: one thread (the server's raft loop)
// owns a RawNode and makes every call on it.
//
// THE READY CONTRACT. The server's loop is
//
//   if (node->HasReady()) {
//     Ready rd = node->GetReady();
//     1. WAL: append rd.entries, then rd.hard_state if !rd.hard_state.Empty();
//        fdatasync if rd.must_sync. Then MemoryStorage::Append(rd.entries) and
//        SetHardState(rd.hard_state) (raft reads its log back from Storage).
//     2. Send rd.messages (only now: a vote or an append acknowledgement is a
//        promise that what precedes it is on disk).
//     3. Apply rd.committed_entries in order, or hand them to an apply thread
//        that applies them in order (call ApplyConfChange for kConfChange
//        entries, on the raft thread, before Advance); hand rd.read_states to
//        waiting readers.
//     4. node->Advance(rd). From here raft counts the committed entries as
//        applied (Status().applied), as etcd does with an asynchronous apply;
//        on restart Config.applied must be what the state machine durably has.
//   }
//
// Every Ready returned by GetReady() must be passed to Advance() before the
// next GetReady() (HasReady() is false in between). Between the two the server
// may still Tick/Step/Propose; what that produces goes into the next Ready.
//
// GUARANTEES. Entries are committed only by a quorum of *persisted* copies: the
// leader counts its own log only once Advance() says its entries are durable,
// and followers acknowledge only in messages sent after persisting. So an entry
// proposed on a single voter appears in Ready.entries, and after Advance() in
// the NEXT Ready's committed_entries (with hard_state.commit covering it).
// committed_entries only ever holds entries that are already durable locally.
// Proposals made between two GetReady() calls all go into one Ready (one
// fsync) and, on a leader with peers, into one append message per peer (up to
// max_size_per_msg each).
//
// STORAGE. The server may MemoryStorage::Compact() only up to the applied
// index (raft reads committed entries back from Storage to hand them out).
// On restart it rebuilds MemoryStorage from the WAL (ResetCompacted() when the
// WAL starts after a compacted prefix), then passes Config.applied = the index
// its state machine has applied.
//
// DIFFERENCES FROM etcd-io/raft worth knowing: a node that heard from a
// leader within an election timeout ignores pre-vote requests even without
// check_quorum (Raft thesis 9.6), so pre_vote alone keeps a rejoining node from
// deposing a healthy leader; a conf change proposed while another is pending
// fails with FailedPrecondition (etcd silently turns it into an empty entry);
// the leader sends the appends for new proposals once per Ready (in GetReady),
// not once per proposal; followers do not forward proposals.
//
// FAILURES. Expected failures (no leader, a dropped proposal, a bad message
// from a peer, a bad Config) come back as Status. Broken invariants (commit
// going backwards, a committed entry being overwritten, Advance() without
// GetReady(), Storage not holding what the Ready said to persist) call
// ENGRAM_PANIC.
//
// NOT SUPPORTED YET: snapshots (a follower that needs entries the leader has
// compacted cannot catch up), joint consensus (membership changes are one
// member at a time), lease-based reads, asynchronous storage writes, proposal
// forwarding by followers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "src/common/status.h"
#include "src/raft/probe.h"
#include "src/raft/storage.h"
#include "src/raft/types.h"

namespace engram::raft {

inline constexpr uint64_t kNone = 0;  // no node / no leader / no vote

enum class MessageType {
  kHup,             // local: start an election
  kBeat,            // local: leader sends heartbeats
  kProp,            // a proposal (local, or forwarded to the leader)
  kApp,             // append entries (leader -> follower)
  kAppResp,         // append result (follower -> leader)
  kVote,            // request vote (candidate -> all)
  kVoteResp,        // vote result
  kPreVote,         // pre-vote request (pre-candidate -> all; does not bump terms)
  kPreVoteResp,     // pre-vote result
  kHeartbeat,       // leader -> follower: commit index, read-index context
  kHeartbeatResp,   // follower -> leader
  kReadIndex,       // read-index request (local, or follower -> leader)
  kReadIndexResp,   // leader -> follower: the read index for context
  kTimeoutNow,      // leader -> transferee: campaign now
  kTransferLeader,  // local (or forwarded to leader): from = the transferee
};
const char* MessageTypeName(MessageType t);

struct Message {
  MessageType type = MessageType::kApp;
  uint64_t from = 0, to = 0, term = 0, log_term = 0, index = 0, commit = 0;
  std::vector<Entry> entries{};
  bool reject = false;
  uint64_t reject_hint = 0;
  std::string context{};  // read-index context; "CampaignTransfer" on forced votes
};

enum class StateType { kFollower, kCandidate, kLeader, kPreCandidate };
const char* StateTypeName(StateType s);

// Volatile state, reported in a Ready when it changes. Not persisted.
struct SoftState {
  uint64_t lead = 0;
  StateType state = StateType::kFollower;
  bool operator==(const SoftState&) const = default;
};

// A linearizable read may be served once the applied index reaches `index`.
struct ReadState {
  uint64_t index = 0;
  std::string request_ctx;
};

struct Ready {
  std::optional<SoftState> soft_state;   // set when changed
  HardState hard_state;                   // Empty() when unchanged
  std::vector<Entry> entries;             // to persist before sending messages
  std::vector<Entry> committed_entries;   // to apply, in order (already durable)
  std::vector<Message> messages;          // to send after persisting
  std::vector<ReadState> read_states;
  bool must_sync = false;                 // entries, term or vote changed: fdatasync
};

struct Config {
  uint64_t id = 0;                 // this node; must not be 0
  std::vector<uint64_t> voters;    // used only when storage has no ConfState yet (fresh cluster)
  int election_tick = 10;          // election timeout is random in [election_tick, 2*election_tick) ticks
  int heartbeat_tick = 1;          // leader heartbeat interval in ticks; < election_tick
  Storage* storage = nullptr;      // required; not owned; must outlive the RawNode
  uint64_t applied = 0;            // last index the state machine applied (restart)
  uint64_t max_size_per_msg = 1 << 20;
  size_t max_inflight_msgs = 256;  // append messages in flight per follower (replicate state)
  uint64_t max_committed_size_per_ready = 64 << 20;
  bool check_quorum = false;       // leader steps down without a quorum of active followers
  bool pre_vote = false;           // pre-vote before bumping the term
  // Injected randomness for the election timeout. If empty, a deterministic
  // generator seeded with `id` is used (fine for tests; production should inject).
  std::function<uint64_t()> rand;
  RaftProbe* probe = nullptr;      // optional; not owned
};

class Raft;  // raft.h (internal)

class RawNode {
 public:
  // InvalidArgument for a bad Config (id 0, no storage, no voters, ticks);
  // Corruption if the storage's hard state does not fit its log.
  static Result<std::unique_ptr<RawNode>> Create(const Config& config);
  ~RawNode();
  RawNode(const RawNode&) = delete;
  RawNode& operator=(const RawNode&) = delete;

  // Advances logical time by one tick (election / heartbeat timeouts).
  void Tick();
  // Starts an election now (pre-vote first if Config.pre_vote). On a single
  // voter this makes the node leader at once. OK (nothing to do) if already
  // leader. FailedPrecondition if this node is not a voter, or while committed
  // conf changes are not applied yet (Status().applied < the index of one).
  engram::Status Campaign();
  // Appends a normal entry on the leader. FailedPrecondition("raft proposal
  // dropped") if this node is not the leader, or a leadership transfer is in
  // progress. No forwarding to the leader.
  engram::Status Propose(std::string data);
  // Same for many entries at once (they stay in order, in one Ready).
  engram::Status ProposeBatch(std::vector<std::string> datas);
  // Appends a kConfChange entry (data = EncodeConfChange(cc)). Also
  // FailedPrecondition while an earlier conf change is not applied yet, and
  // InvalidArgument for a change that would leave no voter.
  engram::Status ProposeConfChange(const ConfChange& cc);
  // Same, with the entry data in the caller's own encoding (e.g. an
  // engrampb.ConfChange carrying the member's URLs). Raft validates cc and
  // never reads data; the caller decodes it back into cc to ApplyConfChange.
  engram::Status ProposeConfChange(const ConfChange& cc, std::string data);
  // Applies a committed conf change to the membership raft uses; returns the
  // new ConfState for the server to persist. Call it when applying the entry.
  ConfState ApplyConfChange(const ConfChange& cc);
  // A message from a peer. InvalidArgument for local-only types (kHup, kBeat)
  // or a response from an unknown peer; FailedPrecondition for a forwarded
  // proposal that is dropped. Stale messages are ignored (OK).
  engram::Status Step(const Message& m);
  // Requests a read index for ctx; the answer comes back as a ReadState with
  // the same request_ctx in a later Ready (the reader then waits until the
  // applied index reaches ReadState.index). With peers, ctx must be non-empty
  // and unique among pending requests. A request dropped for want of a leader
  // (or lost in a leader change) never gets an answer: the caller times out,
  // as with etcd.
  void ReadIndex(std::string ctx);
  // The read index this node can give without a round of messages: its
  // commit index when it is the leader and the only voter, once an entry of
  // its own term is committed (until then an earlier term's entries may be
  // committed without its commit index showing it). 0 otherwise. What
  // ReadIndex would answer at once on a single voter, without waiting for a
  // Ready.
  uint64_t LocalReadIndex() const;
  // Asks the leader (directly, or via this follower) to hand leadership to
  // transferee: the leader brings it up to date, then tells it to campaign.
  // Proposals are refused meanwhile; the attempt is abandoned after an election timeout.
  void TransferLeader(uint64_t transferee);
  // The transport could not reach `id`: the leader stops optimistic pipelining to it.
  void ReportUnreachable(uint64_t id);

  bool HasReady() const;
  Ready GetReady();
  void Advance(const Ready& rd);

  struct BasicStatus {
    uint64_t id, lead, term, commit, applied;
    StateType state;
  };
  BasicStatus Status() const;
  HardState hard_state() const;
  ConfState conf_state() const;

 private:
  explicit RawNode(std::unique_ptr<Raft> raft);

  std::unique_ptr<Raft> raft_;
  SoftState prev_soft_;
  HardState prev_hard_;
  bool ready_outstanding_ = false;
  uint64_t ready_applying_ = 0;  // last committed index handed out in the outstanding Ready
};

}  // namespace engram::raft
