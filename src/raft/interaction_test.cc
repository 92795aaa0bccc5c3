// Scenario scripts with golden output (after etcd-io/raft's interaction_test.go
// and its testdata/*.txt). Each file in src/raft/testdata is a list of blocks:
//
//   # comment lines
//   command args...
//   ----
//   expected output (no blank lines)
//   <blank line>
//
// Run `raft_test --rewrite` (or ENGRAM_REWRITE=1) to regenerate the expected
// output from the code, then review the diff: the golden files are the
// readable record of every message, persisted state and applied entry.
//
// Commands:
//   nodes N [pre-vote] [check-quorum]   a fresh cluster of voters 1..N
//   campaign ID | propose ID DATA | read-index ID CTX | transfer-leader ID TO
//   tick ID [N]                         logical time (nothing is processed)
//   stabilize                           handle Readies and deliver messages until quiet
//   isolate ID | cut A B | recover      network faults (applied when messages are sent)
//   restart ID                          crash and restart from persisted state
//   status                              id, state, term, lead, commit, applied per node
//   log ID                              the node's persisted log and hard state
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "src/raft/raft_test_util.h"

namespace engram::raft {
namespace {

using testing::Peer;

std::string FormatEntry(const Entry& e) {
  std::ostringstream o;
  o << e.term << "/" << e.index << " " << (e.type == EntryType::kConfChange ? "EntryConfChange" : "EntryNormal")
    << " \"" << e.data << "\"";
  return o.str();
}

std::string FormatMessage(const Message& m) {
  std::ostringstream o;
  o << m.from << "->" << m.to << " " << MessageTypeName(m.type) << " Term:" << m.term;
  switch (m.type) {
    case MessageType::kApp:
      o << " Log:" << m.log_term << "/" << m.index << " Commit:" << m.commit;
      if (!m.entries.empty()) {
        o << " Entries:[";
        for (size_t i = 0; i < m.entries.size(); i++) o << (i ? ", " : "") << FormatEntry(m.entries[i]);
        o << "]";
      }
      break;
    case MessageType::kAppResp:
      o << " Index:" << m.index;
      if (m.reject) o << " Rejected (Hint: " << m.reject_hint << "/" << m.log_term << ")";
      break;
    case MessageType::kVote:
    case MessageType::kPreVote:
      o << " Log:" << m.log_term << "/" << m.index;
      break;
    case MessageType::kVoteResp:
    case MessageType::kPreVoteResp:
      if (m.reject) o << " Rejected";
      break;
    case MessageType::kHeartbeat:
      o << " Commit:" << m.commit;
      break;
    case MessageType::kReadIndexResp:
      o << " Index:" << m.index;
      break;
    default:
      break;
  }
  if (!m.context.empty()) o << " Context:" << m.context;
  return o.str();
}

class Interaction {
 public:
  std::string Run(const std::string& cmd, const std::vector<std::string>& args) {
    out_.str("");
    auto id = [&](size_t i) { return static_cast<uint64_t>(std::stoull(args.at(i))); };
    if (cmd == "nodes") {
      const uint64_t n = std::stoull(args.at(0));
      std::vector<uint64_t> ids;
      for (uint64_t i = 1; i <= n; i++) ids.push_back(i);
      bool pre_vote = false, check_quorum = false;
      for (size_t i = 1; i < args.size(); i++) {
        pre_vote |= args[i] == "pre-vote";
        check_quorum |= args[i] == "check-quorum";
      }
      for (uint64_t i : ids) {
        auto p = std::make_unique<Peer>();
        p->id = i;
        p->storage = std::make_unique<MemoryStorage>();
        p->config = testing::MakeConfig(i, ids, p->storage.get(), 1);
        p->config.pre_vote = pre_vote;
        p->config.check_quorum = check_quorum;
        // Deterministic and readable: node i times out after 10 + i ticks.
        p->config.rand = [i] { return i; };
        p->node = std::move(RawNode::Create(p->config)).value();
        peers_[i] = std::move(p);
      }
      out_ << "ok";
    } else if (cmd == "campaign") {
      Result(node(id(0)).Campaign());
    } else if (cmd == "propose") {
      Result(node(id(0)).Propose(args.at(1)));
    } else if (cmd == "read-index") {
      node(id(0)).ReadIndex(args.at(1));
      out_ << "ok";
    } else if (cmd == "transfer-leader") {
      node(id(0)).TransferLeader(id(1));
      out_ << "ok";
    } else if (cmd == "tick") {
      const int n = args.size() > 1 ? std::stoi(args[1]) : 1;
      for (int i = 0; i < n; i++) node(id(0)).Tick();
      out_ << "ok";
    } else if (cmd == "stabilize") {
      Stabilize();
    } else if (cmd == "isolate") {
      for (const auto& [other, p] : peers_) {
        if (other != id(0)) Cut(id(0), other);
      }
      out_ << "ok";
    } else if (cmd == "cut") {
      Cut(id(0), id(1));
      out_ << "ok";
    } else if (cmd == "recover") {
      cut_.clear();
      out_ << "ok";
    } else if (cmd == "restart") {
      peers_.at(id(0))->Restart();
      out_ << "ok";
    } else if (cmd == "status") {
      for (const auto& [i, p] : peers_) {
        auto st = p->node->Status();
        out_ << i << ": " << StateTypeName(st.state) << " term=" << st.term << " lead=" << st.lead
             << " commit=" << st.commit << " applied=" << st.applied << "\n";
      }
    } else if (cmd == "log") {
      const MemoryStorage& s = *peers_.at(id(0))->storage;
      const HardState hs = s.hard_state();
      out_ << "HardState term=" << hs.term << " vote=" << hs.vote << " commit=" << hs.commit << "\n";
      if (s.LastIndex() >= s.FirstIndex()) {
        auto ents = s.Entries(s.FirstIndex(), s.LastIndex() + 1, kNoLimit);
        EXPECT_TRUE(ents.ok());
        if (ents.ok()) {
          for (const Entry& e : *ents) out_ << FormatEntry(e) << "\n";
        }
      }
    } else {
      out_ << "unknown command " << cmd;
    }
    std::string s = out_.str();
    while (!s.empty() && s.back() == '\n') s.pop_back();
    return s.empty() ? "ok" : s;
  }

