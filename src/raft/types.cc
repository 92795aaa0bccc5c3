#include "src/raft/types.h"

#include "src/common/coding.h"

namespace engram::raft {

namespace {
constexpr char kConfChangeVersion = 1;
constexpr size_t kConfChangeHeader = 1 + 1 + 8;
}  // namespace

std::string EncodeConfChange(const ConfChange& cc) {
  std::string out;
  out.reserve(kConfChangeHeader + cc.context.size());
  out.push_back(kConfChangeVersion);
  out.push_back(static_cast<char>(cc.type));
  PutFixed64(&out, cc.node_id);
  out.append(cc.context);
  return out;
}

Result<ConfChange> DecodeConfChange(std::string_view data) {
  if (data.size() < kConfChangeHeader) return Status::Corruption("raft: conf change entry too short");
  if (data[0] != kConfChangeVersion) return Status::Corruption("raft: unknown conf change encoding version");
  ConfChange cc;
  auto type = static_cast<uint8_t>(data[1]);
  switch (type) {
    case static_cast<uint8_t>(ConfChangeType::kAddNode):
    case static_cast<uint8_t>(ConfChangeType::kRemoveNode):
    case static_cast<uint8_t>(ConfChangeType::kAddLearnerNode):
      cc.type = static_cast<ConfChangeType>(type);
      break;
    default:
      return Status::Corruption("raft: unknown conf change type " + std::to_string(type));
  }
  cc.node_id = DecodeFixed64(data.data() + 2);
  cc.context.assign(data.substr(kConfChangeHeader));
  return cc;
}

}  // namespace engram::raft
