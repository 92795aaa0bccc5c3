#include "src/kv/id_gen.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "src/common/log.h"

namespace engram::kv {
namespace {

constexpr const char* kMagic = "engram-proposal-ids v1 ";

Status WriteAll(int fd, const std::string& s, const std::string& path) {
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = ::write(fd, s.data() + off, s.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::Errno("write", path, errno);
    off += static_cast<size_t>(n);
  }
  return Status::OK();
}

}  // namespace

IdGenerator::IdGenerator(std::string path, uint64_t prefix, uint64_t start)
    : path_(std::move(path)), prefix_(prefix), counter_(start) {}

Result<std::unique_ptr<IdGenerator>> IdGenerator::Open(const std::string& path, uint64_t member_id) {
  uint64_t start = 0;
  std::error_code ec;
  if (std::filesystem::exists(path, ec)) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string text = ss.str();
    const std::string magic = kMagic;
    bool ok = text.size() > magic.size() + 1 && text.compare(0, magic.size(), magic) == 0 && text.back() == '\n';
    if (ok) {
      const std::string num = text.substr(magic.size(), text.size() - magic.size() - 1);
      ok = !num.empty() && num.size() <= 15 && num.find_first_not_of("0123456789") == std::string::npos;
      if (ok) start = std::stoull(num);
    }
    if (!ok || start > kCounterMask) {
      return Status::Corruption("the proposal id file " + path +
                                " is damaged; stop every client, remove the file and start again (ids then restart "
                                "from 0, which is safe once the WAL holds no unapplied entries: after a clean stop)");
    }
  }
  std::unique_ptr<IdGenerator> g(new IdGenerator(path, (member_id & 0xffff) << 48, start));
  ENGRAM_RETURN_IF_ERROR(g->Reserve(start + kBlock));
  return g;
}

Status IdGenerator::Reserve(uint64_t limit) {
  const std::string tmp = path_ + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Status::Errno("open", tmp, errno);
  Status s = WriteAll(fd, kMagic + std::to_string(limit) + "\n", tmp);
  if (s.ok() && ::fdatasync(fd) != 0) s = Status::Errno("fdatasync", tmp, errno);
  ::close(fd);
  if (s.ok() && ::rename(tmp.c_str(), path_.c_str()) != 0) s = Status::Errno("rename", path_, errno);
  if (s.ok()) {
    const std::string dir = std::filesystem::path(path_).parent_path().string();
    int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return Status::Errno("open", dir, errno);
    if (::fsync(dfd) != 0) s = Status::Errno("fsync", dir, errno);
    ::close(dfd);
  }
  if (s.ok()) limit_.store(limit, std::memory_order_release);
  return s;
}

uint64_t IdGenerator::Next() {
  const uint64_t c = counter_.fetch_add(1, std::memory_order_relaxed);
  if (c >= limit_.load(std::memory_order_acquire)) {
    std::lock_guard<std::mutex> lk(reserve_mu_);
    while (c >= limit_.load(std::memory_order_acquire)) {
      Status s = Reserve(limit_.load() + kBlock);
      // The WAL's disk refused a small write + fsync: as a failed WAL fsync.
      if (!s.ok()) ENGRAM_PANIC("failed to reserve proposal ids", {{"path", path_}, {"error", s.ToString()}});
    }
  }
  return prefix_ | (c & kCounterMask);
}

}  // namespace engram::kv
