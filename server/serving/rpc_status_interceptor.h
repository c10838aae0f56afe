// Sees the final status of every RPC the server answers, whoever produced it: a handler (through
// RpcRunner), or gRPC itself before any handler ran (a request it could not parse, no thread left
// under the thread quota, an unknown method). It counts every failure in
// statetune_rpc_errors_total{method,code}, and gives gRPC's own parse failure, which the library
// answers as INTERNAL with an empty message, its real code and a message.
#pragma once

#include <grpcpp/support/server_interceptor.h>

#include "server/serving/serving_metrics.h"

namespace statetune::serving {

class RpcStatusInterceptorFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit RpcStatusInterceptorFactory(ServingMetrics& metrics) : metrics_(metrics) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(grpc::experimental::ServerRpcInfo* info) override;

 private:
  ServingMetrics& metrics_;
};

}  // namespace statetune::serving
