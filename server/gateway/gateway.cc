#include "server/gateway/gateway.h"
#include "server/gateway/gojson.h"

#include <chrono>
#include <map>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/dynamic_message.h>
#include <google/protobuf/message.h>
#include <google/protobuf/util/json_util.h>

#include "src/common/log.h"

namespace engram::server::gateway {
namespace {

using exporter::HttpRequest;
using exporter::HttpResponder;
using exporter::HttpResponse;
using google::protobuf::Message;
using google::protobuf::MethodDescriptor;

// etcd 3.4's gateway routes (its *.pb.gw.go files): the path after the API
// prefix -> the gRPC method. Every route is POST with the whole body as the
// request.
const std::map<std::string, std::string>& Routes() {
  static const auto* routes = new std::map<std::string, std::string>{
      {"/kv/range", "etcdserverpb.KV.Range"},
      {"/kv/put", "etcdserverpb.KV.Put"},
      {"/kv/deleterange", "etcdserverpb.KV.DeleteRange"},
      {"/kv/txn", "etcdserverpb.KV.Txn"},
      {"/kv/compaction", "etcdserverpb.KV.Compact"},
      {"/watch", "etcdserverpb.Watch.Watch"},
      {"/lease/grant", "etcdserverpb.Lease.LeaseGrant"},
      {"/lease/revoke", "etcdserverpb.Lease.LeaseRevoke"},
      {"/kv/lease/revoke", "etcdserverpb.Lease.LeaseRevoke"},
      {"/lease/keepalive", "etcdserverpb.Lease.LeaseKeepAlive"},
      {"/lease/timetolive", "etcdserverpb.Lease.LeaseTimeToLive"},
      {"/kv/lease/timetolive", "etcdserverpb.Lease.LeaseTimeToLive"},
      {"/lease/leases", "etcdserverpb.Lease.LeaseLeases"},
      {"/kv/lease/leases", "etcdserverpb.Lease.LeaseLeases"},
      {"/cluster/member/add", "etcdserverpb.Cluster.MemberAdd"},
      {"/cluster/member/remove", "etcdserverpb.Cluster.MemberRemove"},
      {"/cluster/member/update", "etcdserverpb.Cluster.MemberUpdate"},
      {"/cluster/member/list", "etcdserverpb.Cluster.MemberList"},
      {"/cluster/member/promote", "etcdserverpb.Cluster.MemberPromote"},
      {"/maintenance/alarm", "etcdserverpb.Maintenance.Alarm"},
      {"/maintenance/status", "etcdserverpb.Maintenance.Status"},
      {"/maintenance/defragment", "etcdserverpb.Maintenance.Defragment"},
      {"/maintenance/hash", "etcdserverpb.Maintenance.Hash"},
      {"/maintenance/snapshot", "etcdserverpb.Maintenance.Snapshot"},
      {"/maintenance/transfer-leadership", "etcdserverpb.Maintenance.MoveLeader"},
      {"/auth/enable", "etcdserverpb.Auth.AuthEnable"},
      {"/auth/disable", "etcdserverpb.Auth.AuthDisable"},
      {"/auth/authenticate", "etcdserverpb.Auth.Authenticate"},
      {"/auth/user/add", "etcdserverpb.Auth.UserAdd"},
      {"/auth/user/get", "etcdserverpb.Auth.UserGet"},
      {"/auth/user/list", "etcdserverpb.Auth.UserList"},
      {"/auth/user/delete", "etcdserverpb.Auth.UserDelete"},
      {"/auth/user/changepw", "etcdserverpb.Auth.UserChangePassword"},
      {"/auth/user/grant", "etcdserverpb.Auth.UserGrantRole"},
      {"/auth/user/revoke", "etcdserverpb.Auth.UserRevokeRole"},
      {"/auth/role/add", "etcdserverpb.Auth.RoleAdd"},
      {"/auth/role/get", "etcdserverpb.Auth.RoleGet"},
      {"/auth/role/list", "etcdserverpb.Auth.RoleList"},
      {"/auth/role/delete", "etcdserverpb.Auth.RoleDelete"},
      {"/auth/role/grant", "etcdserverpb.Auth.RoleGrantPermission"},
      {"/auth/role/revoke", "etcdserverpb.Auth.RoleRevokePermission"},
      {"/lock/lock", "v3lockpb.Lock.Lock"},
      {"/lock/unlock", "v3lockpb.Lock.Unlock"},
      {"/election/campaign", "v3electionpb.Election.Campaign"},
      {"/election/proclaim", "v3electionpb.Election.Proclaim"},
      {"/election/leader", "v3electionpb.Election.Leader"},
      {"/election/observe", "v3electionpb.Election.Observe"},
      {"/election/resign", "v3electionpb.Election.Resign"},
  };
  return *routes;
}

// grpc-gateway's runtime.HTTPStatusFromCode.
int HttpStatusFromCode(grpc::StatusCode c) {
  switch (c) {
    case grpc::StatusCode::OK: return 200;
    case grpc::StatusCode::CANCELLED: return 408;
    case grpc::StatusCode::UNKNOWN: return 500;
    case grpc::StatusCode::INVALID_ARGUMENT: return 400;
    case grpc::StatusCode::DEADLINE_EXCEEDED: return 504;
    case grpc::StatusCode::NOT_FOUND: return 404;
    case grpc::StatusCode::ALREADY_EXISTS: return 409;
    case grpc::StatusCode::PERMISSION_DENIED: return 403;
    case grpc::StatusCode::UNAUTHENTICATED: return 401;
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return 429;
    case grpc::StatusCode::FAILED_PRECONDITION: return 412;  // grpc-gateway 1.6.4 (etcd 3.4's)
    case grpc::StatusCode::ABORTED: return 409;
    case grpc::StatusCode::OUT_OF_RANGE: return 400;
    case grpc::StatusCode::UNIMPLEMENTED: return 501;
    case grpc::StatusCode::INTERNAL: return 500;
    case grpc::StatusCode::UNAVAILABLE: return 503;
    case grpc::StatusCode::DATA_LOSS: return 500;
    default: return 500;
  }
}

// Go's http.StatusText for the codes above.
const char* StatusText(int http) {
  switch (http) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 412: return "Precondition Failed";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "";
  }
}

// A JSON string as Go's encoding/json writes it (HTML characters escaped).
std::string JsonString(const std::string& s) { return log::Quote(s, /*html_safe=*/true); }

std::string ErrorBody(const grpc::Status& s) {
  return "{\"error\":" + JsonString(s.error_message()) + ",\"message\":" + JsonString(s.error_message()) +
         ",\"code\":" + std::to_string(static_cast<int>(s.error_code())) + "}";
}

// grpc-gateway's error body for a request that never reached gRPC (it
// could not be decoded): error, message, code; a plain response.
HttpResponse ErrorResponse(const grpc::Status& s) {
  HttpResponse r;
  r.status = HttpStatusFromCode(s.error_code());
  r.headers = {{"Content-Type", "application/json"}};
  r.body = ErrorBody(s);
  return r;
}

// The same body for an error the gRPC call returned: etcd's gateway sends it
// chunked, with the gRPC trailers as an HTTP trailer.
void ReplyCallError(HttpResponder* out, const grpc::Status& s) {
  out->StartStream(HttpStatusFromCode(s.error_code()),
                   {{"Content-Type", "application/json"}, {"Trailer", "Grpc-Trailer-Content-Type"}});
  out->Write(ErrorBody(s));
  out->End({{"Grpc-Trailer-Content-Type", "application/grpc"}});
}

// A stream's error line (grpc-gateway's streamChunk with an error).
std::string StreamErrorChunk(const grpc::Status& s) {
  const int http = HttpStatusFromCode(s.error_code());
  return "{\"error\":{\"grpc_code\":" + std::to_string(static_cast<int>(s.error_code())) +
         ",\"http_code\":" + std::to_string(http) + ",\"message\":" + JsonString(s.error_message()) +
         ",\"http_status\":" + JsonString(StatusText(http)) + "}}";
}

google::protobuf::util::JsonPrintOptions PrintOptions() {
  google::protobuf::util::JsonPrintOptions o;
  o.preserve_proto_field_names = true;      // grpc-gateway's JSONPb{OrigName: true}
  o.always_print_primitive_fields = false;  // EmitDefaults false
  return o;
}

// Parses the body's first JSON value into m as etcd's gateway does
// (gojson.h: Go's rules and texts). An empty body is an empty request.
grpc::Status ParseJson(std::string_view json, Message* m) {
  std::string err = GoJsonToMessage(json, m);
  if (!err.empty()) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, err);
  return grpc::Status::OK;
}

