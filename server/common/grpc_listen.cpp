#include "server/common/grpc_listen.h"

#include <unistd.h>

#include <nlohmann/json.hpp>
#include <stdexcept>

#include "server/engine/util/durable_file.h"

namespace statetune::common {
namespace {

// PEM files hold a key and a certificate chain: a few KiB, never megabytes.
constexpr size_t kMaxPemBytes = size_t{1} << 20;

std::string read_pem(const std::string& path, const char* what) {
  try {
    return engine::read_file(path, kMaxPemBytes);
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("cannot read ") + what + ": " + e.what());
  }
}

std::shared_ptr<grpc::ServerCredentials> credentials(const ServiceOptions& o) {
  if (!o.tls()) return grpc::InsecureServerCredentials();
  if (o.tls_cert_file.empty() || o.tls_key_file.empty()) {
    throw std::runtime_error("TLS needs both --tls-cert and --tls-key");
  }
  grpc::SslServerCredentialsOptions ssl;
  ssl.pem_key_cert_pairs.push_back(
      {read_pem(o.tls_key_file, "the TLS key"), read_pem(o.tls_cert_file, "the TLS certificate")});
  return grpc::SslServerCredentials(ssl);
}

}  // namespace

std::unique_ptr<grpc::Server> listen_and_start(grpc::ServerBuilder& builder, const ServiceOptions& o, int* port) {
  builder.AddListeningPort(o.listen, credentials(o), port);
  auto server = builder.BuildAndStart();
  if (!server || *port == 0) throw std::runtime_error("cannot listen on " + o.listen + " (choose another --listen)");
  return server;
}

void write_ready_file(const ServiceOptions& o, int port, int metrics_port, int http_port) {
  if (o.ready_file.empty()) return;
  const nlohmann::json j{{"port", port},
                         {"metrics_port", metrics_port},
                         {"http_port", http_port},
                         {"pid", static_cast<int64_t>(::getpid())}};
  engine::write_file_durably(o.ready_file, j.dump() + "\n");
}

}  // namespace statetune::common
