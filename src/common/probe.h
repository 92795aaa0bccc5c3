// Probes: the core counts what happens in small objects of plain atomics; only
// exporter/ turns them into Prometheus families (after Redpanda's probe.h).
// Nothing here allocates or locks on the hot path.
//
// Histogram keeps cumulative-ready bucket counts for fixed upper bounds (the
// bounds are etcd's, so the exporter publishes them unchanged), a count and a
// sum. Observe() is wait-free; Snapshot() may race with Observe() and then sees
// a count and sum a few observations apart, as Prometheus clients do.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <vector>

namespace engram {

class Counter {
 public:
  void Inc(uint64_t n = 1) { v_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t Value() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> v_{0};
};

class Gauge {
 public:
  void Set(int64_t v) { v_.store(v, std::memory_order_relaxed); }
  void Add(int64_t d) { v_.fetch_add(d, std::memory_order_relaxed); }
  int64_t Value() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> v_{0};
};

class Histogram {
 public:
  // Exponential bounds: start, start*factor, ... (count bounds), as Prometheus'
  // ExponentialBuckets.
  static std::vector<double> Exponential(double start, double factor, int count) {
    std::vector<double> b;
    for (int i = 0; i < count; i++, start *= factor) b.push_back(start);
    return b;
  }
  explicit Histogram(std::vector<double> bounds)
      : bounds_(std::move(bounds)), buckets_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
    for (size_t i = 0; i <= bounds_.size(); i++) buckets_[i].store(0);
  }

  void Observe(double v) {
    size_t i = 0;
    while (i < bounds_.size() && v > bounds_[i]) i++;
    buckets_[i].fetch_add(1, std::memory_order_relaxed);
    count_.fetch_add(1, std::memory_order_relaxed);
    // Sum in nanounits keeps it an integer atomic.
    sum_nano_.fetch_add(static_cast<int64_t>(v * 1e9), std::memory_order_relaxed);
  }
  void ObserveSince(std::chrono::steady_clock::time_point start) {
    Observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }

  struct Snap {
    std::vector<uint64_t> buckets;  // per bucket (not cumulative); last is +Inf
    uint64_t count = 0;
    double sum = 0;
  };
  Snap Snapshot() const {
    Snap s;
    s.buckets.resize(bounds_.size() + 1);
    for (size_t i = 0; i <= bounds_.size(); i++) s.buckets[i] = buckets_[i].load(std::memory_order_relaxed);
    s.count = count_.load(std::memory_order_relaxed);
    s.sum = static_cast<double>(sum_nano_.load(std::memory_order_relaxed)) / 1e9;
    return s;
  }
  const std::vector<double>& bounds() const { return bounds_; }

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;
  std::atomic<uint64_t> count_{0};
  std::atomic<int64_t> sum_nano_{0};
};

// etcd's bucket sets (docs/metrics.md lists which metric uses which).
inline std::vector<double> BucketsB1() { return Histogram::Exponential(0.001, 2, 14); }
inline std::vector<double> BucketsB12() { return Histogram::Exponential(0.0001, 2, 20); }

}  // namespace engram
