#include "server/serving/rpc_status_interceptor.h"

#include <string>

#include "server/common/status_codes.h"

namespace statetune::serving {
namespace {
using grpc::Status;
using grpc::StatusCode;
using grpc::experimental::InterceptionHookPoints;

class RpcStatusInterceptor : public grpc::experimental::Interceptor {
 public:
  RpcStatusInterceptor(ServingMetrics& metrics, const char* full_method) : metrics_(metrics) {
    // "/statetune.v1.Adapters/GetAdapter" -> "GetAdapter", the label RpcRunner's logs use too.
    const std::string m = full_method != nullptr ? full_method : "";
    method_ = m.substr(m.rfind('/') + 1);
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      Status status = methods->GetSendStatus();
      // Every status this server's own code sends has a message; an empty INTERNAL comes from the
      // library's request parser (proto3 rejects a `string` field that is not UTF-8).
      if (status.error_code() == StatusCode::INTERNAL && status.error_message().empty()) {
        status = Status(StatusCode::INVALID_ARGUMENT,
                        "the request is not a valid " + method_ +
                            " message: malformed protobuf, or a string field (a name, version or tenant) "
                            "that is not valid UTF-8");
        methods->ModifySendStatus(status);
      }
      if (!status.ok()) metrics_.rpc_failed(method_, common::status_code_name(status.error_code()));
    }
    methods->Proceed();
  }

 private:
  ServingMetrics& metrics_;
  std::string method_;
};

}  // namespace

grpc::experimental::Interceptor* RpcStatusInterceptorFactory::CreateServerInterceptor(
    grpc::experimental::ServerRpcInfo* info) {
  return new RpcStatusInterceptor(metrics_, info->method());
}

}  // namespace statetune::serving
