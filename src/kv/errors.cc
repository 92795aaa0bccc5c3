#include "src/kv/errors.h"

namespace engram::kv::errors {

Status FromMvcc(const Status& s) {
  if (s.ok()) return s;
  if (s.message().rfind("mvcc: required revision has been compacted", 0) == 0) return Compacted();
  if (s.message().rfind("mvcc: required revision is a future revision", 0) == 0) return FutureRev();
  if (s.message().rfind("etcdserver: ", 0) == 0) return s;
  return Status(s.code(), "etcdserver: " + s.message());
}

}  // namespace engram::kv::errors
