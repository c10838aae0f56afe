// The one place where a Training RPC's outcome becomes what the client sees: every exception a
// handler lets escape is mapped to a precise status with a bounded message (gRPC would otherwise
// answer UNKNOWN with the raw what(), which may name server paths), and every failed RPC is
// logged and counted by method and code.
#pragma once

#include <grpcpp/grpcpp.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>

#include <functional>
#include <string>

namespace statetune::training {

// Runs `handler` as RPC `method`. Exceptions map to:
//   std::invalid_argument (engine::JsonInputError too) -> INVALID_ARGUMENT with its (capped) message;
//   StorageError that is full                          -> RESOURCE_EXHAUSTED "storage is full";
//   anything else                                      -> INTERNAL naming only a request id (the
//                                                         details go to the log).
// A handler's own non-OK status is kept (UNKNOWN becomes INTERNAL) with its message capped.
// Every non-OK result increments `errors{method, code}` and is logged.
grpc::Status run_rpc(const char* method, prometheus::Family<prometheus::Counter>& errors,
                     const std::function<grpc::Status()>& handler);

// `text` cut to at most `max_bytes` (on a UTF-8 boundary), marked when cut.
std::string cap_message(const std::string& text, size_t max_bytes = 2048);

}  // namespace statetune::training
