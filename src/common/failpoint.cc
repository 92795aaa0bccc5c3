#include "src/common/failpoint.h"

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <map>
#include <mutex>
#include <thread>

#include "src/common/log.h"

namespace engram::failpoint {
namespace {

struct Action {
  enum Kind { kSleep, kPanic, kError } kind;
  int ms = 0;
  uint64_t triggered = 0;  // times taken since Set
};

std::atomic<int> g_count{0};
std::mutex g_mu;
std::map<std::string, Action, std::less<>>& Table() {
  static auto* t = new std::map<std::string, Action, std::less<>>();
  return *t;
}

bool Parse(const std::string& s, Action* a) {
  if (s == "panic") {
    a->kind = Action::kPanic;
    return true;
  }
  if (s == "error") {
    a->kind = Action::kError;
    return true;
  }
  if (s.rfind("sleep(", 0) == 0 && s.back() == ')') {
    a->kind = Action::kSleep;
    a->ms = std::atoi(s.substr(6, s.size() - 7).c_str());
    return a->ms >= 0;
  }
  return false;
}

}  // namespace

bool Eval(std::string_view name) {
  if (g_count.load(std::memory_order_relaxed) == 0) return false;
  Action a;
  {
    std::lock_guard<std::mutex> lk(g_mu);
    auto it = Table().find(name);
    if (it == Table().end()) return false;
    it->second.triggered++;
    a = it->second;
  }
  switch (a.kind) {
    case Action::kSleep:
      std::this_thread::sleep_for(std::chrono::milliseconds(a.ms));
      return false;
    case Action::kPanic:
      LOG_ERROR("failpoint triggered panic", {{"failpoint", name}});
      ::abort();
    case Action::kError:
      return true;
  }
  return false;
}

uint64_t Triggered(std::string_view name) {
  std::lock_guard<std::mutex> lk(g_mu);
  auto it = Table().find(name);
  return it == Table().end() ? 0 : it->second.triggered;
}

bool Set(const std::string& name, const std::string& action) {
  std::lock_guard<std::mutex> lk(g_mu);
  if (action == "off" || action.empty()) {
    Table().erase(name);
  } else {
    Action a;
    if (!Parse(action, &a)) return false;
    Table()[name] = a;
  }
  g_count = static_cast<int>(Table().size());
  return true;
}

bool LoadFromEnv(std::string* err) {
  const char* env = std::getenv("ENGRAM_FAILPOINTS");
  if (!env || !*env) return true;
  std::string s(env);
  size_t pos = 0;
  while (pos <= s.size()) {
    size_t end = s.find(';', pos);
    if (end == std::string::npos) end = s.size();
    std::string item = s.substr(pos, end - pos);
    pos = end + 1;
    if (item.empty()) continue;
    size_t eq = item.find('=');
    if (eq == std::string::npos || !Set(item.substr(0, eq), item.substr(eq + 1))) {
      *err = "bad ENGRAM_FAILPOINTS entry: " + item;
      return false;
    }
    LOG_WARN("failpoint enabled", {{"failpoint", item.substr(0, eq)}, {"action", item.substr(eq + 1)}});
  }
  return true;
}

}  // namespace engram::failpoint
