#include "src/kv/compactor.h"

#include <algorithm>
#include <cctype>

#include "src/common/log.h"

namespace engram::kv {

using std::chrono::milliseconds;

PeriodicPolicy::PeriodicPolicy(milliseconds period, CompactClock::time_point start)
    : period_(period), last_success_(start) {
  compact_interval_ = std::min<milliseconds>(period_, std::chrono::hours(1));
  retry_ = std::max<milliseconds>(milliseconds(1), compact_interval_ / 10);
  retentions_ = static_cast<size_t>(period_ / retry_) + 1;
  base_interval_ = period_;
}

void PeriodicPolicy::Record(int64_t rev) {
  revs_.push_back(rev);
  if (revs_.size() > retentions_) revs_.pop_front();  // revs_[0] is the revision of one period ago
}

std::optional<int64_t> PeriodicPolicy::Due(CompactClock::time_point now) {
  if (revs_.empty() || now - last_success_ < base_interval_) return std::nullopt;
  if (base_interval_ == period_) base_interval_ = compact_interval_;
  return revs_.front();
}

void PeriodicPolicy::OnResult(CompactClock::time_point now, bool ok) {
  if (ok) last_success_ = now;
}

std::optional<int64_t> RevisionPolicy::OnTick(int64_t rev) const {
  int64_t target = rev - retention_;
  if (target <= 0 || target == prev_) return std::nullopt;
  return target;
}

Result<CompactionSpec> ParseCompaction(const std::string& mode, const std::string& retention) {
  CompactionSpec s;
  s.mode = mode;
  if (retention.empty() || retention == "0") return s;
  bool digits = std::all_of(retention.begin(), retention.end(), ::isdigit);
  if (mode == "revision") {
    if (!digits) return Status::InvalidArgument("invalid auto-compaction-retention \"" + retention + "\" for mode revision");
    s.revisions = std::stoll(retention);
    return s;
  }
  if (mode != "periodic") return Status::InvalidArgument("unknown auto-compaction-mode \"" + mode + "\"");
  if (digits) {
    s.period = std::chrono::hours(std::stoll(retention));
    return s;
  }
  // Go duration: <number><unit>...
  double ms = 0;
  size_t i = 0;
  while (i < retention.size()) {
    size_t j = i;
    while (j < retention.size() && (std::isdigit(retention[j]) || retention[j] == '.')) j++;
    size_t k = j;
    while (k < retention.size() && std::isalpha(static_cast<unsigned char>(retention[k]))) k++;
    if (j == i || k == j) return Status::InvalidArgument("invalid auto-compaction-retention \"" + retention + "\"");
    double n = std::stod(retention.substr(i, j - i));
    std::string u = retention.substr(j, k - j);
    if (u == "h") ms += n * 3600000;
    else if (u == "m") ms += n * 60000;
    else if (u == "s") ms += n * 1000;
    else if (u == "ms") ms += n;
    else return Status::InvalidArgument("invalid auto-compaction-retention \"" + retention + "\"");
    i = k;
  }
  s.period = milliseconds(static_cast<int64_t>(ms));
  return s;
}

Compactor::Compactor(CompactionSpec spec, std::function<int64_t()> current_rev, std::function<Status(int64_t)> compact)
    : spec_(std::move(spec)), current_rev_(std::move(current_rev)), compact_(std::move(compact)) {
  thread_ = std::thread([this] { Run(); });
}

Compactor::~Compactor() { Stop(); }

void Compactor::Stop() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
    cv_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
}

void Compactor::Run() {
  auto wait = [&](milliseconds d) {
    std::unique_lock<std::mutex> lk(mu_);
    return !cv_.wait_for(lk, d, [&] { return stop_; });
  };
  auto is_ok = [](const Status& s) {
    return s.ok() || s.message() == "etcdserver: mvcc: required revision has been compacted";
  };
  if (spec_.mode == "revision") {
    RevisionPolicy p(spec_.revisions);
    while (wait(RevisionPolicy::kInterval)) {
      auto rev = p.OnTick(current_rev_());
      if (!rev) continue;
      LOG_INFO("starting auto revision compaction", {{"revision", *rev}, {"revision-compaction-retention", spec_.revisions}});
      Status s = compact_(*rev);
      p.OnResult(*rev, is_ok(s));
      if (is_ok(s)) LOG_INFO("completed auto revision compaction", {{"revision", *rev}});
      else LOG_WARN("failed auto revision compaction", {{"revision", *rev}, {"error", s.ToString()}});
    }
    return;
  }
  PeriodicPolicy p(spec_.period, CompactClock::now());
  while (true) {
    p.Record(current_rev_());
    if (!wait(p.TickInterval())) return;
    auto rev = p.Due(CompactClock::now());
    if (rev) {
      LOG_INFO("starting auto periodic compaction",
               {{"revision", *rev}, {"compact-period", std::to_string(spec_.period.count()) + "ms"}});
      Status s = compact_(*rev);
      p.OnResult(CompactClock::now(), is_ok(s));
      if (is_ok(s)) LOG_INFO("completed auto periodic compaction", {{"revision", *rev}});
      else LOG_WARN("failed auto periodic compaction", {{"revision", *rev}, {"error", s.ToString()}});
    }
  }
}

}  // namespace engram::kv
