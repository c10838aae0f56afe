#include "client/statetune_client.h"

#include <fstream>
#include <sstream>
#include <stdexcept>

#include "server/engine/util/sha256.h"

namespace statetune::client {
namespace v1 = ::statetune::v1;
using Clock = std::chrono::steady_clock;

std::string read_binary_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

std::string status_code_name(grpc::StatusCode code) {
  static const char* names[] = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
                                "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
                                "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
                                "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"};
  const int i = static_cast<int>(code);
  return i >= 0 && i < 17 ? names[i] : "CODE_" + std::to_string(i);
}

bool uses_resolver_scheme(const std::string& address) {
  for (const char* scheme : {"dns:", "ipv4:", "ipv6:"}) {
    if (address.rfind(scheme, 0) == 0) return true;
  }
  return false;
}

Client::Client(ClientOptions options) : options_(std::move(options)) {
  std::shared_ptr<grpc::ChannelCredentials> creds;
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  if (options_.tls || !options_.tls_ca_file.empty()) {
    grpc::SslCredentialsOptions ssl;
    if (!options_.tls_ca_file.empty()) ssl.pem_root_certs = read_binary_file(options_.tls_ca_file);
    creds = grpc::SslCredentials(ssl);
    if (!options_.tls_server_name.empty()) args.SetSslTargetNameOverride(options_.tls_server_name);
  } else {
    creds = grpc::InsecureChannelCredentials();
  }
  // gRPC balances per connection, and its default policy (pick_first) sends every call to the first
  // address a name resolves to. A resolver target naming several replicas (dns:///headless-service:port,
  // or ipv4:host:port,host:port) gets round_robin: calls spread over every replica.
  if (uses_resolver_scheme(options_.address)) args.SetLoadBalancingPolicyName("round_robin");
  channel_ = grpc::CreateCustomChannel(options_.address, creds, args);
  generation_ = v1::Generation::NewStub(channel_);
  adapters_ = v1::Adapters::NewStub(channel_);
  health_ = grpc::health::v1::Health::NewStub(channel_);
}

void Client::prepare(grpc::ClientContext& ctx) const {
  if (!options_.api_key.empty()) ctx.AddMetadata("authorization", "Bearer " + options_.api_key);
  if (options_.timeout.count() > 0) ctx.set_deadline(std::chrono::system_clock::now() + options_.timeout);
}

GenerateResult Client::generate(const v1::GenerateRequest& request,
                                const std::function<bool(const v1::TokenChunk&)>& on_chunk) {
  GenerateResult out;
  grpc::ClientContext ctx;
  prepare(ctx);
  const auto t0 = Clock::now();
  auto reader = generation_->Generate(&ctx, request);
  v1::GenerateResponse resp;
  bool cancelled = false;
  while (reader->Read(&resp)) {
    if (resp.has_chunk()) {
      const double t = std::chrono::duration<double>(Clock::now() - t0).count();
      if (out.chunks == 0) out.first_chunk_seconds = t;
      out.chunk_times.push_back(t);
      ++out.chunks;
      out.text += resp.chunk().text();
      out.token_ids.insert(out.token_ids.end(), resp.chunk().token_ids().begin(), resp.chunk().token_ids().end());
      if (on_chunk && !cancelled && !on_chunk(resp.chunk())) {
        cancelled = true;
        ctx.TryCancel();
      }
    } else if (resp.has_done()) {
      out.has_done = true;
      out.done = resp.done();
    }
  }
  out.status = reader->Finish();
  out.total_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return out;
}

grpc::Status Client::upload_adapter(const std::string& name, const std::string& file_bytes, v1::AdapterInfo* info,
                                    const std::string& tenant, size_t chunk_bytes) {
  v1::UploadHeader header;
  header.set_name(name);
  header.set_total_bytes(file_bytes.size());
  header.set_sha256(engine::Sha256::hex(file_bytes));
  header.set_tenant(tenant);
  return upload_adapter_raw(header, file_bytes, info, chunk_bytes);
}

grpc::Status Client::upload_adapter_raw(const v1::UploadHeader& header, const std::string& file_bytes,
                                        v1::AdapterInfo* info, size_t chunk_bytes) {
  grpc::ClientContext ctx;
  prepare(ctx);
  v1::AdapterInfo scratch;
  auto writer = adapters_->UploadAdapter(&ctx, info ? info : &scratch);
  chunk_bytes = std::max<size_t>(chunk_bytes, 1);
  size_t offset = 0;
  bool first = true;
  while (first || offset < file_bytes.size()) {
    v1::UploadAdapterRequest msg;
    if (first) *msg.mutable_header() = header;
    const size_t n = std::min(chunk_bytes, file_bytes.size() - offset);
    msg.set_data(file_bytes.substr(offset, n));
    offset += n;
    first = false;
    if (!writer->Write(msg)) break;  // the server answered early; Finish() has its status
  }
  writer->WritesDone();
  return writer->Finish();
}

grpc::Status Client::list_adapters(v1::ListAdaptersResponse* out, const std::string& tenant) {
  grpc::ClientContext ctx;
  prepare(ctx);
  v1::ListAdaptersRequest req;
  req.set_tenant(tenant);
  return adapters_->ListAdapters(&ctx, req, out);
}

grpc::Status Client::get_adapter(const std::string& name, v1::AdapterInfo* out, const std::string& tenant) {
  grpc::ClientContext ctx;
  prepare(ctx);
  v1::GetAdapterRequest req;
  req.set_name(name);
  req.set_tenant(tenant);
  return adapters_->GetAdapter(&ctx, req, out);
}

grpc::Status Client::delete_adapter(const std::string& name, uint32_t* versions_deleted, const std::string& tenant) {
  grpc::ClientContext ctx;
  prepare(ctx);
  v1::DeleteAdapterRequest req;
  req.set_name(name);
  req.set_tenant(tenant);
  v1::DeleteAdapterResponse resp;
  grpc::Status st = adapters_->DeleteAdapter(&ctx, req, &resp);
  if (versions_deleted) *versions_deleted = resp.versions_deleted();
  return st;
}

grpc::Status Client::health(const std::string& service, grpc::health::v1::HealthCheckResponse::ServingStatus* status) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() +
                   (options_.timeout.count() > 0 ? options_.timeout : std::chrono::milliseconds(5000)));
  grpc::health::v1::HealthCheckRequest req;
  req.set_service(service);
  grpc::health::v1::HealthCheckResponse resp;
  grpc::Status st = health_->Check(&ctx, req, &resp);
  if (status) *status = resp.status();
  return st;
}

}  // namespace statetune::client
