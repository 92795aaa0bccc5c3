#include "exporter/endpoints.h"

#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <set>

#include "src/common/log.h"
#include "status_page_html.h"  // generated from exporter/status_page.html (exporter/CMakeLists.txt)

namespace engram::exporter {
namespace {

constexpr const char* kTextPlain = "text/plain; charset=utf-8";
constexpr const char* kMetricsType = "text/plain; version=0.0.4; charset=utf-8";

bool IEquals(const std::string& a, const std::string& b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) { return std::tolower(x) == std::tolower(y); });
}

// Go's http.Error: the text plus "\n", text/plain, nosniff.
HttpResponse GoError(int status, const std::string& text) {
  HttpResponse r;
  r.status = status;
  r.headers = {{"Content-Type", kTextPlain}, {"X-Content-Type-Options", "nosniff"}};
  r.body = text + "\n";
  return r;
}

HttpResponse MethodNotAllowed() {
  HttpResponse r = GoError(405, "Method Not Allowed");
  r.headers.insert(r.headers.begin(), {"Allow", "GET"});
  return r;
}

HttpResponse NotFound() { return GoError(404, "404 page not found"); }

std::string JsonString(const std::string& s) { return log::Quote(s); }

std::string Hex(uint64_t v) {
  char b[17];
  std::snprintf(b, sizeof b, "%lx", static_cast<unsigned long>(v));
  return b;
}

