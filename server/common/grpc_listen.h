// How both services open their gRPC port: TLS when the options name a certificate and key (read
// with a size bound), plaintext otherwise; a port that cannot be bound stops the start with a message
// naming the address. And the ready file the integration tests and the deployment wait on.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>

#include "server/common/service_options.h"

namespace statetune::common {

// Adds the listening port of `o` to `builder` and starts it; `*port` is the port bound (port 0
// resolved). Throws std::runtime_error when the TLS files cannot be read or the address not bound.
std::unique_ptr<grpc::Server> listen_and_start(grpc::ServerBuilder& builder, const ServiceOptions& o, int* port);

// Writes {"port", "metrics_port", "http_port" (0: none), "pid"} to o.ready_file (when set) as one durable file, so a reader
// never sees half of it.
void write_ready_file(const ServiceOptions& o, int port, int metrics_port, int http_port = 0);

}  // namespace statetune::common
