// What every Training RPC does around its own work: exceptions map to a precise status through the
// services' one mapping (server/common/grpc_status.h; a StorageError that is full becomes
// RESOURCE_EXHAUSTED "storage is full"), the message is bounded, and every failed RPC is logged and
// counted by method and code.
#pragma once

#include <grpcpp/grpcpp.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>

#include <functional>

namespace statetune::training {

// Runs `handler` as RPC `method`. Exceptions map to:
//   StorageError that is full          -> RESOURCE_EXHAUSTED "storage is full" (other StorageErrors
//                                         INTERNAL; both name only a request id, details in the log);
//   anything else                      -> common::to_grpc_status (engine error kinds,
//                                         std::invalid_argument, INTERNAL with a request id).
// A handler's own non-OK status is kept (UNKNOWN becomes INTERNAL) with its message bounded.
// Every non-OK result increments `errors{method, code}` (lowercase code name) and is logged.
grpc::Status run_rpc(const char* method, prometheus::Family<prometheus::Counter>& errors,
                     const std::function<grpc::Status()>& handler);

}  // namespace statetune::training
