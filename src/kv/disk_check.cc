#include "src/kv/disk_check.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <vector>

namespace engram::kv {

Result<DiskCheckResult> MeasureFsyncLatency(const std::string& dir, int samples, int budget_ms) {
  using Clock = std::chrono::steady_clock;
  constexpr size_t kBlock = 4096;
  samples = std::max(1, samples);
  std::string path = dir + "/.engram-fsync-check.tmp";
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Status::Errno("open", path, errno);
  struct Closer {
    int fd;
    std::string path;
    ~Closer() {
      ::close(fd);
      ::unlink(path.c_str());
    }
  } closer{fd, path};

  const off_t size = static_cast<off_t>(kBlock) * samples;
  int rc = ::posix_fallocate(fd, 0, size);
  if (rc != 0 && ::ftruncate(fd, size) != 0) return Status::Errno("preallocate", path, rc ? rc : errno);
  if (::fsync(fd) != 0) return Status::Errno("fsync", path, errno);

  std::vector<char> block(kBlock, 'e');
  std::vector<double> took;
  took.reserve(samples);
  const auto deadline = Clock::now() + std::chrono::milliseconds(budget_ms);
  for (int i = 0; i < samples; i++) {
    if (i >= 3 && Clock::now() >= deadline) break;
    auto t0 = Clock::now();
    if (::pwrite(fd, block.data(), kBlock, static_cast<off_t>(kBlock) * i) != static_cast<ssize_t>(kBlock))
      return Status::Errno("write", path, errno);
    if (::fdatasync(fd) != 0) return Status::Errno("fdatasync", path, errno);
    took.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  DiskCheckResult r;
  r.samples = static_cast<int>(took.size());
  for (double t : took) r.total_seconds += t;
  std::sort(took.begin(), took.end());
  // Nearest-rank percentiles.
  auto rank = [&](double q) {
    size_t i = static_cast<size_t>(std::ceil(q * took.size()));
    return took[std::min(took.size() - 1, i == 0 ? 0 : i - 1)];
  };
  r.p50_seconds = rank(0.50);
  r.p99_seconds = rank(0.99);
  r.max_seconds = took.back();
  return r;
}

}  // namespace engram::kv
