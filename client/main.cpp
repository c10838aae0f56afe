// statetune: command-line client for statetune-serve.
//   statetune generate --prompt TEXT [--adapter NAME[@VERSION]] [--max-tokens N] [--temperature T]
//                      [--top-k K] [--top-p P] [--seed S] [--stop STRING]
//   statetune adapters upload --name NAME --file PATH
//   statetune adapters list | get --name NAME | delete --name NAME
//   statetune health [--service NAME]
//   statetune datasets ... | jobs ...   (statetune-train; see client/training_commands.cpp)
//   statetune hash-key KEY          (prints the SHA-256 to put in the server's tenants file)
// Common flags (and their environment fallbacks): --addr (STATETUNE_ADDR), --api-key
// (STATETUNE_API_KEY), --tls (STATETUNE_TLS), --tls-ca (STATETUNE_TLS_CA), --tenant (admin key only),
// --timeout seconds.
#include <cstdio>
#include <cstring>
#include <string>

#include "client/statetune_client.h"
#include "client/training_commands.h"
#include "server/common/config.h"
#include "server/engine/util/durable_file.h"
#include "server/engine/util/sha256.h"

using namespace statetune;
namespace v1 = ::statetune::v1;

namespace {

void add_common(common::FlagSet& f) {
  f.add("addr", "127.0.0.1:50051", "server address host:port");
  f.add("api-key", "", "API key (sent as authorization: Bearer)");
  f.add_bool("tls", false, "use TLS (system roots unless --tls-ca)");
  f.add("tls-ca", "", "PEM file of the CA that signed the server certificate (implies --tls)");
  f.add("tls-server-name", "", "name to check the server certificate against (default: from --addr)");
  f.add("timeout", "0", "per-call deadline in seconds (0: none)");
  f.add("tenant", "", "admin key only: the tenant to act on");
}

client::ClientOptions options_from(const common::FlagSet& f) {
  client::ClientOptions o;
  o.address = f.str("addr");
  o.api_key = f.str("api-key");
  o.tls = f.boolean("tls");
  o.tls_ca_file = f.str("tls-ca");
  o.tls_server_name = f.str("tls-server-name");
  o.timeout = std::chrono::milliseconds(static_cast<int64_t>(f.number("timeout") * 1000));
  return o;
}

int fail(const grpc::Status& st) {
  std::fprintf(stderr, "statetune: %s: %s\n", client::status_code_name(st.error_code()).c_str(),
               st.error_message().c_str());
  return st.error_code() == grpc::StatusCode::UNAVAILABLE ? 3 : 2;
}

void print_info(const v1::AdapterInfo& info) {
  std::printf("%s/%s current=%s\n", info.tenant().c_str(), info.name().c_str(), info.current_version().c_str());
  for (const auto& v : info.versions()) {
    std::printf("  version %s%s  %lld bytes  created %lld  methods", v.version().c_str(), v.current() ? " *" : "",
                static_cast<long long>(v.size_bytes()), static_cast<long long>(v.created_unix()));
    for (const auto& m : v.methods()) std::printf(" %s", m.c_str());
    std::printf("\n");
  }
}

const char* finish_name(v1::FinishReason r) {
  switch (r) {
    case v1::FINISH_REASON_STOP: return "stop";
    case v1::FINISH_REASON_LENGTH: return "length";
    case v1::FINISH_REASON_CANCELLED: return "cancelled";
    default: return "unspecified";
  }
}

int cmd_generate(int argc, char** argv) {
  common::FlagSet f("statetune generate", "Stream a completion to the terminal.");
  add_common(f);
  f.add("prompt", "", "prompt text [required]");
  f.add("adapter", "", "adapter NAME or NAME@VERSION (default: the base model)");
  f.add("max-tokens", "0", "tokens to generate (0: the server's default)");
  f.add("temperature", "", "0 = greedy (default 1)");
  f.add("top-k", "0", "sample from the k most likely tokens (0: all)");
  f.add("top-p", "", "nucleus sampling mass in (0, 1]");
  f.add("seed", "", "seed of the request's generator");
  f.add("stop", "", "stop string");
  f.add_bool("no-eos", false, "do not stop at the end-of-sequence token");
  if (!f.parse(argc, argv, 2)) {
    std::fputs(f.help().c_str(), stdout);
    return 0;
  }
  if (f.str("prompt").empty()) throw std::invalid_argument("--prompt is required");
  v1::GenerateRequest req;
  req.set_text(f.str("prompt"));
  if (const std::string a = f.str("adapter"); !a.empty()) {
    const auto at = a.find('@');
    req.mutable_adapter()->set_name(a.substr(0, at));
    if (at != std::string::npos) req.mutable_adapter()->set_version(a.substr(at + 1));
  }
  req.set_max_tokens(static_cast<uint32_t>(f.integer("max-tokens")));
  if (f.get("temperature")) req.set_temperature(static_cast<float>(f.number("temperature")));
  req.set_top_k(static_cast<uint32_t>(f.integer("top-k")));
  if (f.get("top-p")) req.set_top_p(static_cast<float>(f.number("top-p")));
  if (f.get("seed")) req.set_seed(static_cast<uint64_t>(f.integer("seed")));
  if (!f.str("stop").empty()) req.add_stop(f.str("stop"));
  if (f.boolean("no-eos")) req.set_stop_at_eos(false);
  client::Client c(options_from(f));
  auto result = c.generate(req, [](const v1::TokenChunk& chunk) {
    std::fwrite(chunk.text().data(), 1, chunk.text().size(), stdout);
    std::fflush(stdout);
    return true;
  });
  std::printf("\n");
  if (!result.status.ok()) return fail(result.status);
  const auto& u = result.done.usage();
  std::fprintf(stderr, "[%s; %u prompt + %u generated tokens; ttft %.3f s; total %.3f s; request %s]\n",
               finish_name(result.done.finish_reason()), u.prompt_tokens(), u.completion_tokens(),
               u.time_to_first_token_seconds(), u.total_seconds(), result.done.request_id().c_str());
  return 0;
}

int cmd_adapters(int argc, char** argv) {
  if (argc < 3) throw std::invalid_argument("usage: statetune adapters upload|list|get|delete [flags]");
  const std::string sub = argv[2];
  common::FlagSet f("statetune adapters " + sub, "Manage the calling tenant's adapters.");
  add_common(f);
  f.add("name", "", "adapter name");
  f.add("file", "", "adapter file to upload (safetensors from statetune-engine init-adapter or the trainer)");
  if (!f.parse(argc, argv, 3)) {
    std::fputs(f.help().c_str(), stdout);
    return 0;
  }
  client::Client c(options_from(f));
  const std::string tenant = f.str("tenant");
  if (sub == "list") {
    v1::ListAdaptersResponse resp;
    if (auto st = c.list_adapters(&resp, tenant); !st.ok()) return fail(st);
    for (const auto& a : resp.adapters()) print_info(a);
    if (resp.adapters_size() == 0) std::printf("(no adapters)\n");
    return 0;
  }
  if (f.str("name").empty()) throw std::invalid_argument("--name is required");
  if (sub == "upload") {
    if (f.str("file").empty()) throw std::invalid_argument("--file is required");
    v1::AdapterInfo info;
    if (auto st = c.upload_adapter(f.str("name"), engine::read_file(f.str("file")), &info, tenant); !st.ok()) {
      return fail(st);
    }
    print_info(info);
    return 0;
  }
  if (sub == "get") {
    v1::AdapterInfo info;
    if (auto st = c.get_adapter(f.str("name"), &info, tenant); !st.ok()) return fail(st);
    print_info(info);
    return 0;
  }
  if (sub == "delete") {
    uint32_t n = 0;
    if (auto st = c.delete_adapter(f.str("name"), &n, tenant); !st.ok()) return fail(st);
    std::printf("deleted %u version(s)\n", n);
    return 0;
  }
  throw std::invalid_argument("unknown adapters command '" + sub + "' (upload, list, get, delete)");
}

int cmd_health(int argc, char** argv) {
  common::FlagSet f("statetune health", "Ask the server's grpc.health.v1 service.");
  add_common(f);
  f.add("service", "", "service name (default: the whole server)");
  if (!f.parse(argc, argv, 2)) {
    std::fputs(f.help().c_str(), stdout);
    return 0;
  }
  client::Client c(options_from(f));
  grpc::health::v1::HealthCheckResponse::ServingStatus status{};
  if (auto st = c.health(f.str("service"), &status); !st.ok()) return fail(st);
  std::printf("%s\n", grpc::health::v1::HealthCheckResponse::ServingStatus_Name(status).c_str());
  return status == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const char* usage =
      "usage: statetune generate|adapters|health|datasets|jobs|hash-key ... (--help on each for its flags)\n";
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    std::fputs(usage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 64 : 0;
  }
  const std::string cmd = argv[1];
  try {
    if (cmd == "generate") return cmd_generate(argc, argv);
    if (cmd == "adapters") return cmd_adapters(argc, argv);
    if (cmd == "health") return cmd_health(argc, argv);
    if (cmd == "datasets") return cli::cmd_datasets(argc, argv);
    if (cmd == "jobs") return cli::cmd_jobs(argc, argv);
    if (cmd == "hash-key") {
      if (argc != 3) throw std::invalid_argument("usage: statetune hash-key KEY");
      std::printf("%s\n", engine::Sha256::hex(argv[2]).c_str());
      return 0;
    }
    std::fputs(usage, stderr);
    return 64;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "statetune: %s\n", e.what());
    return 64;
  }
}
