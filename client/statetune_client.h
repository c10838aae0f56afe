// Client library for statetune-serve: generation streaming, adapter management and health, with the
// API key sent as `authorization: Bearer` metadata and optional TLS. Used by the `statetune` CLI, the
// integration tests and the load generator. Calls are blocking and thread-safe (one channel, many
// concurrent calls).
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "grpc/health/v1/health.grpc.pb.h"
#include "statetune/v1/adapters.grpc.pb.h"
#include "statetune/v1/generation.grpc.pb.h"

namespace statetune::client {

struct ClientOptions {
  // host:port, or a gRPC resolver target: dns:///name:port (e.g. a headless Service) or
  // ipv4:host:port,host:port; those are balanced over every address with round_robin.
  std::string address = "127.0.0.1:50051";  // STATETUNE_ADDR
  std::string api_key;                      // STATETUNE_API_KEY
  bool tls = false;
  std::string tls_ca_file;  // PEM roots for TLS (empty: the system roots); implies tls
  std::string tls_server_name;  // override the name checked against the certificate
  std::chrono::milliseconds timeout{0};  // per-call deadline; 0 = none
};

struct GenerateResult {
  grpc::Status status;
  std::string text;                // every chunk's text, concatenated
  std::vector<int64_t> token_ids;  // every chunk's ids
  int chunks = 0;
  bool has_done = false;
  statetune::v1::GenerateDone done;
  double first_chunk_seconds = 0;  // client-side: call start -> first chunk
  double total_seconds = 0;
  std::vector<double> chunk_times;  // client-side seconds since the call started, per chunk
};

// Whether `address` is a resolver target (dns:, ipv4:, ipv6:) that the client balances round_robin.
bool uses_resolver_scheme(const std::string& address);

class Client {
 public:
  explicit Client(ClientOptions options);

  // Streams one generation. `on_chunk` (optional) sees each chunk as it arrives; returning false
  // cancels the call (the server drops the request from its batch at once).
  GenerateResult generate(const statetune::v1::GenerateRequest& request,
                          const std::function<bool(const statetune::v1::TokenChunk&)>& on_chunk = {});

  // Uploads an adapter file's bytes in chunks of `chunk_bytes`, computing size and SHA-256.
  grpc::Status upload_adapter(const std::string& name, const std::string& file_bytes,
                              statetune::v1::AdapterInfo* info, const std::string& tenant = "",
                              size_t chunk_bytes = size_t{1} << 20);
  // Same with a header the caller fills in (tests send wrong sizes or checksums on purpose).
  grpc::Status upload_adapter_raw(const statetune::v1::UploadHeader& header, const std::string& file_bytes,
                                  statetune::v1::AdapterInfo* info, size_t chunk_bytes = size_t{1} << 20);
  grpc::Status list_adapters(statetune::v1::ListAdaptersResponse* out, const std::string& tenant = "");
  grpc::Status get_adapter(const std::string& name, statetune::v1::AdapterInfo* out, const std::string& tenant = "");
  grpc::Status delete_adapter(const std::string& name, uint32_t* versions_deleted, const std::string& tenant = "");
  // grpc.health.v1 Check of `service` ("" = the whole server).
  grpc::Status health(const std::string& service, grpc::health::v1::HealthCheckResponse::ServingStatus* status);

  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }

 private:
  void prepare(grpc::ClientContext& ctx) const;

  ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<statetune::v1::Generation::Stub> generation_;
  std::unique_ptr<statetune::v1::Adapters::Stub> adapters_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
};

// "NOT_FOUND", "RESOURCE_EXHAUSTED", ...
std::string status_code_name(grpc::StatusCode code);
std::string read_binary_file(const std::string& path);  // throws std::runtime_error

}  // namespace statetune::client