// Does Accept-Encoding allow gzip? (promhttp: any listed coding named gzip.)
bool AcceptsGzip(const std::string& ae) {
  size_t pos = 0;
  while (pos <= ae.size()) {
    size_t comma = ae.find(',', pos);
    std::string item = ae.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    size_t semi = item.find(';');
    std::string coding = item.substr(0, semi);
    coding.erase(0, coding.find_first_not_of(" \t"));
    coding.erase(coding.find_last_not_of(" \t") + 1);
    bool q0 = false;
    if (semi != std::string::npos) {
      std::string params = item.substr(semi + 1);
      params.erase(std::remove_if(params.begin(), params.end(), ::isspace), params.end());
      q0 = params == "q=0" || params == "q=0.0" || params == "q=0.00" || params == "q=0.000";
    }
    if (IEquals(coding, "gzip") && !q0) return true;
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return false;
}

// ---------------------------------------------------------------- /metrics

HttpResponse Metrics(const HttpRequest& req, EndpointContext& ctx, HealthProbe& probe) {
  // promhttp answers any method; the scrape counter counts every answer.
  probe.scrapes.Inc();
  HttpResponse r;
  r.headers = {{"Content-Type", kMetricsType}};
  std::string text = ctx.RenderMetrics();
  if (AcceptsGzip(req.accept_encoding)) {
    r.headers.push_back({"Content-Encoding", "gzip"});
    r.body = Gzip(text);
  } else {
    r.body = std::move(text);
  }
  return r;
}

// ---------------------------------------------------------------- /health

HttpResponse Health(const std::vector<std::pair<std::string, std::string>>& query, EndpointContext& ctx,
                    HealthProbe& probe) {
  std::set<std::string> excluded;
  bool serializable = false, serializable_seen = false;
  for (const auto& [k, v] : query) {
    if (k == "exclude" && !v.empty()) excluded.insert(v);
    // Go's Query().Get: the first value counts.
    if (k == "serializable" && !serializable_seen) {
      serializable_seen = true;
      serializable = v == "true";
    }
  }
  std::string reason;
  for (const auto& a : ctx.ActiveAlarms()) {
    if (excluded.count(a)) continue;
    reason = (a == "NOSPACE" || a == "CORRUPT") ? "ALARM " + a : "ALARM UNKNOWN";
    LOG_WARN("serving /health false due to an alarm", {{"alarm", a}});
    break;
  }
  if (reason.empty() && !serializable && !ctx.HasLeader()) {
    reason = "RAFT NO LEADER";
    LOG_WARN("serving /health false; no leader");
  }
  if (reason.empty()) {
    Status st = ctx.CheckRange(serializable);
    if (!st.ok()) {
      reason = "RANGE ERROR:" + st.message();
      LOG_WARN("serving /health false; Range fails", {{"error", st.message()}});
    }
  }
  bool healthy = reason.empty();
  (healthy ? probe.health_success : probe.health_failures).Inc();
  std::string body = std::string("{\"health\":\"") + (healthy ? "true" : "false") + "\"";
  if (ctx.Version().health_reason) body += ",\"reason\":" + JsonString(reason);
  body += "}";
  if (!healthy) return GoError(503, body);
  HttpResponse r;
  // etcd writes no Content-Type; Go sniffs the JSON text as text/plain.
  r.headers = {{"Content-Type", kTextPlain}};
  r.body = std::move(body);
  return r;
}

// ---------------------------------------------------------------- /livez, /readyz

enum class CheckId { kSerializableRead = 0, kLinearizableRead = 1, kDataCorruption = 2, kNonLearner = 3 };

const char* CheckName(CheckId c) { return HealthProbe::kCheckNames[static_cast<int>(c)]; }

// Registration order (etcd's order is Go map order, i.e. unspecified).
const std::vector<CheckId>& ChecksOf(bool livez) {
  static const std::vector<CheckId> kLivez = {CheckId::kSerializableRead};
  static const std::vector<CheckId> kReadyz = {CheckId::kDataCorruption, CheckId::kSerializableRead,
                                               CheckId::kLinearizableRead, CheckId::kNonLearner};
  return livez ? kLivez : kReadyz;
}

Status RunCheck(CheckId c, EndpointContext& ctx) {
  switch (c) {
    case CheckId::kSerializableRead: return ctx.CheckRange(true);
    case CheckId::kLinearizableRead: return ctx.CheckRange(false);
    case CheckId::kDataCorruption:
      for (const auto& a : ctx.ActiveAlarms())
        if (a == "CORRUPT") return Status::Internal("alarm activated: CORRUPT");
      return Status::OK();
    case CheckId::kNonLearner:
      if (ctx.IsLearner()) return Status::FailedPrecondition("not supported for learner");
      return Status::OK();
  }
  return Status::OK();
}

HttpResponse Probe(bool livez, const std::string& sub, const std::vector<std::pair<std::string, std::string>>& query,
                   EndpointContext& ctx, HealthProbe& probe) {
  const auto& all = ChecksOf(livez);
  std::vector<CheckId> run;
  if (!sub.empty()) {
    for (CheckId c : all)
      if (sub == CheckName(c)) run.push_back(c);
    if (run.empty()) return NotFound();
  } else {
    std::set<std::string> excluded;
    for (const auto& [k, v] : query)
      if (k == "exclude" && !v.empty()) excluded.insert(v);
    for (CheckId c : all) {
      if (excluded.erase(CheckName(c))) continue;
      run.push_back(c);
    }
    if (!excluded.empty()) {
      std::string missing;
      for (const auto& e : excluded) missing += (missing.empty() ? "" : ", ") + JsonString(e);
      LOG_WARN("some health checks cannot be excluded", {{"missing-health-checks", missing}});
    }
  }
  auto& checks = livez ? probe.livez : probe.readyz;
  std::string detail;
  bool failed = false;
  for (CheckId c : run) {
    Status st = RunCheck(c, ctx);
    auto& m = checks[static_cast<int>(c)];
    m.ran.store(true, std::memory_order_relaxed);
    if (st.ok()) {
      detail += std::string("[+]") + CheckName(c) + " ok\n";
      m.passed.Set(1);
      m.success.Inc();
    } else {
      detail += std::string("[-]") + CheckName(c) + " failed: " + st.message() + "\n";
      m.passed.Set(0);
      m.error.Inc();
      failed = true;
    }
  }
  if (failed) {
    LOG_ERROR("Health check error", {{"path", livez ? "/livez" : "/readyz"}, {"reason", detail}, {"status-code", 503}});
    return GoError(503, detail);
  }
  HttpResponse r;
  r.headers = {{"Content-Type", kTextPlain}, {"X-Content-Type-Options", "nosniff"}};
  bool verbose = std::any_of(query.begin(), query.end(), [](const auto& kv) { return kv.first == "verbose"; });
  if (verbose) r.body = detail;
  r.body += "ok\n";
  return r;
}

// ---------------------------------------------------------------- /version, /status.json

bool AtLeast36(const std::string& cluster) {
  int major = 0, minor = 0;
  if (std::sscanf(cluster.c_str(), "%d.%d", &major, &minor) != 2) return false;
  return major > 3 || (major == 3 && minor >= 6);
}

HttpResponse Version(EndpointContext& ctx) {
  const auto& v = ctx.Version();
  HttpResponse r;
  r.headers = {{"Content-Type", "application/json"}};
  r.body = "{\"etcdserver\":" + JsonString(v.server) + ",\"etcdcluster\":" + JsonString(v.cluster + ".0");
  if (AtLeast36(v.cluster)) r.body += std::string(",\"storage\":") + JsonString(kv::kStorageVersion);
  r.body += "}";
  return r;
}

std::string JsonList(const std::vector<std::string>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); i++) out += (i ? "," : "") + JsonString(v[i]);
  return out + "]";
}

