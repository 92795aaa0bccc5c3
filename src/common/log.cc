#include "src/common/log.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <mutex>

namespace engram::log {
namespace {

std::atomic<int> g_level{static_cast<int>(Level::kInfo)};
Format g_format = Format::kJson;
std::vector<int> g_fds = {2};
std::mutex g_mu;

const char* LevelName(Level l) {
  switch (l) {
    case Level::kDebug: return "debug";
    case Level::kInfo: return "info";
    case Level::kWarn: return "warn";
    case Level::kError: return "error";
    case Level::kPanic: return "panic";
    case Level::kFatal: return "fatal";
  }
  return "info";
}
char LevelLetter(Level l) { return "DIWEPF"[static_cast<int>(l)]; }

// "src/wal/wal.cc" -> "wal/wal.cc" (zap prints package/file.go:line).
std::string_view ShortFile(const char* file) {
  std::string_view f(file);
  size_t last = f.rfind('/');
  if (last == std::string_view::npos) return f;
  size_t prev = f.rfind('/', last - 1);
  return prev == std::string_view::npos ? f : f.substr(prev + 1);
}

void WriteAll(int fd, const std::string& s) {
  const char* p = s.data();
  size_t n = s.size();
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return;
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
}

}  // namespace

std::string Quote(std::string_view s, bool html_safe) {
  std::string out;
  out.reserve(s.size() + 2);
  out.push_back('"');
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '<':
      case '>':
      case '&':
        if (html_safe) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out.push_back(static_cast<char>(c));
        }
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
  }
  out.push_back('"');
  return out;
}

Field::Field(std::string k, std::string_view v) : key(std::move(k)), json(Quote(v)) {}
Field::Field(std::string k, bool v) : key(std::move(k)), json(v ? "true" : "false") {}
Field::Field(std::string k, int64_t v, int) : key(std::move(k)), json(std::to_string(v)) {}
Field::Field(std::string k, uint64_t v, int) : key(std::move(k)), json(std::to_string(v)) {}
Field::Field(std::string k, double v) : key(std::move(k)) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  json = buf;
}
Field::Field(std::string k, const std::vector<std::string>& v) : key(std::move(k)) {
  json = "[";
  for (size_t i = 0; i < v.size(); i++) {
    if (i) json += ",";
    json += Quote(v[i]);
  }
  json += "]";
}
Field Field::Raw(std::string k, std::string j) {
  Field f;
  f.key = std::move(k);
  f.json = std::move(j);
  return f;
}

bool SetLevel(std::string_view level) {
  static const char* names[] = {"debug", "info", "warn", "error", "panic", "fatal"};
  for (int i = 0; i < 6; i++) {
    if (level == names[i]) {
      g_level = i;
      return true;
    }
  }
  return false;
}
void SetFormat(Format f) { g_format = f; }

bool SetOutputs(const std::vector<std::string>& outputs, std::string* err) {
  std::vector<int> fds;
  for (const auto& o : outputs) {
    if (o == "stderr" || o == "default") {
      fds.push_back(2);
    } else if (o == "stdout") {
      fds.push_back(1);
    } else {
      int fd = ::open(o.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
      if (fd < 0) {
        *err = "cannot open log output " + o + ": " + std::strerror(errno);
        return false;
      }
      fds.push_back(fd);
    }
  }
  if (fds.empty()) fds.push_back(2);
  std::lock_guard<std::mutex> lk(g_mu);
  g_fds = fds;
  return true;
}

bool Enabled(Level l) { return static_cast<int>(l) >= g_level.load(std::memory_order_relaxed); }

void Write(Level l, const char* file, int line, std::string_view msg,
           std::initializer_list<Field> fields) {
  auto now = std::chrono::system_clock::now();
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()).count();
  time_t secs = static_cast<time_t>(us / 1000000);
  struct tm tm;
  gmtime_r(&secs, &tm);
  char ts[64];
  std::string out;
  out.reserve(160 + msg.size());
  if (g_format == Format::kJson) {
    std::snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ", tm.tm_year + 1900,
                  tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                  static_cast<long>(us % 1000000));
    out += "{\"level\":\"";
    out += LevelName(l);
    out += "\",\"ts\":\"";
    out += ts;
    out += "\",\"caller\":\"";
    out += ShortFile(file);
    out += ":";
    out += std::to_string(line);
    out += "\",\"msg\":";
    out += Quote(msg);
    for (const auto& f : fields) {
      out += ",";
      out += Quote(f.key);
      out += ":";
      out += f.json;
    }
    out += "}\n";
  } else {
    std::snprintf(ts, sizeof ts, "%04d-%02d-%02d %02d:%02d:%02d.%06ld", tm.tm_year + 1900,
                  tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                  static_cast<long>(us % 1000000));
    out += ts;
    out += " ";
    out.push_back(LevelLetter(l));
    out += " | ";
    out += msg;
    for (const auto& f : fields) {
      out += " ";
      out += f.key;
      out += "=";
      out += f.json;
    }
    out += "\n";
  }
  std::lock_guard<std::mutex> lk(g_mu);
  for (int fd : g_fds) WriteAll(fd, out);
}

void ExitFatal() { std::_Exit(1); }

}  // namespace engram::log
