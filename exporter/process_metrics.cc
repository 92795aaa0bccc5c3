#include "exporter/process_metrics.h"

#include <dirent.h>
#include <malloc.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

namespace engram::exporter {
namespace {

double BootTimeSeconds() {
  static const double boot = [] {
    std::ifstream f("/proc/stat");
    std::string key;
    double v = 0;
    while (f >> key) {
      if (key == "btime") {
        f >> v;
        break;
      }
      f.ignore(1 << 20, '\n');
    }
    return v;
  }();
  return boot;
}

double Limit(int resource, bool* unlimited) {
  struct rlimit rl;
  if (getrlimit(resource, &rl) != 0) return 0;
  *unlimited = rl.rlim_cur == RLIM_INFINITY;
  // Go reports RLIM_INFINITY as the uint64 max, printed 1.8446744073709552e+19.
  return rl.rlim_cur == RLIM_INFINITY ? 18446744073709551615.0 : static_cast<double>(rl.rlim_cur);
}

}  // namespace

ProcessStats ReadProcessStats() {
  ProcessStats s;
  static const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  static const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
  char buf[1024];
  FILE* f = std::fopen("/proc/self/stat", "re");
  if (f != nullptr) {
    size_t n = std::fread(buf, 1, sizeof(buf) - 1, f);
    std::fclose(f);
    buf[n] = '\0';
    // Fields after the command name (which may hold spaces and parentheses):
    // start after the last ')'. Field 3 (state) is the first after it.
    const char* p = std::strrchr(buf, ')');
    if (p != nullptr) {
      p += 2;
      // Fields 3..: state ppid pgrp session tty_nr tpgid flags minflt cminflt
      // majflt cmajflt utime(14) stime(15) cutime cstime priority nice
      // num_threads(20) itrealvalue starttime(22) vsize(23) rss(24)
      char state;
      long long ppid, pgrp, session, tty, tpgid;
      unsigned long long flags, minflt, cminflt, majflt, cmajflt, utime, stime;
      long long cutime, cstime, priority, nice, threads, itreal;
      unsigned long long starttime, vsize;
      long long rss;
      int got = std::sscanf(p,
                            "%c %lld %lld %lld %lld %lld %llu %llu %llu %llu %llu %llu %llu %lld %lld %lld %lld %lld "
                            "%lld %llu %llu %lld",
                            &state, &ppid, &pgrp, &session, &tty, &tpgid, &flags, &minflt, &cminflt, &majflt,
                            &cmajflt, &utime, &stime, &cutime, &cstime, &priority, &nice, &threads, &itreal,
                            &starttime, &vsize, &rss);
      if (got == 22) {
        s.ok = true;
        s.cpu_seconds = static_cast<double>(utime + stime) / ticks;
        s.threads = threads;
        s.start_time_seconds = BootTimeSeconds() + static_cast<double>(starttime) / ticks;
        s.virtual_memory_bytes = static_cast<double>(vsize);
        s.resident_memory_bytes = static_cast<double>(rss) * page;
      }
    }
  }
  if (DIR* d = opendir("/proc/self/fd")) {
    int n = 0;
    while (struct dirent* e = readdir(d)) {
      if (e->d_name[0] != '.') n++;
    }
    closedir(d);
    s.open_fds = n - 1;  // not the descriptor of this very listing
  }
  bool unlimited = false;
  s.max_fds = Limit(RLIMIT_NOFILE, &unlimited);
  s.virtual_memory_max_bytes = Limit(RLIMIT_AS, &unlimited);
  return s;
}

AllocatorStats ReadAllocatorStats() {
  AllocatorStats a;
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
  struct mallinfo2 mi = mallinfo2();
  a.ok = true;
  a.arena_bytes = static_cast<double>(mi.arena);
  a.mmap_bytes = static_cast<double>(mi.hblkhd);
  a.in_use_bytes = static_cast<double>(mi.uordblks + mi.hblkhd);
  a.free_bytes = static_cast<double>(mi.fordblks);
  a.resident_bytes = a.arena_bytes + a.mmap_bytes;
#endif
  return a;
}

}  // namespace engram::exporter