HttpResponse StatusJson(EndpointContext& ctx) {
  MemberStatus s = ctx.GetMemberStatus();
  const auto& v = ctx.Version();
  std::string b = "{";
  b += "\"name\":" + JsonString(s.name);
  b += ",\"member_id\":" + JsonString(Hex(s.member_id));
  b += ",\"cluster_id\":" + JsonString(Hex(s.cluster_id));
  b += ",\"leader\":" + JsonString(s.leader ? Hex(s.leader) : "");
  b += std::string(",\"is_leader\":") + (s.leader != 0 && s.leader == s.member_id ? "true" : "false");
  b += std::string(",\"is_learner\":") + (s.is_learner ? "true" : "false");
  b += ",\"revision\":" + std::to_string(s.revision);
  b += ",\"compact_revision\":" + std::to_string(s.compact_revision);
  b += ",\"raft_term\":" + std::to_string(s.raft_term);
  b += ",\"raft_index\":" + std::to_string(s.raft_index);
  b += ",\"raft_applied_index\":" + std::to_string(s.applied_index);
  b += ",\"db_size\":" + std::to_string(s.db_size);
  b += ",\"db_size_in_use\":" + std::to_string(s.db_size_in_use);
  b += ",\"db_size_quota\":" + std::to_string(s.quota);
  b += ",\"alarms\":" + JsonList(ctx.ActiveAlarms());
  b += ",\"client_urls\":" + JsonList(s.client_urls);
  b += ",\"peer_urls\":" + JsonList(s.peer_urls);
  b += ",\"version\":" + JsonString(v.server);
  b += ",\"cluster_version\":" + JsonString(v.cluster + ".0");
  b += "}\n";
  HttpResponse r;
  r.headers = {{"Content-Type", "application/json"}, {"Cache-Control", "no-store"}};
  r.body = std::move(b);
  return r;
}

int Hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Go's url.QueryUnescape (plus_is_space) / PathUnescape. False on a bad escape.
bool Unescape(const std::string& s, bool plus_is_space, std::string* out) {
  out->clear();
  for (size_t i = 0; i < s.size(); i++) {
    if (s[i] == '+' && plus_is_space) {
      *out += ' ';
    } else if (s[i] == '%') {
      if (i + 2 >= s.size() || Hexval(s[i + 1]) < 0 || Hexval(s[i + 2]) < 0) return false;
      *out += static_cast<char>(Hexval(s[i + 1]) * 16 + Hexval(s[i + 2]));
      i += 2;
    } else {
      *out += s[i];
    }
  }
  return true;
}

}  // namespace

