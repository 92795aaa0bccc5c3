// Structured logging: one JSON object per line (zap's production layout, as
// etcd 3.5+ prints it), or capnslog-style text with --logger=capnslog.
//
//   LOG_INFO("published local member to cluster", {{"cluster-id", id_hex}});
//
// Thread-safe: a line is formatted on the caller's thread and written with one
// write(2) under a mutex, so lines from different threads never interleave.
// ENGRAM_PANIC logs at "panic" level and aborts: it is for broken invariants
// and unrecoverable disk faults, never for bad input.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

namespace engram::log {

enum class Level { kDebug = 0, kInfo, kWarn, kError, kPanic, kFatal };

// One field: a key and a value already rendered as JSON.
struct Field {
  std::string key;
  std::string json;
  Field(std::string k, std::string_view v);
  Field(std::string k, const char* v) : Field(std::move(k), std::string_view(v)) {}
  Field(std::string k, const std::string& v) : Field(std::move(k), std::string_view(v)) {}
  Field(std::string k, bool v);
  Field(std::string k, int v) : Field(std::move(k), static_cast<int64_t>(v), 0) {}
  Field(std::string k, long v) : Field(std::move(k), static_cast<int64_t>(v), 0) {}
  Field(std::string k, long long v) : Field(std::move(k), static_cast<int64_t>(v), 0) {}
  Field(std::string k, unsigned v) : Field(std::move(k), static_cast<uint64_t>(v), 0) {}
  Field(std::string k, unsigned long v) : Field(std::move(k), static_cast<uint64_t>(v), 0) {}
  Field(std::string k, unsigned long long v) : Field(std::move(k), static_cast<uint64_t>(v), 0) {}
  Field(std::string k, double v);
  Field(std::string k, const std::vector<std::string>& v);
  static Field Raw(std::string k, std::string json);

 private:
  Field(std::string k, int64_t v, int);
  Field(std::string k, uint64_t v, int);
  Field() = default;
};

enum class Format { kJson, kText };

// Configure once at start (before threads). level: debug|info|warn|error|panic|fatal.
bool SetLevel(std::string_view level);
void SetFormat(Format f);
// outputs: "stderr", "stdout", "default" (= stderr) or file paths. Returns false
// and fills err if a file cannot be opened.
bool SetOutputs(const std::vector<std::string>& outputs, std::string* err);
bool Enabled(Level l);

void Write(Level l, const char* file, int line, std::string_view msg,
           std::initializer_list<Field> fields = {});

// JSON string escaping (quotes included).
// html_safe: also escape <, > and & as \u003c, \u003e, \u0026, as Go's
// encoding/json does (the JSON gateway's error bodies).
std::string Quote(std::string_view s, bool html_safe = false);

}  // namespace engram::log

#define ENGRAM_LOG(lvl, msg, ...)                                                \
  do {                                                                           \
    if (::engram::log::Enabled(lvl))                                             \
      ::engram::log::Write(lvl, __FILE__, __LINE__, msg __VA_OPT__(, ) __VA_ARGS__); \
  } while (0)
#define LOG_DEBUG(msg, ...) ENGRAM_LOG(::engram::log::Level::kDebug, msg __VA_OPT__(, ) __VA_ARGS__)
#define LOG_INFO(msg, ...) ENGRAM_LOG(::engram::log::Level::kInfo, msg __VA_OPT__(, ) __VA_ARGS__)
#define LOG_WARN(msg, ...) ENGRAM_LOG(::engram::log::Level::kWarn, msg __VA_OPT__(, ) __VA_ARGS__)
#define LOG_ERROR(msg, ...) ENGRAM_LOG(::engram::log::Level::kError, msg __VA_OPT__(, ) __VA_ARGS__)
// Logs and exits(1): for startup errors such as a bad flag or a corrupt file.
#define LOG_FATAL(msg, ...)                                                                  \
  do {                                                                                       \
    ::engram::log::Write(::engram::log::Level::kFatal, __FILE__, __LINE__, msg __VA_OPT__(, ) __VA_ARGS__); \
    ::engram::log::ExitFatal();                                                              \
  } while (0)
#define ENGRAM_PANIC(msg, ...)                                                               \
  do {                                                                                       \
    ::engram::log::Write(::engram::log::Level::kPanic, __FILE__, __LINE__, msg __VA_OPT__(, ) __VA_ARGS__); \
    ::abort();                                                                               \
  } while (0)
#define ENGRAM_CHECK(cond, msg)                                                   \
  do {                                                                            \
    if (!(cond)) ENGRAM_PANIC(msg, {{"check", #cond}});                           \
  } while (0)

namespace engram::log {
[[noreturn]] void ExitFatal();
}