std::string ToJson(const Message& m) {
  std::string out;
  auto st = google::protobuf::util::MessageToJsonString(m, &out, PrintOptions());
  if (!st.ok()) return "{}";
  return out;
}

grpc::ByteBuffer ToBuffer(const Message& m) {
  std::string bytes = m.SerializeAsString();
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

bool FromBuffer(const grpc::ByteBuffer& bb, Message* m) {
  std::vector<grpc::Slice> slices;
  if (!bb.Dump(&slices).ok()) return false;
  std::string bytes;
  for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return m->ParseFromString(bytes);
}

const Message* Prototype(const google::protobuf::Descriptor* d) {
  return google::protobuf::MessageFactory::generated_factory()->GetPrototype(d);
}

}  // namespace

// ------------------------------------------------------------------ calls

struct Gateway::Call {
  virtual ~Call() = default;
  virtual void Cancel() = 0;
};

namespace {

class UnaryCall final : public Gateway::Call {
 public:
  UnaryCall(Gateway* gw, const MethodDescriptor* m, std::shared_ptr<HttpResponder> out)
      : gw_(gw), method_(m), out_(std::move(out)) {}
  grpc::ClientContext ctx;
  grpc::ByteBuffer req, resp;
  void Cancel() override { ctx.TryCancel(); }
  void Done(const grpc::Status& s) {
    if (!s.ok()) {
      ReplyCallError(out_.get(), s);
    } else {
      std::unique_ptr<Message> m(Prototype(method_->output_type())->New());
      if (!FromBuffer(resp, m.get())) {
        out_->Reply(ErrorResponse(grpc::Status(grpc::StatusCode::INTERNAL, "cannot decode the response")));
      } else {
        out_->Reply(HttpResponse{
            200, {{"Content-Type", "application/json"}, {"Grpc-Metadata-Content-Type", "application/grpc"}}, ToJson(*m)});
      }
    }
  }
  Gateway* gw_;
  const MethodDescriptor* method_;
  std::shared_ptr<HttpResponder> out_;
};

class StreamCall final : public Gateway::Call,
                         public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  StreamCall(Gateway* gw, const MethodDescriptor* m, std::shared_ptr<HttpResponder> out,
             std::vector<grpc::ByteBuffer> reqs, std::function<void(StreamCall*)> on_done)
      : method_(m), out_(std::move(out)), reqs_(std::move(reqs)), on_done_(std::move(on_done)) {
    (void)gw;
  }
  grpc::ClientContext ctx;

