// Test harness for the raft core (header-only so the library glob skips it):
//   Peer             one RawNode + its MemoryStorage, driven through the Ready
//                    contract exactly as the server does it
//   InvariantChecker after LogCabin's RaftConsensusInvariants: checked after
//                    every step of a simulation
//   Network          N in-process peers with a message queue that can drop,
//                    cut, isolate, reorder and duplicate (after etcd-io/raft's
//                    `network` in raft_test.go)
// Deterministic: all randomness comes from seeded generators.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "src/common/log.h"
#include "src/raft/raw_node.h"

namespace engram::raft::testing {

// Raft logs every election at info level; keep test output readable.
inline void QuietLogs() {
  static const bool once = [] {
    log::SetLevel("error");
    return true;
  }();
  (void)once;
}

// splitmix64: a small deterministic generator for tests.
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed) {}
  uint64_t Next() {
    uint64_t z = (s_ += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  uint64_t Uniform(uint64_t n) { return n == 0 ? 0 : Next() % n; }
  bool Chance(double p) { return static_cast<double>(Next() % 1000000) < p * 1000000.0; }

 private:
  uint64_t s_;
};

inline std::string Str(const Entry& e) {
  std::ostringstream o;
  o << "{i=" << e.index << " t=" << e.term << (e.type == EntryType::kConfChange ? " conf" : "") << " d=\"" << e.data
    << "\"}";
  return o.str();
}

struct Peer {
  uint64_t id = 0;
  std::unique_ptr<MemoryStorage> storage;
  std::unique_ptr<RawNode> node;
  Config config;
  std::vector<Entry> applied;  // every entry applied, in order (across restarts)
  std::vector<ReadState> read_states;
  std::vector<Ready> readies;  // kept only when record_readies is set
  bool record_readies = false;
  RaftProbe probe;

  uint64_t LastApplied() const { return applied.empty() ? 0 : applied.back().index; }

  // The server's loop, once per Ready, until there is none: persist, "send"
  // (collect), apply, Advance. Returns the messages to send.
  std::vector<Message> Drain() {
    std::vector<Message> out;
    while (node->HasReady()) {
      Ready rd = node->GetReady();
      Status s = storage->Append(rd.entries);
      EXPECT_TRUE(s.ok()) << s.ToString();
      if (!rd.hard_state.Empty()) storage->SetHardState(rd.hard_state);
      for (Message& m : rd.messages) out.push_back(m);
      for (const Entry& e : rd.committed_entries) {
        if (!applied.empty()) {
          EXPECT_EQ(e.index, applied.back().index + 1) << "node " << id << " applied out of order";
        }
        applied.push_back(e);
        if (e.type == EntryType::kConfChange) {
          auto cc = DecodeConfChange(e.data);
          EXPECT_TRUE(cc.ok());
          if (cc.ok()) storage->SetConfState(node->ApplyConfChange(*cc));
        }
      }
      for (const ReadState& r : rd.read_states) read_states.push_back(r);
      node->Advance(rd);
      if (record_readies) readies.push_back(std::move(rd));
    }
    return out;
  }

  // Crash and restart from what was persisted.
  void Restart() {
    config.applied = LastApplied();
    auto n = RawNode::Create(config);
    ASSERT_TRUE(n.ok()) << n.status().ToString();
    node = std::move(n).value();
  }
};

inline Config MakeConfig(uint64_t id, std::vector<uint64_t> voters, Storage* storage, uint64_t seed) {
  Config c;
  c.id = id;
  c.voters = std::move(voters);
  c.storage = storage;
  c.election_tick = 10;
  c.heartbeat_tick = 1;
  c.max_size_per_msg = kNoLimit;
  c.max_inflight_msgs = 256;
  auto rng = std::make_shared<Rng>(seed * 7919 + id);
  c.rand = [rng] { return rng->Next(); };
  return c;
}

// After LogCabin's RaftConsensusInvariants: properties that must hold after
// every step. Check() returns "" or a description of the first violation.
class InvariantChecker {
 public:
  std::string Check(const std::map<uint64_t, Peer*>& peers) {
    std::ostringstream err;
    std::map<uint64_t, std::vector<Entry>> logs;
    for (const auto& [id, p] : peers) {
      const RawNode::BasicStatus st = p->node->Status();
      Snap& prev = last_[id];
      if (st.term < prev.term) err << "node " << id << ": term went back " << prev.term << " -> " << st.term << "; ";
      if (st.commit < prev.commit) {
        err << "node " << id << ": commit went back " << prev.commit << " -> " << st.commit << "; ";
      }
      if (st.applied < prev.applied) err << "node " << id << ": applied went back; ";
      if (st.applied > st.commit) err << "node " << id << ": applied " << st.applied << " > commit " << st.commit << "; ";
      prev = Snap{st.term, st.commit, st.applied};
      if (st.state == StateType::kLeader) {
        auto [it, inserted] = leader_of_term_.emplace(st.term, id);
        if (!inserted && it->second != id) {
          err << "two leaders in term " << st.term << ": " << it->second << " and " << id << "; ";
        }
      }
      // The durable log (everything is persisted between steps).
      const MemoryStorage& s = *p->storage;
      std::vector<Entry> log;
      if (s.LastIndex() >= s.FirstIndex()) {
        auto ents = s.Entries(s.FirstIndex(), s.LastIndex() + 1, kNoLimit);
        if (!ents.ok()) {
          err << "node " << id << ": cannot read log: " << ents.status().ToString() << "; ";
          continue;
        }
        log = std::move(ents).value();
      }
      if (st.commit > s.LastIndex()) err << "node " << id << ": commit " << st.commit << " beyond log; ";
      for (size_t i = 1; i < log.size(); i++) {
        if (log[i].term < log[i - 1].term) err << "node " << id << ": log terms decrease at " << log[i].index << "; ";
      }
      if (!log.empty() && log.back().term > st.term) err << "node " << id << ": log term above current term; ";
      // Committed prefix: whatever one node committed at an index, every node
      // that committed that index holds too, forever.
      for (const Entry& e : log) {
        if (e.index > st.commit) break;
        auto [it, inserted] = committed_.emplace(e.index, e);
        if (!inserted && !(it->second == e)) {
          err << "node " << id << ": committed entry " << Str(e) << " differs from " << Str(it->second) << "; ";
        }
      }
      for (const Entry& e : p->applied) {
        auto it = committed_.find(e.index);
        if (it != committed_.end() && !(it->second == e)) {
          err << "node " << id << ": applied entry " << Str(e) << " differs from committed " << Str(it->second) << "; ";
        }
      }
      logs[id] = std::move(log);
    }
    // Log matching: if two logs hold an entry with the same index and term,
    // they are identical up to it.
    for (auto a = logs.begin(); a != logs.end(); ++a) {
      for (auto b = std::next(a); b != logs.end(); ++b) {
        const auto& la = a->second;
        const auto& lb = b->second;
        if (la.empty() || lb.empty()) continue;
        const uint64_t lo = std::max(la.front().index, lb.front().index);
        const uint64_t hi = std::min(la.back().index, lb.back().index);
        uint64_t match = 0;
        for (uint64_t i = hi; i >= lo && i > 0; i--) {
          if (la[i - la.front().index].term == lb[i - lb.front().index].term) {
            match = i;
            break;
          }
        }
        for (uint64_t i = lo; i <= match; i++) {
          if (!(la[i - la.front().index] == lb[i - lb.front().index])) {
            err << "log matching violated between " << a->first << " and " << b->first << " at " << i << "; ";
            break;
          }
        }
      }
    }
    return err.str();
  }

  const std::map<uint64_t, Entry>& committed() const { return committed_; }

 private:
  struct Snap {
    uint64_t term = 0, commit = 0, applied = 0;
  };
  std::map<uint64_t, Snap> last_;
  std::map<uint64_t, uint64_t> leader_of_term_;
  std::map<uint64_t, Entry> committed_;
};

class Network {
 public:
  using Tweak = std::function<void(Config&)>;

  explicit Network(std::vector<uint64_t> ids, Tweak tweak = {}, uint64_t seed = 1) : rng_(seed) {
    QuietLogs();
    for (uint64_t id : ids) AddPeer(id, ids, tweak, seed);
  }

  // A peer that starts with `voters` as its configuration (a node joining an
  // existing cluster starts with the full membership, learners excluded).
  Peer& AddPeer(uint64_t id, std::vector<uint64_t> voters, const Tweak& tweak = {}, uint64_t seed = 1) {
    auto p = std::make_unique<Peer>();
    p->id = id;
    p->storage = std::make_unique<MemoryStorage>();
    p->config = MakeConfig(id, std::move(voters), p->storage.get(), seed);
    p->config.probe = &p->probe;
    if (tweak) tweak(p->config);
    auto n = RawNode::Create(p->config);
    EXPECT_TRUE(n.ok()) << n.status().ToString();
    p->node = std::move(n).value();
    Peer& ref = *p;
    peers_[id] = std::move(p);
    return ref;
  }

  Peer& peer(uint64_t id) { return *peers_.at(id); }
  RawNode& node(uint64_t id) { return *peers_.at(id)->node; }
  RawNode::BasicStatus status(uint64_t id) { return node(id).Status(); }
  std::vector<uint64_t> ids() const {
    std::vector<uint64_t> out;
    for (const auto& [id, p] : peers_) out.push_back(id);
    return out;
  }

  // ---- faults ----
  void Cut(uint64_t a, uint64_t b) {
    dropped_.insert({a, b});
    dropped_.insert({b, a});
  }
  void Isolate(uint64_t id) {
    for (const auto& [other, p] : peers_) {
      if (other != id) Cut(id, other);
    }
  }
  void Recover() {
    dropped_.clear();
    drop_rate_.clear();
    ignored_.clear();
  }
  void DropRate(uint64_t from, uint64_t to, double p) { drop_rate_[{from, to}] = p; }
  void Ignore(MessageType t) { ignored_.insert(t); }

  // ---- inputs (each drains the peer and delivers everything it causes) ----
  void Campaign(uint64_t id) {
    EXPECT_TRUE(node(id).Campaign().ok());
    Flush(id);
  }
  Status Propose(uint64_t id, std::string data) {
    Status s = node(id).Propose(std::move(data));
    Flush(id);
    return s;
  }
  Status ProposeConfChange(uint64_t id, const ConfChange& cc) {
    Status s = node(id).ProposeConfChange(cc);
    Flush(id);
    return s;
  }
  void ReadIndex(uint64_t id, std::string ctx) {
    node(id).ReadIndex(std::move(ctx));
    Flush(id);
  }
  void TransferLeader(uint64_t id, uint64_t to) {
    node(id).TransferLeader(to);
    Flush(id);
  }
  void Tick(uint64_t id, int n = 1) {
    for (int i = 0; i < n; i++) {
      node(id).Tick();
      Flush(id);
    }
  }
  void TickAll(int n = 1) {
    for (int i = 0; i < n; i++) {
      for (const auto& [id, p] : peers_) {
        p->node->Tick();
        Flush(id);
      }
    }
  }
  void Restart(uint64_t id) {
    peer(id).Restart();
    // Messages in flight to the old incarnation are still delivered (as a
    // real network would).
    CheckInvariants("restart");
  }

  // Runs the peer's Ready loop, queues its messages and delivers until quiet.
  void Flush(uint64_t id) {
    Enqueue(peer(id).Drain());
    CheckInvariants("drain");
    if (auto_deliver_) DeliverAll();
  }
  void Send(std::vector<Message> msgs) {
    Enqueue(std::move(msgs));
    if (auto_deliver_) DeliverAll();
  }
  // Delivers until the queue is empty. A message storm that never settles
  // (a livelock) fails the test instead of hanging it.
  void DeliverAll() {
    for (int i = 0; !queue_.empty(); i++) {
      if (i == 100000) {
        ADD_FAILURE() << "message storm: " << queue_.size() << " messages still queued after 100000 deliveries";
        if (violation_.empty()) violation_ = "message storm";
        queue_.clear();
        return;
      }
      DeliverAt(0);
    }
  }
  // Delivers the i-th queued message (tests that reorder pick i at random).
  void DeliverAt(size_t i) {
    Message m = std::move(queue_[i]);
    queue_.erase(queue_.begin() + static_cast<std::ptrdiff_t>(i));
    auto it = peers_.find(m.to);
    if (it == peers_.end()) return;
    Peer& p = *it->second;
    (void)p.node->Step(m);  // stale / unknown-peer / dropped-proposal errors are expected here
    Enqueue(p.Drain());
    delivered_++;
    CheckInvariants(MessageTypeName(m.type));
  }
  void set_auto_deliver(bool v) { auto_deliver_ = v; }
  std::deque<Message>& queue() { return queue_; }
  Rng& rng() { return rng_; }

  // The leader with the highest term (0 if none).
  uint64_t Leader() {
    uint64_t lead = 0, term = 0;
    for (const auto& [id, p] : peers_) {
      auto st = p->node->Status();
      if (st.state == StateType::kLeader && st.term >= term) {
        lead = id;
        term = st.term;
      }
    }
    return lead;
  }

  void CheckInvariants(const std::string& what) {
    if (!violation_.empty()) return;
    std::map<uint64_t, Peer*> ps;
    for (const auto& [id, p] : peers_) ps[id] = p.get();
    std::string err = checker_.Check(ps);
    if (!err.empty()) {
      violation_ = "after step " + std::to_string(steps_) + " (" + what + "): " + err;
      ADD_FAILURE() << "raft invariant violated " << violation_;
    }
    steps_++;
  }
  const std::string& violation() const { return violation_; }
  const InvariantChecker& checker() const { return checker_; }
  uint64_t steps() const { return steps_; }

 private:
  void Enqueue(std::vector<Message> msgs) {
    for (Message& m : msgs) {
      if (dropped_.count({m.from, m.to}) != 0) continue;
      if (ignored_.count(m.type) != 0) continue;
      auto it = drop_rate_.find({m.from, m.to});
      if (it != drop_rate_.end() && rng_.Chance(it->second)) continue;
      queue_.push_back(std::move(m));
    }
  }

  std::map<uint64_t, std::unique_ptr<Peer>> peers_;
  std::deque<Message> queue_;
  std::set<std::pair<uint64_t, uint64_t>> dropped_;
  std::map<std::pair<uint64_t, uint64_t>, double> drop_rate_;
  std::set<MessageType> ignored_;
  bool auto_deliver_ = true;
  Rng rng_;
  InvariantChecker checker_;
  std::string violation_;
  uint64_t steps_ = 0;
  uint64_t delivered_ = 0;
};

}  // namespace engram::raft::testing
