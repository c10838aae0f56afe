// statetune-serve: see server.h. Every flag also reads STATETUNE_<FLAG> from the environment.
#include <ATen/Parallel.h>

#include <cstdio>
#include <exception>
#include <thread>

#include "kernels/cpu_level.h"
#include "server/engine/model/default_model.h"
#include "server/common/config.h"
#include "server/common/logging.h"
#include "server/common/shutdown.h"
#include "server/http/http_flags.h"
#include "server/serving/server.h"

using namespace statetune;

int main(int argc, char** argv) {
  common::FlagSet flags("statetune-serve", "Serve a Mamba model with per-tenant adapters over gRPC.");
  flags.add("listen", "127.0.0.1:50051", "gRPC address host:port (port 0 picks a free one)");
  flags.add("metrics-listen", "127.0.0.1:9090", "Prometheus /metrics address host:port; 'off' disables it");
  flags.add("model", "", "model folder (config.json + model.safetensors); default: the shipped models/default");
  flags.add("tokenizer", "", "tokenizer.json (default: <model>/tokenizer.json)");
  flags.add("adapters-dir", "adapters", "adapter store folder (created if missing; reloaded on restart)");
  flags.add("database", "",
            "shared mode: PostgreSQL URL (postgresql://user@host:port/db) holding every replica's adapters; "
            "--adapters-dir then only caches their bytes (default: the local adapter store)");
  flags.add("database-password-file", "", "file whose first line is the --database password");
  flags.add("database-pool-size", "4", "connections to --database for requests");
  flags.add("tenants-file", "", "tenants and hashed API keys, JSON (see server/serving/auth.h) [required]");
  flags.add("tls-cert", "", "PEM server certificate chain (enables TLS with --tls-key)");
  flags.add("tls-key", "", "PEM private key for --tls-cert");
  flags.add("device", "cpu", "cpu | cuda | cuda:N");
  flags.add("dtype", "f32", "compute dtype of the weights: f32 | bf16");
  flags.add("threads", "0", "intra-op CPU threads (0: one per core)");
  flags.add("max-batch", "32", "most requests decoded together");
  flags.add("queue-size", "64", "most waiting requests; beyond it Generate answers RESOURCE_EXHAUSTED");
  flags.add("max-prefill-tokens", "4096", "padded prompt tokens prefilled together per step");
  flags.add("max-prompt-tokens", "2048", "longest prompt accepted");
  flags.add("max-new-tokens", "256", "largest max_tokens accepted (and the default)");
  flags.add("max-request-bytes", "1MiB", "largest Generate request");
  flags.add("max-upload-bytes", "64MiB", "largest adapter upload (never above the largest adapter file the base can have)");
  flags.add("max-concurrent-uploads", "8", "adapter uploads running at once; beyond it RESOURCE_EXHAUSTED");
  flags.add("max-concurrent-uploads-per-tenant", "2", "adapter uploads one API key's tenant may run at once");
  flags.add("upload-idle-seconds", "30", "an adapter upload that sends nothing for this long is cancelled");
  flags.add("max-rpc-threads", "0", "gRPC handler threads (0: max-batch + queue-size + max-concurrent-uploads + 32)");
  flags.add("adapter-pool-bytes", "256MiB", "device memory for resident adapters (LRU beyond it)");
  flags.add("adapter-slots", "0", "cap on resident adapters (0: as many as --adapter-pool-bytes holds)");
  flags.add("tenant-adapter-bytes", "1GiB", "most adapter bytes (every version) one tenant may store");
  flags.add("tenant-adapters", "256", "most adapters one tenant may store");
  flags.add("adapter-versions", "64", "most versions kept per adapter (the current one included)");
  flags.add_bool("prune-adapter-versions", false,
                 "at --adapter-versions, delete the oldest non-current version instead of refusing the upload");
  flags.add("drain-seconds", "30", "on SIGTERM: how long running requests may finish before being cancelled");
  flags.add("ready-file", "", "write {port, metrics_port, http_port, pid} as JSON here once listening");
  http::add_http_flags(flags);
  flags.add("log-format", "text", "text | json");
  flags.add("log-level", "info", "trace | debug | info | warn | error");
  try {
    if (!flags.parse(argc, argv)) {
      std::fputs(flags.help().c_str(), stdout);
      return 0;
    }
    common::setup_logging(common::parse_log_format(flags.str("log-format")), flags.str("log-level"));
    serving::ServerOptions o;
    o.listen = flags.str("listen");
    o.metrics_listen = flags.str("metrics-listen") == "off" ? "" : flags.str("metrics-listen");
    o.model_dir = engine::model_dir_or_default(flags.str("model"));
    o.tokenizer_path = flags.str("tokenizer");
    o.adapters_dir = flags.str("adapters-dir");
    o.database_url = flags.str("database");
    o.database_password_file = flags.str("database-password-file");
    o.database_pool_size = flags.integer("database-pool-size");
    if (o.database_pool_size < 1) throw std::invalid_argument("--database-pool-size must be >= 1");
    o.tenants_file = flags.str("tenants-file");
    o.tls_cert_file = flags.str("tls-cert");
    o.tls_key_file = flags.str("tls-key");
    o.device = flags.str("device");
    o.dtype = flags.str("dtype");
    o.max_batch = flags.integer("max-batch");
    o.queue_size = flags.integer("queue-size");
    o.max_prefill_tokens = flags.integer("max-prefill-tokens");
    o.max_prompt_tokens = flags.integer("max-prompt-tokens");
    o.max_new_tokens = flags.integer("max-new-tokens");
    o.max_request_bytes = flags.bytes("max-request-bytes");
    o.max_upload_bytes = flags.bytes("max-upload-bytes");
    o.max_uploads = flags.integer("max-concurrent-uploads");
    o.max_uploads_per_tenant = flags.integer("max-concurrent-uploads-per-tenant");
    o.upload_idle_timeout = std::chrono::milliseconds(static_cast<int64_t>(flags.number("upload-idle-seconds") * 1000));
    o.max_rpc_threads = flags.integer("max-rpc-threads");
    o.adapter_pool_bytes = flags.bytes("adapter-pool-bytes");
    o.adapter_slots = flags.integer("adapter-slots");
    o.tenant_adapter_bytes = flags.bytes("tenant-adapter-bytes");
    o.tenant_adapters = flags.integer("tenant-adapters");
    o.adapter_versions = flags.integer("adapter-versions");
    o.prune_adapter_versions = flags.boolean("prune-adapter-versions");
    o.drain_timeout = std::chrono::milliseconds(static_cast<int64_t>(flags.number("drain-seconds") * 1000));
    o.ready_file = flags.str("ready-file");
    o.http = http::http_options_from_flags(flags, o.max_request_bytes, /*auto_threads=*/o.max_batch + o.queue_size + 16);
    o.http.tls_cert_file = o.tls_cert_file;
    o.http.tls_key_file = o.tls_key_file;
    o.model_id = http::model_id_from_flags(flags, o.model_dir);
    o.chat_template = http::chat_template_from_flags(flags, o.model_dir);
    if (o.max_batch < 1 || o.queue_size < 0 || o.max_prompt_tokens < 1 || o.max_new_tokens < 1) {
      throw std::invalid_argument("--max-batch, --max-prompt-tokens and --max-new-tokens must be >= 1, "
                                  "--queue-size >= 0");
    }
    if (o.tenant_adapter_bytes < 1 || o.tenant_adapters < 1 || o.adapter_versions < 1) {
      throw std::invalid_argument("--tenant-adapter-bytes, --tenant-adapters and --adapter-versions must be >= 1");
    }
    if (o.max_uploads < 1 || o.max_uploads_per_tenant < 1 || o.upload_idle_timeout.count() <= 0 ||
        o.max_rpc_threads < 0) {
      throw std::invalid_argument("--max-concurrent-uploads, --max-concurrent-uploads-per-tenant and "
                                  "--upload-idle-seconds must be > 0, --max-rpc-threads >= 0");
    }
    at::set_num_threads(common::resolve_thread_count(flags.integer("threads")));
    // Which build of the CPU kernels runs (and a bad STATETUNE_CPU_LEVEL stops the start here).
    common::log_event(spdlog::level::info, "cpu.kernels",
                      {{"level", kernels::cpu::active_cpu_level().describe()}});

    // Signals go to the watcher thread only; block them before any other thread starts.
    common::block_termination_signals();
    common::ShutdownSignal shutdown(/*watch_signals=*/true);
    serving::ServingServer server(o);
    server.start();
    // Load in the background so a SIGTERM during a long load still ends the process promptly.
    std::exception_ptr load_error;
    std::thread loader([&] {
      try {
        server.load();
      } catch (...) {
        load_error = std::current_exception();
        shutdown.request("load failed");
      }
    });
    const std::string reason = shutdown.wait();
    loader.join();
    if (load_error) std::rethrow_exception(load_error);
    common::log_event(spdlog::level::info, "server.draining", {{"reason", reason}});
    server.drain();
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "statetune-serve: %s\n", e.what());
    return 1;
  }
}
