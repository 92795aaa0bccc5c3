// Status: expected failures as values (after LevelDB's Status and Redpanda's errc).
//
// Core modules (src/) return Status or Result<T> for anything that can go wrong
// because of input, disk or peers. Broken invariants are not statuses: they call
// ENGRAM_PANIC (src/common/log.h) and stop the process loudly.
//
// Codes are Engram's own. server/ maps them to gRPC codes and etcd's error
// strings; the message is carried through unchanged, so for client-visible
// errors the core writes etcd's exact words (e.g. "etcdserver: key not found").
#pragma once

#include <string>
#include <utility>
#include <variant>

namespace engram {

enum class Code : int {
  kOk = 0,
  kInvalidArgument,     // bad request: empty key, too many ops, duplicate key...
  kNotFound,            // lease not found, member not found
  kOutOfRange,          // compacted / future revision
  kFailedPrecondition,  // not leader, not capable...
  kResourceExhausted,   // quota (NOSPACE), too many requests
  kUnavailable,         // stopping, timed out, no leader
  kCorruption,          // a file on disk is damaged
  kIOError,             // a system call failed
  kAborted,             // operation gave up (e.g. server shutting down)
  kUnimplemented,
  kInternal,
  kCancelled,
  kDeadlineExceeded,
  kDataLoss,
  kUnknown,             // a plain error of etcd's (gRPC Unknown), e.g. "election: not leader"
};

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Code code, std::string msg) : code_(code), msg_(std::move(msg)) {}

  static Status OK() { return Status(); }
  static Status InvalidArgument(std::string m) { return {Code::kInvalidArgument, std::move(m)}; }
  static Status NotFound(std::string m) { return {Code::kNotFound, std::move(m)}; }
  static Status OutOfRange(std::string m) { return {Code::kOutOfRange, std::move(m)}; }
  static Status FailedPrecondition(std::string m) { return {Code::kFailedPrecondition, std::move(m)}; }
  static Status ResourceExhausted(std::string m) { return {Code::kResourceExhausted, std::move(m)}; }
  static Status Unavailable(std::string m) { return {Code::kUnavailable, std::move(m)}; }
  static Status Corruption(std::string m) { return {Code::kCorruption, std::move(m)}; }
  static Status IOError(std::string m) { return {Code::kIOError, std::move(m)}; }
  static Status Aborted(std::string m) { return {Code::kAborted, std::move(m)}; }
  static Status Unimplemented(std::string m) { return {Code::kUnimplemented, std::move(m)}; }
  static Status Internal(std::string m) { return {Code::kInternal, std::move(m)}; }
  static Status Cancelled(std::string m) { return {Code::kCancelled, std::move(m)}; }
  static Status Unknown(std::string m) { return {Code::kUnknown, std::move(m)}; }
  // IOError from errno, e.g. Status::Errno("fdatasync", path, errno).
  static Status Errno(const std::string& what, const std::string& path, int err);

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return msg_; }
  std::string ToString() const;

  bool operator==(const Status& o) const { return code_ == o.code_ && msg_ == o.msg_; }

 private:
  Code code_ = Code::kOk;
  std::string msg_;
};

// Result<T>: a value or a non-OK Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T v) : v_(std::move(v)) {}                       // NOLINT: implicit on purpose
  Result(Status s) : v_(std::move(s)) {}                  // NOLINT
  bool ok() const { return v_.index() == 0; }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<1>(v_);
  }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }

 private:
  std::variant<T, Status> v_;
};

#define ENGRAM_RETURN_IF_ERROR(expr)        \
  do {                                      \
    ::engram::Status _st = (expr);          \
    if (!_st.ok()) return _st;              \
  } while (0)

}  // namespace engram
