// Request JSON decoded the way etcd 3.4's gateway decodes it: Go's
// encoding/json scanner and golang/protobuf's jsonpb Unmarshaler with
// unknown fields allowed (grpc-gateway 1.6.4). protobuf's own JSON parser is
// both stricter and more lenient than that, so the gateway uses this one
// (docs/design/gateway.md section 4 lists the rules and Go's error texts):
//   - only the first JSON value of the body is read; whitespace alone (or
//     `null`) is an empty request;
//   - a field matches by its .proto name, else its lowerCamel JSON name;
//     unknown fields are ignored; null means the default;
//   - bytes: a string in standard padded base64 (CR and LF skipped);
//     int64/uint64/int32/uint32: a number, or a string holding one (no
//     fraction or exponent); bool: true/false only; enum: a known value name,
//     or any integer; message: an object; repeated: an array;
//   - errors carry Go's texts ("invalid character 'x' looking for beginning
//     of value", "unexpected EOF", "json: cannot unmarshal string into Go
//     value of type bool", "illegal base64 data at input byte 4", "unknown
//     value \"BOGUS\" for enum etcdserverpb.RangeRequest_SortOrder", ...).
#pragma once

#include <string>
#include <string_view>

#include <google/protobuf/message.h>

namespace engram::server::gateway {

// Fills m from the first JSON value of body. Returns "" on success, else
// Go's error text (m may be partly filled).
std::string GoJsonToMessage(std::string_view body, google::protobuf::Message* m);

// The first JSON value of body and where it ends: for request streams, whose
// body holds several. *error gets Go's syntax error if the next value is
// malformed ("" at the clean end of the body: *value is then empty).
bool NextJsonValue(std::string_view body, size_t* pos, std::string_view* value, std::string* error);

}  // namespace engram::server::gateway