 private:
  RawNode& node(uint64_t id) { return *peers_.at(id)->node; }
  void Result(const Status& s) { out_ << (s.ok() ? "ok" : s.ToString()); }
  void Cut(uint64_t a, uint64_t b) {
    cut_.insert({a, b});
    cut_.insert({b, a});
  }

  void HandleReady(Peer& p) {
    Ready rd = p.node->GetReady();
    out_ << "> " << p.id << " handling Ready\n";
    if (rd.soft_state) {
      out_ << "  Lead:" << rd.soft_state->lead << " State:" << StateTypeName(rd.soft_state->state) << "\n";
    }
    if (!rd.hard_state.Empty()) {
      out_ << "  HardState Term:" << rd.hard_state.term << " Vote:" << rd.hard_state.vote
           << " Commit:" << rd.hard_state.commit << (rd.must_sync ? "" : " (no sync)") << "\n";
    }
    if (!rd.entries.empty()) {
      out_ << "  Entries:\n";
      for (const Entry& e : rd.entries) out_ << "  " << FormatEntry(e) << "\n";
    }
    if (!rd.committed_entries.empty()) {
      out_ << "  CommittedEntries:\n";
      for (const Entry& e : rd.committed_entries) out_ << "  " << FormatEntry(e) << "\n";
    }
    if (!rd.messages.empty()) {
      out_ << "  Messages:\n";
      for (const Message& m : rd.messages) out_ << "  " << FormatMessage(m) << "\n";
    }
    for (const ReadState& r : rd.read_states) {
      out_ << "  ReadState Index:" << r.index << " Ctx:" << r.request_ctx << "\n";
    }
    EXPECT_TRUE(p.storage->Append(rd.entries).ok());
    if (!rd.hard_state.Empty()) p.storage->SetHardState(rd.hard_state);
    for (const Entry& e : rd.committed_entries) p.applied.push_back(e);
    for (const Message& m : rd.messages) {
      if (cut_.count({m.from, m.to}) != 0) {
        out_ << "  dropped: " << FormatMessage(m) << "\n";
      } else {
        inbox_[m.to].push_back(m);
      }
    }
    p.node->Advance(rd);
  }