  void Begin(grpc::GenericStub* stub, const std::string& path) {
    stub->PrepareBidiStreamingCall(&ctx, path, grpc::StubOptions(), this);
    StartRead(&in_);
    WriteNext();
    StartCall();
  }
  void Cancel() override { ctx.TryCancel(); }

  void OnWriteDone(bool ok) override {
    if (!ok) return;  // the call ended; OnDone reports
    WriteNext();
  }
  void OnReadDone(bool ok) override {
    if (!ok) return;  // the call ended; OnDone reports
    std::unique_ptr<Message> m(Prototype(method_->output_type())->New());
    if (FromBuffer(in_, m.get())) {
      if (!started_) {
        started_ = true;  // the head goes with the first message, as etcd's
        out_->StartStream(200, {{"Content-Type", "application/json"},
                                {"Grpc-Metadata-Content-Type", "application/grpc"}});
      }
      out_->Write("{\"result\":" + ToJson(*m) + "}\n");
    }
    StartRead(&in_);
  }
  void OnDone(const grpc::Status& s) override {
    if (!s.ok() && s.error_code() != grpc::StatusCode::CANCELLED) {
      if (!started_) {
        ReplyCallError(out_.get(), s);  // an error before any message: an ordinary error reply
      } else {
        out_->Write(StreamErrorChunk(s));  // the last line, without a newline
        out_->End();
      }
    } else {
      if (!started_) out_->StartStream(200, {{"Content-Type", "application/json"}});  // nothing came: empty body
      out_->End();
    }
    out_.reset();
    auto done = std::move(on_done_);
    done(this);
    delete this;
  }

