#include "src/kv/alarms.h"

#include <algorithm>

namespace engram::kv {

std::string AlarmTypeName(etcdserverpb::AlarmType t) {
  switch (t) {
    case etcdserverpb::NONE: return "NONE";
    case etcdserverpb::NOSPACE: return "NOSPACE";
    case etcdserverpb::CORRUPT: return "CORRUPT";
    default: return std::to_string(static_cast<int>(t));
  }
}

std::string AlarmText(const AlarmInfo& a) {
  std::string s;
  if (a.member_id != 0) s += "memberID:" + std::to_string(a.member_id) + " ";
  if (a.type != etcdserverpb::NONE) s += "alarm:" + AlarmTypeName(a.type) + " ";
  return s;
}

Status AlarmStore::Load(const mvcc::Store& store) {
  std::lock_guard<std::mutex> lk(mu_);
  alarms_.clear();
  if (auto v = store.GetMeta(kAlarmsMetaName)) {
    etcdserverpb::AlarmResponse set;
    if (!set.ParseFromString(*v)) return Status::Corruption("the alarm list in the backend does not decode");
    for (const auto& m : set.alarms()) alarms_.push_back(AlarmInfo{m.memberid(), m.alarm()});
  }
  seen_ = alarms_;
  Refresh();
  return Status::OK();
}

AlarmInfo AlarmStore::Activate(mvcc::Store::Batch& b, uint64_t member, etcdserverpb::AlarmType t, bool* added) {
  std::lock_guard<std::mutex> lk(mu_);
  AlarmInfo a{member, t};
  *added = std::find(alarms_.begin(), alarms_.end(), a) == alarms_.end();
  if (*added) {
    alarms_.push_back(a);
    if (std::find(seen_.begin(), seen_.end(), a) == seen_.end()) seen_.push_back(a);
    Persist(b);
    Refresh();
  }
  return a;
}

std::vector<AlarmInfo> AlarmStore::Snapshot() const {
  std::lock_guard<std::mutex> lk(mu_);
  return alarms_;
}

void AlarmStore::Restore(std::vector<AlarmInfo> active) {
  std::lock_guard<std::mutex> lk(mu_);
  alarms_ = std::move(active);
  Refresh();
}

std::optional<AlarmInfo> AlarmStore::Deactivate(mvcc::Store::Batch& b, uint64_t member, etcdserverpb::AlarmType t) {
  std::lock_guard<std::mutex> lk(mu_);
  AlarmInfo a{member, t};
  auto it = std::find(alarms_.begin(), alarms_.end(), a);
  if (it == alarms_.end()) return std::nullopt;
  alarms_.erase(it);
  Persist(b);
  Refresh();
  return a;
}

std::vector<AlarmInfo> AlarmStore::Get(etcdserverpb::AlarmType t) const {
  std::lock_guard<std::mutex> lk(mu_);
  if (t == etcdserverpb::NONE) return alarms_;
  std::vector<AlarmInfo> out;
  for (const auto& a : alarms_)
    if (a.type == t) out.push_back(a);
  return out;
}

std::vector<AlarmStore::Seen> AlarmStore::SeenAlarms() const {
  std::lock_guard<std::mutex> lk(mu_);
  std::vector<Seen> out;
  for (const auto& a : seen_) out.push_back(Seen{a, std::find(alarms_.begin(), alarms_.end(), a) != alarms_.end()});
  return out;
}

void AlarmStore::Persist(mvcc::Store::Batch& b) {
  if (alarms_.empty()) {
    b.DeleteMeta(kAlarmsMetaName);
    return;
  }
  etcdserverpb::AlarmResponse set;
  for (const auto& a : alarms_) {
    auto* m = set.add_alarms();
    m->set_memberid(a.member_id);
    m->set_alarm(a.type);
  }
  b.PutMeta(kAlarmsMetaName, set.SerializeAsString());
}

void AlarmStore::Refresh() {
  bool nospace = false, corrupt = false;
  for (const auto& a : alarms_) {
    nospace |= a.type == etcdserverpb::NOSPACE;
    corrupt |= a.type == etcdserverpb::CORRUPT;
  }
  nospace_.store(nospace, std::memory_order_release);
  corrupt_.store(corrupt, std::memory_order_release);
}

int64_t QuotaCost(const etcdserverpb::PutRequest& r) {
  return kQuotaKvOverhead + static_cast<int64_t>(r.key().size() + r.value().size());
}

namespace {

int64_t BranchCost(const google::protobuf::RepeatedPtrField<etcdserverpb::RequestOp>& ops) {
  int64_t cost = 0;
  for (const auto& op : ops) {
    if (op.request_case() == etcdserverpb::RequestOp::kRequestPut) cost += QuotaCost(op.request_put());
    // etcd 3.4 charges nothing for a nested txn, so its puts slip past the
    // quota and the NOSPACE alarm; Engram charges them like top-level puts.
    if (op.request_case() == etcdserverpb::RequestOp::kRequestTxn) cost += QuotaCost(op.request_txn());
  }
  return cost;
}

}  // namespace

int64_t QuotaCost(const etcdserverpb::TxnRequest& r) {
  return std::max(BranchCost(r.success()), BranchCost(r.failure()));
}

}  // namespace engram::kv