std::string HttpResponse::Header(const std::string& name) const {
  for (const auto& [k, v] : headers)
    if (IEquals(k, name)) return v;
  return "";
}

std::string HttpRequest::Header(const std::string& name) const {
  for (const auto& [k, v] : headers)
    if (IEquals(k, name)) return v;
  return "";
}

std::vector<std::pair<std::string, std::string>> ParseQuery(const std::string& query) {
  std::vector<std::pair<std::string, std::string>> out;
  size_t pos = 0;
  while (pos <= query.size()) {
    size_t amp = query.find('&', pos);
    std::string part = query.substr(pos, amp == std::string::npos ? std::string::npos : amp - pos);
    // Go skips a pair with a ';' (since 1.17) or a bad escape.
    if (!part.empty() && part.find(';') == std::string::npos) {
      size_t eq = part.find('=');
      std::string k, v;
      if (Unescape(part.substr(0, eq), true, &k) &&
          Unescape(eq == std::string::npos ? "" : part.substr(eq + 1), true, &v))
        out.emplace_back(std::move(k), std::move(v));
    }
    if (amp == std::string::npos) break;
    pos = amp + 1;
  }
  return out;
}

// Go's path.Clean, keeping a trailing slash (net/http's cleanPath).
std::string CleanPath(const std::string& p) {
  if (p.empty()) return "/";
  std::vector<std::string> parts;
  size_t i = 0;
  while (i < p.size()) {
    size_t j = p.find('/', i);
    if (j == std::string::npos) j = p.size();
    std::string seg = p.substr(i, j - i);
    if (seg == "..") {
      if (!parts.empty()) parts.pop_back();
    } else if (!seg.empty() && seg != ".") {
      parts.push_back(seg);
    }
    i = j + 1;
  }
  std::string out;
  for (const auto& s : parts) out += "/" + s;
  if (out.empty()) out = "/";
  if (p.back() == '/' && out != "/") out += "/";
  return out;
}

HttpResponse Redirect(const HttpRequest& req, const std::string& location) {
  // net/http's Redirect: an HTML note only for GET and HEAD.
  HttpResponse r{301, {{"Location", location}}, ""};
  if (req.method == "GET" || req.method == "HEAD") {
    r.headers.emplace_back("Content-Type", "text/html; charset=utf-8");
    r.body = "<a href=\"" + location + "\">Moved Permanently</a>.\n\n";
  }
  return r;
}

HttpResponse Handle(const HttpRequest& req, EndpointContext& ctx, HealthProbe& probe) {
  std::string path = req.target, rawq;
  size_t q = path.find('?');
  if (q != std::string::npos) {
    rawq = path.substr(q + 1);
    path.resize(q);
  }
  std::string decoded;
  if (Unescape(path, false, &decoded)) path = decoded;
  // Go's ServeMux answers an unclean path ("//v3/kv/range", "/a/../b") with a
  // redirect to the clean one, on every route (etcd's client and metrics
  // URLs alike).
  if (req.method != "CONNECT" && !path.empty() && path[0] == '/') {
    const std::string clean = CleanPath(path);
    if (clean != path) return Redirect(req, clean + (q != std::string::npos ? "?" + rawq : ""));
  }
  auto query = ParseQuery(rawq);
  bool get = req.method == "GET";
  bool get_or_head = get || req.method == "HEAD";
  bool client = req.listener == Listener::kClient;

  if (path == "/metrics") return Metrics(req, ctx, probe);
  if (path == "/health") {
    if (!get) return MethodNotAllowed();
    return Health(query, ctx, probe);
  }
  for (bool livez : {true, false}) {
    std::string root = livez ? "/livez" : "/readyz";
    if (path == root || (path.size() > root.size() + 1 && path.compare(0, root.size() + 1, root + "/") == 0)) {
      std::string sub = path == root ? "" : path.substr(root.size() + 1);
      if (!sub.empty()) {
        bool known = false;
        for (CheckId c : ChecksOf(livez)) known |= sub == CheckName(c);
        if (!known) return NotFound();
      }
      if (!get) return MethodNotAllowed();
      return Probe(livez, sub, query, ctx, probe);
    }
  }
  if (path == "/version" && client) {
    if (!get) return MethodNotAllowed();
    return Version(ctx);
  }
  if (path == "/status.json") {
    if (!get_or_head) return MethodNotAllowed();
    return StatusJson(ctx);
  }
  if (path == "/") {
    if (!get_or_head) return MethodNotAllowed();
    HttpResponse r;
    r.headers = {{"Content-Type", "text/html; charset=utf-8"}, {"Cache-Control", "no-store"}};
    r.body = StatusPageHtml();
    return r;
  }
  return NotFound();
}