 private:
  void WriteNext() {
    if (next_ < reqs_.size()) {
      StartWrite(&reqs_[next_++]);
    } else if (!writes_done_) {
      writes_done_ = true;
      StartWritesDone();  // the body's requests are all sent (grpc-gateway's CloseSend)
    }
  }

  const MethodDescriptor* method_;
  std::shared_ptr<HttpResponder> out_;
  std::vector<grpc::ByteBuffer> reqs_;
  size_t next_ = 0;
  bool writes_done_ = false;
  bool started_ = false;
  grpc::ByteBuffer in_;
  std::function<void(StreamCall*)> on_done_;
};

}  // namespace

// ------------------------------------------------------------------ gateway

Gateway::Gateway(std::shared_ptr<grpc::Channel> channel, uint64_t max_calls)
    : channel_(channel), stub_(std::move(channel)), max_calls_(std::max<uint64_t>(1, max_calls)) {}

void Gateway::Admit(std::function<void()> start) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (running_ >= max_calls_) {
      queued_.push_back(std::move(start));
      return;
    }
    ++running_;
  }
  start();
}

Gateway::~Gateway() { Shutdown(); }

const std::vector<std::string>& Gateway::Prefixes() {
  static const std::vector<std::string> p = {"/v3", "/v3beta", "/v3alpha"};
  return p;
}

uint64_t Gateway::Track(Call* c) {
  std::lock_guard<std::mutex> lk(mu_);
  const uint64_t id = next_id_++;
  live_.emplace(id, c);
  return id;
}

void Gateway::Untrack(uint64_t id) {
  std::function<void()> next;
  {
    std::lock_guard<std::mutex> lk(mu_);
    live_.erase(id);
    cv_.notify_all();
    if (!queued_.empty() && !shutdown_) {
      next = std::move(queued_.front());  // the slot passes to it
      queued_.pop_front();
    } else {
      --running_;
    }
  }
  if (next) next();
}

void Gateway::CancelIfLive(uint64_t id) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = live_.find(id);
  if (it != live_.end()) it->second->Cancel();
}

void Gateway::Shutdown() {
  std::unique_lock<std::mutex> lk(mu_);
  shutdown_ = true;
  auto dropped = std::move(queued_);  // their connections close unanswered
  queued_.clear();
  for (auto& [id, c] : live_) c->Cancel();
  cv_.wait_for(lk, std::chrono::seconds(5), [&] { return live_.empty(); });
  if (!live_.empty()) LOG_WARN("gateway: calls still running at shutdown", {{"count", static_cast<uint64_t>(live_.size())}});
}

