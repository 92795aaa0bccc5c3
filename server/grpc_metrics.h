// gRPC server metrics: a server interceptor counting every RPC into a
// kv::RpcProbe with go-grpc-prometheus semantics (etcd's grpc_server_*
// families, reference §1.6), plus the protobuf bytes of every message
// (etcd_network_client_grpc_{sent,received}_bytes_total) and
// etcd_server_client_requests_total.
//
// Per RPC of a method in kv::kRpcMethods (others are not counted):
//   started       +1 when the call is matched to its method (before the handler)
//   msg_received  +1 per request message received (unary: 1)
//   msg_sent      +1 per response message handed to gRPC (unary: 1, on OK only)
//   handled       +1 exactly once, with the final status code:
//                   - the code of the status the server sends, or
//                   - Canceled if the client cancelled the call (cancel,
//                     deadline, connection lost) before the server sent its
//                     status, or if the call ended with no status at all;
//                 so a client that walks away from a Watch stream is counted
//                 as Canceled whatever the reactor answers afterwards.
//   handling_seconds  from start to that moment.
// Bytes: ByteSizeLong of each request after it is parsed; the serialized
// length of each response (the interceptor serializes it once, gRPC sends
// those bytes).
//
// The interceptor runs before the service handlers, so requests they reject
// are counted (etcd >= 3.5.28 / 3.6.9 order).
#pragma once

#include <grpcpp/server_builder.h>

#include "src/kv/rpc_probe.h"

namespace engram::server {

// Installs the interceptor on builder (before BuildAndStart). probe must
// outlive the server. Replaces any interceptor creators set before.
void InstallGrpcMetrics(grpc::ServerBuilder& builder, kv::RpcProbe* probe);

}  // namespace engram::server