// ---------------------------------------------------------------- KvContext

std::vector<std::string> KvContext::ActiveAlarms() { return kv_->ActiveAlarms(); }

bool KvContext::HasLeader() { return kv_->GetStatus().leader != 0; }

Status KvContext::CheckRange(bool serializable) {
  etcdserverpb::RangeRequest req;
  // etcd ranges the empty key; Engram's Range refuses an empty key, so look
  // up "\0" instead: the same point read, as cheap.
  req.set_key(std::string(1, '\0'));
  req.set_keys_only(true);
  req.set_limit(1);
  req.set_serializable(serializable);
  etcdserverpb::RangeResponse resp;
  return kv_->Range(req, &resp);
}

bool KvContext::IsLearner() {
  for (const auto& m : kv_->Members())
    if (m.id == kv_->member_id()) return m.is_learner;
  return false;
}

MemberStatus KvContext::GetMemberStatus() {
  MemberStatus s;
  kv::StatusInfo st = kv_->GetStatus();
  const auto& o = kv_->options();
  s.name = o.name;
  s.member_id = kv_->member_id();
  s.cluster_id = kv_->cluster_id();
  s.leader = st.leader;
  s.raft_term = st.term;
  s.raft_index = st.commit_index;
  s.applied_index = st.applied_index;
  s.revision = st.revision;
  s.compact_revision = kv_->store().CompactRev();
  s.db_size = st.db_size;
  s.db_size_in_use = st.db_size_in_use;
  s.quota = o.quota_bytes;
  s.is_learner = IsLearner();
  s.client_urls = o.client_urls;
  s.peer_urls = o.peer_urls;
  return s;
}

// ---------------------------------------------------------------- gzip

std::string Gzip(const std::string& data) {
  z_stream zs{};
  // windowBits 15 + 16: a gzip header and trailer instead of zlib's.
  if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) return "";
  std::string out;
  out.resize(deflateBound(&zs, data.size()) + 32);
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  zs.avail_in = static_cast<uInt>(data.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  int rc = deflate(&zs, Z_FINISH);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return rc == Z_STREAM_END ? out : "";
}

std::string Gunzip(const std::string& data) {
  z_stream zs{};
  if (inflateInit2(&zs, 15 + 16) != Z_OK) return "";
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  zs.avail_in = static_cast<uInt>(data.size());
  std::string out;
  char buf[16384];
  int rc;
  do {
    zs.next_out = reinterpret_cast<Bytef*>(buf);
    zs.avail_out = sizeof buf;
    rc = inflate(&zs, Z_NO_FLUSH);
    out.append(buf, sizeof buf - zs.avail_out);
  } while (rc == Z_OK);
  inflateEnd(&zs);
  return rc == Z_STREAM_END ? out : "";
}

const std::string& StatusPageHtml() {
  static const std::string page(kStatusPageHtml);
  return page;
}

}  // namespace engram::exporter
