#include "src/common/status.h"

#include <cstring>

namespace engram {

Status Status::Errno(const std::string& what, const std::string& path, int err) {
  return Status(Code::kIOError, what + " " + path + ": " + std::strerror(err));
}

std::string Status::ToString() const {
  static const char* kNames[] = {"OK",          "InvalidArgument",   "NotFound",     "OutOfRange",
                                 "FailedPrecondition", "ResourceExhausted", "Unavailable", "Corruption",
                                 "IOError",     "Aborted",           "Unimplemented", "Internal",
                                 "Cancelled",   "DeadlineExceeded",  "DataLoss"};
  std::string s = kNames[static_cast<int>(code_)];
  if (!msg_.empty()) s += ": " + msg_;
  return s;
}

}  // namespace engram