void Gateway::Handle(HttpRequest req, std::shared_ptr<HttpResponder> out) {
  const size_t qpos = req.target.find('?');
  std::string path = req.target.substr(0, qpos);
  if (path == "/v3" || path == "/v3alpha") {
    // Go's ServeMux: "/v3" is answered with a redirect to the "/v3/" subtree.
    HttpResponse r{301, {{"Location", path + "/" + (qpos != std::string::npos ? req.target.substr(qpos) : "")}}, ""};
    out->Reply(std::move(r));
    return;
  }
  if (path == "/v3beta") {  // not rewritten by etcd (only "/v3beta/..." is): its "/" handler
    out->Reply(HttpResponse{404, {{"Content-Type", "text/plain; charset=utf-8"}, {"X-Content-Type-Options", "nosniff"}},
                            "404 page not found\n"});
    return;
  }
  std::string rest;
  for (const auto& p : Prefixes()) {
    if (path.compare(0, p.size(), p) == 0 && path.size() > p.size() && path[p.size()] == '/') {
      rest = path.substr(p.size());
      break;
    }
  }
  if (req.method == "OPTIONS") {  // etcd answers any OPTIONS (CORS preflight) with an empty 200
    out->Reply(HttpResponse{200, {}, ""});
    return;
  }
  auto route = Routes().find(rest);
  if (route == Routes().end() || req.method != "POST") {
    // grpc-gateway's ServeMux: no pattern for this path, or not for this method.
    const bool known = route != Routes().end();
    out->Reply(HttpResponse{known ? 405 : 404,
                            {{"Content-Type", "text/plain; charset=utf-8"}, {"X-Content-Type-Options", "nosniff"}},
                            known ? "Method Not Allowed\n" : "Not Found\n"});
    return;
  }
  const MethodDescriptor* m = google::protobuf::DescriptorPool::generated_pool()->FindMethodByName(route->second);
  if (m == nullptr) {
    out->Reply(ErrorResponse(grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "unknown service " + route->second)));
    return;
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (shutdown_) {
      out->Reply(ErrorResponse(grpc::Status(grpc::StatusCode::UNAVAILABLE, "etcdserver: server stopped")));
      return;
    }
  }
  const std::string grpc_path = "/" + m->service()->full_name() + "/" + m->name();
  const Message* proto = Prototype(m->input_type());

  if (!m->client_streaming() && !m->server_streaming()) {
    std::unique_ptr<Message> in(proto->New());
    grpc::Status parsed = ParseJson(req.body, in.get());
    if (!parsed.ok()) {
      out->Reply(ErrorResponse(parsed));
      return;
    }
    auto* call = new UnaryCall(this, m, out);
    call->req = ToBuffer(*in);
    Admit([this, call, out, grpc_path] {
      const uint64_t id = Track(call);
      out->OnClientGone([this, id] { CancelIfLive(id); });
      stub_.UnaryCall(&call->ctx, grpc_path, grpc::StubOptions(), &call->req, &call->resp,
                      [this, call, id](grpc::Status s) {
                        call->Done(s);
                        Untrack(id);  // before the delete: CancelIfLive must not find it
                        delete call;
                      });
    });
    return;
  }

  // A stream: every JSON value of the body is one request (Go's
  // json.Decoder); a bad first one fails the call with a plain error (code
  // 2, HTTP 500), a bad later one ends the input there.
  std::vector<grpc::ByteBuffer> reqs;
  size_t pos = 0;
  while (true) {
    std::string_view value;
    std::string err;
    if (!NextJsonValue(req.body, &pos, &value, &err) || value.empty()) {
      if (!err.empty() && reqs.empty()) {
        out->Reply(ErrorResponse(grpc::Status(grpc::StatusCode::UNKNOWN, err)));
        return;
      }
      break;
    }
    std::unique_ptr<Message> in(proto->New());
    grpc::Status parsed = ParseJson(value, in.get());
    if (!parsed.ok()) {
      if (reqs.empty()) {
        out->Reply(ErrorResponse(grpc::Status(grpc::StatusCode::UNKNOWN, parsed.error_message())));
        return;
      }
      break;
    }
    reqs.push_back(ToBuffer(*in));
    if (!m->client_streaming()) break;  // a server stream takes one request
  }
  if (!m->client_streaming() && reqs.empty()) {
    std::unique_ptr<Message> in(proto->New());
    reqs.push_back(ToBuffer(*in));  // a server stream takes exactly one request
  }
  if (!m->client_streaming() && reqs.size() > 1) reqs.resize(1);
  auto shared_reqs = std::make_shared<std::vector<grpc::ByteBuffer>>(std::move(reqs));
  Admit([this, m, out, shared_reqs, grpc_path] {
    auto id = std::make_shared<uint64_t>(0);
    auto* call = new StreamCall(this, m, out, std::move(*shared_reqs), [this, id](StreamCall*) { Untrack(*id); });
    *id = Track(call);
    out->OnClientGone([this, i = *id] { CancelIfLive(i); });
    call->Begin(&stub_, grpc_path);
  });
}

}  // namespace engram::server::gateway