  void Stabilize() {
    for (bool busy = true; busy;) {
      busy = false;
      for (auto& [id, p] : peers_) {
        while (p->node->HasReady()) {
          HandleReady(*p);
          busy = true;
        }
      }
      for (auto& [id, p] : peers_) {
        std::vector<Message> msgs = std::move(inbox_[id]);
        inbox_[id].clear();
        if (msgs.empty()) continue;
        busy = true;
        out_ << "> " << id << " receiving messages\n";
        for (const Message& m : msgs) {
          out_ << "  " << FormatMessage(m) << "\n";
          Status s = p->node->Step(m);
          if (!s.ok()) out_ << "  -> " << s.ToString() << "\n";
        }
      }
    }
  }

  std::map<uint64_t, std::unique_ptr<Peer>> peers_;
  std::map<uint64_t, std::vector<Message>> inbox_;
  std::set<std::pair<uint64_t, uint64_t>> cut_;
  std::ostringstream out_;
};

bool Rewrite() {
  if (const char* e = std::getenv("ENGRAM_REWRITE"); e != nullptr && std::string(e) == "1") return true;
  for (const std::string& a : ::testing::internal::GetArgvs()) {
    if (a == "--rewrite") return true;
  }
  return false;
}

std::filesystem::path TestdataDir() { return std::filesystem::path(__FILE__).parent_path() / "testdata"; }

std::vector<std::string> Split(const std::string& line) {
  std::istringstream in(line);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

class InteractionTest : public ::testing::TestWithParam<std::string> {};

TEST_P(InteractionTest, Script) {
  testing::QuietLogs();
  const std::filesystem::path path = TestdataDir() / GetParam();
  std::ifstream in(path);
  ASSERT_TRUE(in.good()) << path;
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);

  Interaction it;
  std::ostringstream rewritten;
  size_t i = 0;
  while (i < lines.size()) {
    const std::string& line = lines[i];
    if (line.empty() || line[0] == '#') {
      rewritten << line << "\n";
      i++;
      continue;
    }
    const std::string command = line;
    ASSERT_LT(i + 1, lines.size()) << path << ":" << i + 1 << ": missing ----";
    ASSERT_EQ(lines[i + 1], "----") << path << ":" << i + 2;
    i += 2;
    std::string expected;
    while (i < lines.size() && !lines[i].empty()) expected += (expected.empty() ? "" : "\n") + lines[i++];
    std::vector<std::string> words = Split(command);
    std::string got = it.Run(words[0], std::vector<std::string>(words.begin() + 1, words.end()));
    rewritten << command << "\n----\n" << got << "\n";
    if (!Rewrite()) {
      EXPECT_EQ(got, expected) << path << ": " << command;
    }
  }
  if (Rewrite()) {
    std::string text = rewritten.str();
    while (text.size() > 1 && text[text.size() - 1] == '\n' && text[text.size() - 2] == '\n') text.pop_back();
    std::ofstream(path) << text;
  }
}

std::vector<std::string> Scripts() {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(TestdataDir())) {
    if (e.path().extension() == ".txt") out.push_back(e.path().filename().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

INSTANTIATE_TEST_SUITE_P(Testdata, InteractionTest, ::testing::ValuesIn(Scripts()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string n = info.param.substr(0, info.param.size() - 4);
                           for (char& c : n) {
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           }
                           return n;
                         });

}  // namespace
}  // namespace engram::raft
