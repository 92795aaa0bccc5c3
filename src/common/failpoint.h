// Named failpoints for fault-injection tests (after ClickHouse's FailPoint and
// etcd's gofail). Compiled in only when ENGRAM_FAILPOINTS is defined (test
// builds, the default here); otherwise FAILPOINT() is a constant false.
//
// Enable at start with the environment variable
//   ENGRAM_FAILPOINTS="wal-before-fsync=sleep(200);apply-before-commit=panic"
// or at run time with failpoint::Set(). Actions:
//   sleep(N)   sleep N milliseconds, then continue
//   panic      abort() the process (a crash at exactly that point)
//   error      FAILPOINT() returns true: the caller injects its own error
//   off        disabled
// Failpoint names used in the tree are listed in docs/failpoints.md.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace engram::failpoint {

// Returns true when the failpoint's action is "error". Sleeps or aborts for the
// other actions. Cheap (one relaxed atomic load) when no failpoint is set.
bool Eval(std::string_view name);
// Sets (or with action "off", clears) a failpoint. Returns false on a bad action.
bool Set(const std::string& name, const std::string& action);
// How many times the failpoint's action was taken (a sleep started, say)
// since it was last set; 0 when it is not set.
uint64_t Triggered(std::string_view name);
// Parses ENGRAM_FAILPOINTS; called once at start by main and test mains.
bool LoadFromEnv(std::string* err);

}  // namespace engram::failpoint

#ifdef ENGRAM_FAILPOINTS
#define FAILPOINT(name) ::engram::failpoint::Eval(name)
#else
#define FAILPOINT(name) false
#endif
