#include "exporter/exporter.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>

namespace engram::exporter {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

void AppendGoFloat(std::string& out, double v) {
  if (std::isnan(v)) {
    out += "NaN";
    return;
  }
  if (std::isinf(v)) {
    out += v > 0 ? "+Inf" : "-Inf";
    return;
  }
  char buf[64];
  // Fast path: integers below 1e6 print as themselves in both %e/%f rules.
  if (v == std::floor(v) && std::fabs(v) < 1e6) {
    auto r = std::to_chars(buf, buf + sizeof buf, static_cast<int64_t>(v));
    out.append(buf, r.ptr);
    return;
  }
  // Shortest round-trip digits, then Go's layout for 'g' with precision -1:
  // %e when the exponent is < -4 or >= 6 (Go uses 6 for shortest), else %f.
  auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);
  const char* p = buf;
  if (*p == '-') {
    out += '-';
    p++;
  }
  const char* e = std::find(p, static_cast<const char*>(r.ptr), 'e');
  char digits[32];
  size_t nd = 0;
  for (const char* q = p; q < e; q++)
    if (*q != '.') digits[nd++] = *q;
  int exp = 0;
  std::from_chars(e + 1 + (e[1] == '+' ? 1 : 0), r.ptr, exp);
  if (exp < -4 || exp >= 6) {
    out += digits[0];
    if (nd > 1) {
      out += '.';
      out.append(digits + 1, nd - 1);
    }
    out += 'e';
    out += exp < 0 ? '-' : '+';
    int a = std::abs(exp);
    if (a < 10) out += '0';
    auto x = std::to_chars(buf, buf + sizeof buf, a);
    out.append(buf, x.ptr);
    return;
  }
  if (exp < 0) {
    out += "0.";
    out.append(static_cast<size_t>(-exp - 1), '0');
    out.append(digits, nd);
    return;
  }
  size_t int_digits = static_cast<size_t>(exp) + 1;
  if (nd <= int_digits) {
    out.append(digits, nd);
    out.append(int_digits - nd, '0');
  } else {
    out.append(digits, int_digits);
    out += '.';
    out.append(digits + int_digits, nd - int_digits);
  }
}

void AppendEscaped(std::string& out, const std::string& s, bool quote) {
  for (char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (quote && c == '"') {
      out += "\\\"";
    } else {
      out += c;
    }
  }
}

// name+suffix{labels[,extra_name="extra_value"]} value; labels is the
// pre-rendered `a="x",b="y"` of the series.
void AppendSample(std::string& out, const std::string& name, const char* suffix, const std::string& labels,
                  const char* extra_name, double extra_value, double value) {
  out += name;
  out += suffix;
  if (!labels.empty() || extra_name != nullptr) {
    out += '{';
    out += labels;
    if (extra_name != nullptr) {
      if (!labels.empty()) out += ',';
      out += extra_name;
      out += "=\"";
      AppendGoFloat(out, extra_value);
      out += '"';
    }
    out += '}';
  }
  out += ' ';
  AppendGoFloat(out, value);
  out += '\n';
}

std::string RenderLabels(const std::vector<ClientMetric::Label>& labels) {
  std::string s;
  for (const auto& l : labels) {
    if (!s.empty()) s += ',';
    s += l.name;
    s += "=\"";
    AppendEscaped(s, l.value, true);
    s += '"';
  }
  return s;
}

const char* TypeName(MetricType t) {
  switch (t) {
    case MetricType::Counter: return "counter";
    case MetricType::Gauge: return "gauge";
    case MetricType::Summary: return "summary";
    case MetricType::Histogram: return "histogram";
    case MetricType::Untyped: return "untyped";
  }
  return "untyped";
}

}  // namespace

std::string FormatGoFloat(double v) {
  std::string s;
  AppendGoFloat(s, v);
  return s;
}

std::string SerializeText(std::vector<MetricFamily> families) {
  std::sort(families.begin(), families.end(),
            [](const MetricFamily& a, const MetricFamily& b) { return a.name < b.name; });
  std::string out;
  out.reserve(256 * 1024);
  for (auto& f : families) {
    if (f.metric.empty()) continue;
    // As Go: label pairs sorted by name, series by their label values.
    for (auto& m : f.metric)
      std::sort(m.label.begin(), m.label.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
    std::stable_sort(f.metric.begin(), f.metric.end(), [](const ClientMetric& a, const ClientMetric& b) {
      size_t n = std::min(a.label.size(), b.label.size());
      for (size_t i = 0; i < n; i++) {
        if (a.label[i].value != b.label[i].value) return a.label[i].value < b.label[i].value;
      }
      return a.label.size() < b.label.size();
    });
    out += "# HELP ";
    out += f.name;
    out += ' ';
    AppendEscaped(out, f.help, false);
    out += "\n# TYPE ";
    out += f.name;
    out += ' ';
    out += TypeName(f.type);
    out += '\n';
    std::string labels;
    for (const auto& m : f.metric) {
      labels = RenderLabels(m.label);
      switch (f.type) {
        case MetricType::Counter:
          AppendSample(out, f.name, "", labels, nullptr, 0, m.counter.value);
          break;
        case MetricType::Gauge:
          AppendSample(out, f.name, "", labels, nullptr, 0, m.gauge.value);
          break;
        case MetricType::Untyped:
          AppendSample(out, f.name, "", labels, nullptr, 0, m.untyped.value);
          break;
        case MetricType::Summary:
          for (const auto& q : m.summary.quantile) AppendSample(out, f.name, "", labels, "quantile", q.quantile, q.value);
          AppendSample(out, f.name, "_sum", labels, nullptr, 0, m.summary.sample_sum);
          AppendSample(out, f.name, "_count", labels, nullptr, 0, static_cast<double>(m.summary.sample_count));
          break;
        case MetricType::Histogram: {
          bool has_inf = false;
          for (const auto& b : m.histogram.bucket) {
            has_inf |= std::isinf(b.upper_bound);
            AppendSample(out, f.name, "_bucket", labels, "le", b.upper_bound, static_cast<double>(b.cumulative_count));
          }
          if (!has_inf) {
            AppendSample(out, f.name, "_bucket", labels, "le", std::numeric_limits<double>::infinity(),
                         static_cast<double>(m.histogram.sample_count));
          }
          AppendSample(out, f.name, "_sum", labels, nullptr, 0, m.histogram.sample_sum);
          AppendSample(out, f.name, "_count", labels, nullptr, 0, static_cast<double>(m.histogram.sample_count));
          break;
        }
      }
    }
  }
  return out;
}

Exporter::Exporter(kv::KvServer* kv, kv::RpcProbe* rpc, HealthProbe* health, Options opts)
    : registry_(std::make_shared<prometheus::Registry>()),
      collector_(std::make_shared<Collector>(kv, rpc, health, CollectorOptions{opts.extensive, &in_flight_})) {}

std::vector<prometheus::MetricFamily> Exporter::Collect() const {
  std::vector<prometheus::MetricFamily> fams = collector_->Collect();
  for (auto& f : registry_->Collect()) fams.push_back(std::move(f));
  return fams;
}

std::string Exporter::RenderText() {
  in_flight_.fetch_add(1, std::memory_order_relaxed);
  std::string text = SerializeText(Collect());
  in_flight_.fetch_sub(1, std::memory_order_relaxed);
  return text;
}

}  // namespace engram::exporter
