// Process-level numbers for the process_* families (what Go's
// client_golang process collector exports, read the same way from /proc)
// and Engram's own allocator and thread gauges. Linux only.
#pragma once

#include <cstdint>

namespace engram::exporter {

struct ProcessStats {
  bool ok = false;                 // /proc/self/stat was readable
  double cpu_seconds = 0;          // utime + stime
  double open_fds = 0;             // entries of /proc/self/fd
  double max_fds = 0;              // RLIMIT_NOFILE soft limit
  double virtual_memory_bytes = 0; // vsize
  double virtual_memory_max_bytes = 0;  // RLIMIT_AS soft limit; unlimited = 2^64 - 1 (as Go shows it)
  double resident_memory_bytes = 0;     // rss pages x page size
  double start_time_seconds = 0;        // unix time: boot time + starttime / CLK_TCK
  int64_t threads = 0;                  // num_threads
};

// Reads /proc/self/stat, /proc/self/fd and the rlimits (a few syscalls; no locks).
ProcessStats ReadProcessStats();

// glibc malloc's view (mallinfo2, summed over all arenas).
struct AllocatorStats {
  bool ok = false;
  double arena_bytes = 0;   // obtained with brk/mmap for the arenas (system_mem)
  double mmap_bytes = 0;    // large blocks served by their own mmap
  double in_use_bytes = 0;  // handed out to the program (incl. mmapped blocks)
  double free_bytes = 0;    // held by the allocator but free
  double resident_bytes = 0;  // arena + mmap: what malloc holds from the OS
};

// mallinfo2 walks each arena's free lists under that arena's lock: usually
// microseconds, proportional to the number of free chunks.
AllocatorStats ReadAllocatorStats();

}  // namespace engram::exporter
